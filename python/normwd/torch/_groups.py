"""``param_groups``: optimizer groups under normwd's decay policies, decided by the core."""

import math
import warnings
from typing import Any, Dict, Iterable, List, Optional

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
    report = audit(model, example_inputs=example_inputs)
    if policy in ("scale-invariant-only", "none-on-scale-invariant") and not any(p.scale_invariant for p in report.params):
        # Silently decaying nothing (or everything) would look like the policy at work.
        why = report.notes[0] if report.notes else "no weight was found feeding a normalization layer"
        hint = "" if example_inputs is not None else "; pass example_inputs to measure it"
        warnings.warn(f"param_groups: policy={policy!r} depends on scale-invariance and found none ({why}){hint}", UserWarning, stacklevel=2)
    # A weight invariant only together with its bias: the bias is decided as the weight is (both
    # decayed or neither, in the same group), or decay on one alone would break the invariance.
    joint = {p.name[: -len(".weight")] + ".bias" for p in report.params if p.with_bias and p.name.endswith(".weight")}
    groups: Dict[str, Dict[str, Any]] = {}
    for p in report.params:
        t = tensors.get(p.name)
        if p.role == "buffer" or t is None or not t.requires_grad:
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
