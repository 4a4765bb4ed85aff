"""``decay_control``: decoupled weight decay that follows the lr schedule (AdamC / SGDC) or
decays only where the update and the weight agree in sign (cautious decay), for any
``torch.optim`` optimizer."""

import math
import warnings
from typing import Any, Dict, List, Optional

import torch

from .. import _core
from . import _optimizer

#: The group key holding the decay coefficient the control applies (the group's own
#: ``weight_decay`` is set to 0, so the optimizer does not decay as well).
WEIGHT_DECAY = "normwd_weight_decay"
#: timm's key for corrected decay (its AdamW reads it too).
CORRECTED = "corrected_weight_decay"
#: The group key for cautious decay.
CAUTIOUS = "cautious_weight_decay"


def scale_invariant_group(group: Dict[str, Any]) -> bool:
    """Whether a group holds scale-invariant weights: the groups of
    :func:`normwd.torch.param_groups` are named ``scale-invariant...``, or a group may say so
    with ``scale_invariant=True``.

    Example:
        >>> scale_invariant_group({"name": "scale-invariant", "params": []})
        True
    """
    return bool(group.get("scale_invariant")) or str(group.get("name", "")).startswith("scale-invariant")


def lr_max(group: Dict[str, Any]) -> float:
    """The peak lr the corrected decay divides by: the group's ``max_lr`` or ``initial_lr``
    (PyTorch's schedulers set it), else the largest lr seen so far.

    Example:
        >>> lr_max({"lr": 0.05, "initial_lr": 0.1})
        0.1
    """
    for key in ("max_lr", "initial_lr"):
        v = group.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
            return float(v)
    seen = max(float(group.get("normwd_lr_seen", 0.0)), float(group["lr"]))
    group["normwd_lr_seen"] = seen
    return seen


class DecayControl:
    """Takes over each group's weight decay: the optimizer steps with ``weight_decay=0`` and the
    decay is applied after it, decoupled (``w -= lr * wd * w``, AdamW's and SGDW's rule, with
    the weights from before the step):

    - ``corrected=True`` (AdamC / SGDC, Defazio et al. 2025; F14): on scale-invariant groups
      the coefficient is ``wd * lr / lr_max``, so ``||g||/||w||`` stays flat as the schedule
      lowers the lr (other groups keep ``wd``);
    - ``cautious=True`` (arXiv 2510.12402; F16): only the coordinates where the step's
      direction and the weight agree in sign are decayed (this keeps a copy of the weights
      for the step).

    The groups record what applies (``normwd_weight_decay``, ``corrected_weight_decay``,
    ``cautious_weight_decay``), which :class:`normwd.torch.Monitor` reads for its predictions.
    ``remove()`` gives the optimizer its decay back.

    Example:
        >>> import torch, normwd.torch as nwd
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.BatchNorm1d(4))
        >>> opt = torch.optim.AdamW(nwd.param_groups(net, weight_decay=0.1), lr=1e-3)
        >>> ctl = nwd.decay_control(opt, corrected=True)
        >>> [g["weight_decay"] for g in opt.param_groups], opt.param_groups[0]["normwd_weight_decay"]
        ([0.0, 0.0], 0.1)
        >>> ctl.remove()
    """

    def __init__(self, optimizer: torch.optim.Optimizer, corrected: bool = False, cautious: bool = False):
        self.optimizer = _optimizer.unwrap_optimizer(optimizer)
        groups = self.optimizer.param_groups
        if corrected and not any(_core.corrected_decay_applies(scale_invariant_group(g)) for g in groups):
            raise ValueError(
                "corrected=True: no group holds scale-invariant weights (build the groups with normwd.torch.param_groups, "
                "or mark a group scale_invariant=True): corrected decay applies to the normalized layers"
            )
        for i, g in enumerate(groups):
            if WEIGHT_DECAY in g:
                raise ValueError(f"optimizer.param_groups[{i}]: already under a decay_control (remove() it first)")
            wd = g.get("weight_decay", 0.0)
            if not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
                raise ValueError(f"optimizer.param_groups[{i}]['weight_decay']={wd!r}: expected a finite number >= 0")
        for gs in _optimizer.settings(self.optimizer):
            if gs.decoupled is False and gs.weight_decay > 0:
                _warn_coupled(gs)
        for g in groups:
            g[WEIGHT_DECAY] = float(g.get("weight_decay", 0.0))
            g["weight_decay"] = 0.0
            g[CORRECTED] = bool(corrected and _core.corrected_decay_applies(scale_invariant_group(g)))
            g[CAUTIOUS] = bool(cautious)
        self._before: Optional[List[List[torch.Tensor]]] = None
        self._hooks = [self.optimizer.register_step_pre_hook(self._pre), self.optimizer.register_step_post_hook(self._post)]

    def _coefficient(self, g: Dict[str, Any]) -> float:
        factor = g["lr"] / lr_max(g) if g[CORRECTED] else 1.0
        return float(g["lr"]) * g[WEIGHT_DECAY] * factor

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            if any(g[CAUTIOUS] for g in self.optimizer.param_groups):
                self._before = [[p.detach().clone() for p in g["params"]] for g in self.optimizer.param_groups]
            else:
                # Without the sign test the decay does not depend on the step: AdamW's order.
                for g in self.optimizer.param_groups:
                    c = self._coefficient(g)
                    if c > 0:
                        for p in g["params"]:
                            if p.grad is not None:
                                p.mul_(1.0 - c)

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._before is None:
            return
        with torch.no_grad():
            for g, before in zip(self.optimizer.param_groups, self._before):
                c = self._coefficient(g)
                if c == 0:
                    continue
                for p, w in zip(g["params"], before):
                    if p.grad is None:
                        continue
                    # The step is -lr * direction: direction and weight agree where step * w <= 0.
                    agree = ((p - w) * w <= 0).to(w.dtype)
                    p.sub_(w * agree, alpha=c)
        self._before = None

    def remove(self) -> None:
        """Removes the hooks and gives each group its ``weight_decay`` back."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for g in self.optimizer.param_groups:
            if WEIGHT_DECAY in g:
                g["weight_decay"] = g.pop(WEIGHT_DECAY)
                g.pop(CORRECTED, None)
                g.pop(CAUTIOUS, None)


def _warn_coupled(g: Any) -> None:
    """Says what taking over a group's L2 (decay in the gradient) as decoupled decay changes."""
    where = f"optimizer.param_groups[{g.index}]"
    if g.optimizer == "sgd" and g.momentum > 0:
        x = 1.0 / (1.0 - min(g.momentum, 0.999))
        what = (
            f"under momentum {g.momentum:g} L2 passes through the momentum buffer and acts {x:g}x stronger than the same "
            f"coefficient applied decoupled: to keep the decay's strength, set weight_decay={g.weight_decay * x:g} before decay_control"
        )
    elif g.optimizer in ("adam", "nadam"):
        what = f"L2 in {g.kind}'s gradient is rescaled per coordinate by its denominator; decoupled decay is AdamW's rule, a different one"
    else:
        return
    warnings.warn(f"decay_control: {where}'s weight_decay={g.weight_decay:g} was L2 in the gradient and is now applied decoupled; {what}", UserWarning, stacklevel=3)


def decay_control(optimizer: torch.optim.Optimizer, corrected: bool = False, cautious: bool = False) -> DecayControl:
    """Corrected (AdamC / SGDC) and cautious weight decay for any ``torch.optim`` optimizer;
    see :class:`DecayControl`.

    Example:
        >>> import torch, normwd.torch as nwd
        >>> net = torch.nn.Linear(2, 2)
        >>> ctl = nwd.decay_control(torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-4), cautious=True)
        >>> ctl.optimizer.param_groups[0]["cautious_weight_decay"]
        True
    """
    return DecayControl(optimizer, corrected=corrected, cautious=cautious)
