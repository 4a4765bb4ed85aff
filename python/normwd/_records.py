"""What ``normwd.torch.Monitor`` and ``normwd.jax.monitor`` write alike: a probe record from the
sums taken around a step (the core builds it and decides the prediction), the decay policy a
setup follows, and ``monitor.json``."""

import json
import os
from typing import Any, Dict, Iterable, Sequence, Tuple

from . import _core


def probe_line(
    step: int,
    name: str,
    role: str,
    ndim: int,
    scale_invariant: bool,
    totals: Sequence[float],
    rows: Tuple[Sequence[float], Sequence[float], Sequence[float]],
    settings: Any,
    channels: str,
    shape: Tuple[int, int],
) -> str:
    """The JSON line of a probe record from ``totals = (<w,w>, <g,g>, <w,g>, <d,d>, <w,d>)`` around
    the update ``d = w' - w`` and, per output channel, ``rows = (<w_r,w_r>, <d_r,d_r>, <w_r,d_r>)``
    (empty lists where channels are not measured), under the core's ``settings`` at that step;
    ``shape`` is the tensor's ``(rows, cols)`` view (Muon's prediction needs it).

    Example:
        >>> line = probe_line(1, "w", "weight", 2, False, (4.0, 1.0, 0.0, 0.01, 0.0), ([], [], []), _core.StepSettings("sgd", 0.1, 0.0), "none", (2, 2))
        >>> '"norm":2.0' in line
        True
    """
    ww, gg, wg, dd, wd = totals
    rww, rdd, rwd = (list(r) for r in rows)
    # The core's layout: [||w||^2, ||g||^2, <w,g>, ||w'||^2, <w,w'>] and the rows' ||w_r||^2,
    # ||w'_r||^2, <w_r,w'_r>; the update's [||d||^2, <w,d>] and its rows', from which the angles
    # are taken (precise at any size).
    sums = [ww, gg, wg, ww + 2 * wd + dd, ww + wd] + rww + [a + 2 * c + b for a, b, c in zip(rww, rdd, rwd)] + [a + c for a, c in zip(rww, rwd)]
    return _core.probe_record(step, name, role, ndim, scale_invariant, sums, settings, [dd, wd] + rdd + rwd, channels, shape)


def decay_policy(tensors: Iterable[Tuple[str, bool, bool]]) -> str:
    """The decay policy a setup follows, from each tensor's ``(role, scale_invariant, decayed)``
    by the core's decision; a setup no policy describes is named by whether it decays the norm
    layers (``all``) or not.

    Example:
        >>> decay_policy([("weight", False, True), ("norm-scale", False, False)])
        'exclude-norm-bias'
    """
    tensors = list(tensors)
    for policy in _core.policies():
        if all(_core.decide(role, si, policy)[0] == decayed for role, si, decayed in tensors):
            return policy
    norms_decayed = any(role in ("norm-scale", "norm-shift") and decayed for role, _, decayed in tensors)
    return "all" if norms_decayed else "exclude-norm-bias"


def write_json(path: str, info: Dict[str, Any]) -> None:
    """Writes ``info`` as JSON to ``path`` through a temporary file renamed over it, so a reader
    never sees half of it."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, path)
