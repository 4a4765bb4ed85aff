"""A ``torch.optim`` optimizer's groups as the core's closed forms see them."""

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import _core
from . import _decay


@dataclass
class GroupSettings:
    """One parameter group's settings."""

    index: int
    #: ``sgd``, ``adam``, ``adamw``, ``lion``, or None for an optimizer without a closed form.
    optimizer: Optional[str]
    lr: float
    weight_decay: float
    momentum: float
    betas: Optional[Tuple[float, float]]
    decoupled: Optional[bool]
    #: The optimizer's class name (``SGD``, ``AdamW``, ``Adafactor``).
    kind: str
    #: Corrected decay (AdamC / SGDC: ``weight_decay * lr/lr_max``) applies to this group.
    corrected: bool = False
    #: Cautious decay applies to this group.
    cautious: bool = False
    #: ``lr / lr_max`` (the schedule's factor, for corrected decay).
    lr_factor: float = 1.0
    #: NAdam's momentum blend ``mu_t`` at the group's step (it creeps to beta1), else None.
    nadam_mu: Optional[float] = None
    #: Muon's Nesterov blend (PyTorch's default True); None for other optimizers.
    nesterov: Optional[bool] = None

    @property
    def acting_weight_decay(self) -> float:
        """The decay the closed forms take at this step: corrected and cautious decay
        accounted for by the core (``_core.decay_acting``)."""
        return _core.decay_acting(self.weight_decay, self.lr_factor, self.corrected, self.cautious)

    @property
    def theory_betas(self) -> Optional[Tuple[float, float]]:
        """The betas the closed forms take: Adam's and Lion's (SGD's group has none)."""
        return self.betas if self.optimizer in ("adam", "adamw", "lion", "nadam") else None

    @property
    def theory_momentum(self) -> float:
        """The momentum the closed forms take, below 1 (where they have none); NAdam's blend
        ``mu_t``."""
        if self.nadam_mu is not None:
            return self.nadam_mu
        return min(self.momentum, 0.999)

    def no_prediction(self) -> Optional[str]:
        """Why this group gets no predicted equilibrium, in a sentence; None where it gets one.

        Example:
            >>> net = torch.nn.Linear(2, 2)
            >>> settings(torch.optim.Adafactor(net.parameters(), lr=0.01))[0].no_prediction()
            'no prediction for Adafactor: normwd has no closed-form equilibrium for it (it has one for SGD, AdamW, Lion, Muon, and Adam, NAdam, RAdam, Adamax, RMSprop with decoupled decay)'
        """
        if self.optimizer is None:
            return f"no prediction for {self.kind}: normwd has no closed-form equilibrium for it (it has one for {PREDICTED})"
        if self.lr <= 0:
            return f"no prediction for this group: its lr is {self.lr:g}"
        if self.acting_weight_decay <= 0:
            return "no prediction for this group: without weight decay there is no equilibrium (the norms only grow, F4)"
        if self.optimizer in ("adam", "nadam") and not self.decoupled:
            if self.kind in {c.__name__ for c in _L2_ONLY}:
                fix = ""
            elif self.kind in ("NAdam", "RAdam"):
                fix = "decoupled_weight_decay=True has one"
            else:
                fix = "decoupled decay (AdamW, or normwd.torch.decay_control) has one"
            return f"no prediction for this group: L2 in {self.kind}'s gradient has no fixed rotational rate (it depends on the gradient)" + (f"; {fix}" if fix else "")
        return None

    def hyper(self) -> "Optional[_core.Hyper]":
        """The group's settings at this step as the closed forms take them (the decay acting
        now), or None where they have none (an optimizer without a closed form, lr 0)."""
        if self.optimizer is None or self.lr <= 0:
            return None
        return _core.Hyper(self.optimizer, self.lr, self.acting_weight_decay, self.theory_momentum, self.theory_betas, self.decoupled, self.nesterov)

    def step_settings(self) -> "_core.StepSettings":
        """The group's settings at this step for the core's probe-record builder."""
        return _core.StepSettings(self.optimizer, self.lr, self.acting_weight_decay, self.theory_momentum, self.theory_betas, self.decoupled, self.nesterov)

    def equilibrium(self, shape: Optional[Tuple[int, int]] = None) -> Optional[Tuple[Optional[float], float]]:
        """The core's equilibrium angle per step and relaxation time in steps for this group's
        settings, or None where there is nothing to predict (an optimizer without a closed
        form, lr 0, no decay). Muon's angle depends on the matrix: ``shape`` is its
        ``(rows, cols)`` (without it, Muon's angle is None)."""
        h = self.hyper()
        if h is None or h.weight_decay <= 0:
            return None
        return h.equilibrium(shape)


#: The torch.optim classes ``_rule`` gives a closed form, for messages.
PREDICTED = "SGD, AdamW, Lion, Muon, and Adam, NAdam, RAdam, Adamax, RMSprop with decoupled decay"

#: ``torch.optim.Muon`` where this PyTorch has it (2.9 and later).
_MUON = getattr(torch.optim, "Muon", None)


class Optimizers:
    """Several optimizers that train one model together (``torch.optim.Muon`` on the hidden
    matrices beside ``AdamW`` on the rest), seen as one: their groups in order, each read with
    its own optimizer's rule. ``Monitor`` and ``audit`` take a list of optimizers and make
    this.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.LayerNorm(4))
        >>> both = Optimizers([torch.optim.SGD([net[0].weight], lr=0.1), torch.optim.AdamW(net[1].parameters())])
        >>> [g.kind for g in settings(both)]
        ['SGD', 'AdamW']
    """

    def __init__(self, optimizers: Sequence[Any]):
        if len(optimizers) == 0:
            raise ValueError("optimizer: an empty list (expected one optimizer or several)")
        self.optimizers: List[torch.optim.Optimizer] = []
        for i, o in enumerate(optimizers):
            try:
                self.optimizers.append(unwrap_optimizer(o))
            except ValueError as e:
                raise ValueError(f"optimizer[{i}]: {e}") from e

    @property
    def param_groups(self) -> List[dict]:
        """Every optimizer's groups, in the order the optimizers were given."""
        return [g for o in self.optimizers for g in o.param_groups]

    def owner(self, index: int) -> torch.optim.Optimizer:
        """The optimizer holding the group at ``index`` of :attr:`param_groups`."""
        for o in self.optimizers:
            if index < len(o.param_groups):
                return o
            index -= len(o.param_groups)
        raise IndexError(index)


#: Adaptive optimizers whose decay PyTorch applies as L2 only and that follow no closed form with
#: decoupled decay either (their denominator grows without bound): L2 there is flagged as in
#: Adam, and decoupled decay gets no prediction.
_L2_ONLY = (torch.optim.Adagrad, torch.optim.Adadelta)


def _rule(opt: torch.optim.Optimizer, group: dict) -> Tuple[Optional[str], Optional[bool]]:
    """The core's closed form for an optimizer's group, and whether its decay is decoupled.
    RAdam's rectification only scales the step (the angle does not depend on the step's
    size, F8's argument), and Adamax's infinity-norm denominator only changes the per-element
    scale: both follow F8 with decoupled decay, and Adam's L2 case without
    (python/tests/test_optimizers.py simulates each)."""
    name = type(opt).__name__
    if (_MUON is not None and isinstance(opt, _MUON)) or (name == "Muon" and "ns_steps" in group):
        # timm's Muon: AdaMuon has no closed form, and a group marked for the AdamW fallback is AdamW's.
        if group.get("algo", "muon") != "muon":
            return None, None
        if group.get("use_fallback") or group.get("use_muon") is False:
            return "adamw", True
        # Decoupled decay at the base lr; the step's shape adjustment moves the norm, not the angle (F18).
        return "muon", True
    if isinstance(opt, torch.optim.AdamW):
        return "adamw", True
    if isinstance(opt, (torch.optim.Adam, torch.optim.RAdam)):
        return ("adamw", True) if group.get("decoupled_weight_decay") else ("adam", False)
    if isinstance(opt, torch.optim.NAdam):
        return "nadam", bool(group.get("decoupled_weight_decay"))
    if isinstance(opt, (torch.optim.Adamax, torch.optim.RMSprop) + _L2_ONLY):
        # L2 only in PyTorch; decoupled (decay_control), RMSprop's heavy-ball momentum on the
        # normalized step gives F8 with b1 = momentum (the L2-only ones: see `settings`).
        return "adam", False
    if isinstance(opt, torch.optim.SGD):
        return "sgd", False
    if name.lower() == "lion":
        return "lion", True
    return None, None


def _number(where: str, group: dict, key: str, default: float = 0.0) -> float:
    v = group.get(key, default)
    if isinstance(v, torch.Tensor):
        v = v.item()
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where}[{key!r}]={v!r}: expected a finite number")
    return float(v)


def settings(opt: torch.optim.Optimizer) -> List[GroupSettings]:
    """Each group's settings, checked: a value that is not a finite number raises ValueError
    naming the group and key.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> settings(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9))[0].optimizer
        'sgd'
    """
    if isinstance(opt, Optimizers):
        out: List[GroupSettings] = []
        for o in opt.optimizers:
            for s in settings(o):
                s.index = len(out)
                out.append(s)
        return out
    out = []
    for i, g in enumerate(opt.param_groups):
        where = f"optimizer.param_groups[{i}]"
        rule, decoupled = _rule(opt, g)
        # Under a decay_control the decay is decoupled and held outside the group's own key.
        controlled = _decay.WEIGHT_DECAY in g
        if controlled and isinstance(opt, _L2_ONLY):
            rule, decoupled = None, None
        if controlled and rule is not None:
            decoupled = True
        corrected = bool(g.get(_decay.CORRECTED))
        lr = _number(where, g, "lr")
        betas = g.get("betas")
        if betas is not None:
            betas = (_number(where, {"b": betas[0]}, "b"), _number(where, {"b": betas[1]}, "b"))
        nadam_mu = _nadam_mu(opt, g, betas) if rule == "nadam" else None
        if rule == "adamw" and "ns_steps" in g:
            # timm's Muon steps its AdamW fallback at lr * fallback_lr_scale.
            lr *= _number(where, g, "fallback_lr_scale", 1.0)
        if isinstance(opt, torch.optim.RMSprop):
            # F8's b1 is the momentum; alpha plays beta2's part.
            betas = (_number(where, g, "momentum"), _number(where, g, "alpha", 0.99))
        out.append(
            GroupSettings(
                index=i,
                optimizer=rule,
                lr=lr,
                weight_decay=_number(where, g, _decay.WEIGHT_DECAY if controlled else "weight_decay"),
                momentum=_number(where, g, "momentum"),
                betas=betas,
                decoupled=decoupled,
                kind=type(opt).__name__,
                corrected=corrected,
                cautious=bool(g.get(_decay.CAUTIOUS)),
                lr_factor=lr / _decay.lr_max(g) if corrected and lr > 0 else 1.0,
                nadam_mu=nadam_mu,
                nesterov=bool(g.get("nesterov", True)) if rule == "muon" else None,
            )
        )
    return out


def _nadam_mu(opt: torch.optim.Optimizer, group: dict, betas: Optional[Tuple[float, float]]) -> float:
    """PyTorch NAdam's momentum blend at the group's step ``t``: ``b1*(1 - 0.5*0.96^(t*psi))``
    (``psi`` the group's ``momentum_decay``)."""
    b1 = betas[0] if betas else 0.9
    state = next((opt.state[p] for p in group["params"] if p in opt.state and "step" in opt.state[p]), None)
    t = float(state["step"]) if state is not None else 0.0
    return b1 * (1.0 - 0.5 * 0.96 ** (t * float(group.get("momentum_decay", 4e-3))))


def membership(model: nn.Module, opt: torch.optim.Optimizer) -> Dict[int, List[int]]:
    """The groups holding each of ``model``'s parameters, by ``id``; a tensor the optimizer
    holds that is not one of the model's raises ValueError naming its group and shape.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> sorted(membership(net, torch.optim.SGD(net.parameters(), lr=0.1)).values())
        [[0], [0]]
    """
    ours = {id(p) for p in model.parameters()}
    held: Dict[int, List[int]] = {}
    for i, g in enumerate(opt.param_groups):
        for j, p in enumerate(g["params"]):
            if id(p) not in ours:
                raise ValueError(
                    f"optimizer.param_groups[{i}]['params'][{j}] (shape {tuple(p.shape)}) is not a parameter of the model: "
                    "pass the model this optimizer trains (unwrapped of DDP / torch.compile is fine)"
                )
            held.setdefault(id(p), []).append(i)
    return held


def unwrap_optimizer(optimizer: Any) -> Any:
    """The ``torch.optim`` optimizer inside the wrappers trainers put around it (Accelerate's
    ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``), whose step hooks fire; a list
    or tuple of optimizers (Muon beside AdamW) becomes one :class:`Optimizers`.

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
        >>> unwrap_optimizer(opt) is opt
        True
    """
    if isinstance(optimizer, Optimizers):
        return optimizer
    if isinstance(optimizer, (list, tuple)):
        return Optimizers(optimizer) if len(optimizer) != 1 else unwrap_optimizer(optimizer[0])
    while True:
        inner = getattr(optimizer, "optimizer", None)
        if inner is None:
            inner = getattr(optimizer, "_optimizer", None)
        if isinstance(inner, torch.optim.Optimizer) and inner is not optimizer:
            optimizer = inner
        else:
            break
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer: expected a torch.optim.Optimizer or a list of them, got {type(optimizer).__name__}")
    return optimizer


def each(optimizer: Any) -> List[torch.optim.Optimizer]:
    """The optimizers ``optimizer`` (one, or :class:`Optimizers`) stands for."""
    return list(optimizer.optimizers) if isinstance(optimizer, Optimizers) else [optimizer]
