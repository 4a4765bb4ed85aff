"""``param_groups``: optimizer groups under normwd's decay policies, decided by the core."""

import math
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from torch import nn

from .. import _core
from ._audit import audit
from ._roles import unwrap


def param_groups(
    model: nn.Module,
    weight_decay: float,
    policy: str = "exclude-norm-bias",
    *,
    example_inputs: Any = None,
    si_lr: Optional[float] = None,
    si_weight_decay: Optional[float] = None,
    no_weight_decay: Iterable[str] = (),
) -> List[Dict[str, Any]]:
    """Parameter groups for any ``torch.optim`` optimizer under one of normwd's decay policies:

    - ``exclude-norm-bias`` (default): decay conv/linear weights only, not norm scales and
      shifts, gains, biases, embeddings or position/class tokens;
    - ``all``: decay every parameter (what ``SGD(model.parameters(), weight_decay=...)`` does);
    - ``scale-invariant-only``: decay only the scale-invariant weights (decay as a control of
      their effective learning rate);
    - ``none-on-scale-invariant``: decay the weights that are not scale-invariant.

    Scale-invariant weights get groups of their own (``name`` starts with ``scale-invariant``),
    so ``si_lr`` and ``si_weight_decay`` can set them apart: at equilibrium only their product
    matters. A weight invariant only together with its bias (a layer whose bias the norm does not
    remove, through a ReLU) takes its bias into its group: decaying one alone would break it. Names in ``no_weight_decay``, in the model's own ``no_weight_decay()`` (timm's) and
    parameters marked ``_no_weight_decay`` (mamba_ssm's) are never decayed. Parameters that do
    not require grad are left out.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
        >>> groups = param_groups(net, weight_decay=5e-4)
        >>> [(g["name"], len(g["params"]), g["weight_decay"]) for g in groups]
        [('scale-invariant', 1, 0.0005), ('no-decay', 3, 0.0)]
        >>> opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    """
    model, skip = _checked(model, weight_decay, policy, si_lr, si_weight_decay, no_weight_decay)
    report = audit(model, example_inputs=example_inputs)
    _warn_without_invariance(report, policy, example_inputs)
    return _grouped(model, report, weight_decay, policy, skip, si_lr, si_weight_decay, lambda p: True)


def muon_param_groups(
    model: nn.Module,
    weight_decay: float,
    policy: str = "exclude-norm-bias",
    *,
    example_inputs: Any = None,
    conv: bool = False,
    no_weight_decay: Iterable[str] = (),
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Muon's groups and AdamW's, split by normwd's core from the model's structure: Muon takes
    the hidden weight matrices (with ``conv=True`` the conv kernels too, for a Muon that flattens
    them, as Keller Jordan's does; ``torch.optim.Muon`` takes 2-D tensors only); AdamW the
    embeddings and tokens, the output layer (the last layer the forward pass runs, found from
    the graph: traced, or recorded on ``example_inputs``; else the one the model declares,
    Hugging Face's ``get_output_embeddings()`` or timm's ``get_classifier()``), norm gains and
    shifts and biases.
    Both lists are ``param_groups`` under ``policy`` with ``weight_decay``; give AdamW's groups
    its own lr. The two lists hold every trainable parameter once.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16, bias=False), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
        >>> hidden, rest = muon_param_groups(net, weight_decay=0.1)
        >>> [len(g["params"]) for g in hidden], [len(g["params"]) for g in rest]
        ([1], [1, 3])
        >>> opts = [torch.optim.Muon(hidden, lr=0.02), torch.optim.AdamW(rest, lr=3e-4)]
    """
    if not isinstance(conv, bool):
        raise TypeError(f"conv={conv!r}: expected True or False")
    model, skip = _checked(model, weight_decay, policy, None, None, no_weight_decay)
    report = audit(model, example_inputs=example_inputs)
    _warn_without_invariance(report, policy, example_inputs)
    takes: Set[str] = {p.name for p in report.params if _core.muon_takes(p.role, len(p.shape), p.output) and (conv or len(p.shape) == 2)}
    muon = _grouped(model, report, weight_decay, policy, skip, None, None, lambda p: p.name in takes)
    rest = _grouped(model, report, weight_decay, policy, skip, None, None, lambda p: p.name not in takes)
    return muon, rest


def _checked(model: Any, weight_decay: Any, policy: Any, si_lr: Any, si_weight_decay: Any, no_weight_decay: Any) -> Tuple[nn.Module, Set[str]]:
    """The arguments checked (ValueError / TypeError naming the argument), the model unwrapped,
    and the names never decayed."""
    if not isinstance(weight_decay, (int, float)) or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r}: expected a finite number >= 0")
    for arg, v in (("si_lr", si_lr), ("si_weight_decay", si_weight_decay)):
        if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (arg == "si_lr" and v == 0)):
            raise ValueError(f"{arg}={v!r}: expected a finite number {'> 0' if arg == 'si_lr' else '>= 0'}")
    if policy not in _core.policies():
        raise ValueError(f"policy={policy!r}: expected one of {', '.join(_core.policies())}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    # A bare string would be taken character by character.
    if isinstance(no_weight_decay, str) or not all(isinstance(n, str) for n in no_weight_decay):
        raise TypeError(f"no_weight_decay={no_weight_decay!r}: expected a list of parameter names, e.g. [{no_weight_decay!r}]")
    model = unwrap(model)
    tensors = dict(model.named_parameters())
    unknown = [n for n in no_weight_decay if n not in tensors]
    if unknown:
        near = ", ".join(list(tensors)[:3])
        raise ValueError(f"no_weight_decay: {', '.join(map(repr, unknown))} is not a parameter of the model (its names run {near}, ...)")
    skip = set(no_weight_decay)
    own = getattr(model, "no_weight_decay", None)
    if callable(own):
        skip |= set(own())
    return model, skip


def _warn_without_invariance(report: Any, policy: str, example_inputs: Any) -> None:
    if policy in ("scale-invariant-only", "none-on-scale-invariant") and not any(p.scale_invariant for p in report.params):
        # Silently decaying nothing (or everything) would look like the policy at work.
        why = report.notes[0] if report.notes else "no weight was found feeding a normalization layer"
        hint = "" if example_inputs is not None else "; pass example_inputs to measure it"
        warnings.warn(f"param_groups: policy={policy!r} depends on scale-invariance and found none ({why}){hint}", UserWarning, stacklevel=3)


def _grouped(
    model: nn.Module,
    report: Any,
    weight_decay: float,
    policy: str,
    skip: Set[str],
    si_lr: Optional[float],
    si_weight_decay: Optional[float],
    keep: Callable[[Any], bool],
) -> List[Dict[str, Any]]:
    """The groups of the parameters ``keep`` takes, under ``policy``."""
    tensors = dict(model.named_parameters())
    # A weight invariant only together with its bias: the bias is decided as the weight is (both
    # decayed or neither, in the same group), or decay on one alone would break the invariance.
    joint = {p.name[: -len(".weight")] + ".bias" for p in report.params if p.with_bias and p.name.endswith(".weight")}
    groups: Dict[str, Dict[str, Any]] = {}
    for p in report.params:
        t = tensors.get(p.name)
        if p.role == "buffer" or t is None or not t.requires_grad or not keep(p):
            continue
        if p.name in joint:
            decayed, group = _core.decide("weight", True, policy)
        else:
            decayed, group = _core.decide(p.role, p.scale_invariant, policy)
        # mamba_ssm marks the parameters it keeps out of decay with `_no_weight_decay`.
        decayed = decayed and p.name not in skip and not getattr(t, "_no_weight_decay", False)
        si = group == "scale-invariant"
        key = ("scale-invariant" if si else "default") + ("" if decayed else "-no-decay")
        if key not in groups:
            wd = (si_weight_decay if si and si_weight_decay is not None else weight_decay) if decayed else 0.0
            g: Dict[str, Any] = {"name": {"default": "decay", "default-no-decay": "no-decay"}.get(key, key), "params": [], "weight_decay": wd}
            if si and si_lr is not None:
                g["lr"] = si_lr
            groups[key] = g
        groups[key]["params"].append(t)
    order = ["scale-invariant", "scale-invariant-no-decay", "default", "default-no-decay"]
    return [groups[k] for k in order if k in groups]
