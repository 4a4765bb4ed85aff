"""One probe record from the sums a monitor took around a step, for ``normwd.torch.Monitor`` and
``normwd.jax.monitor`` alike: the core builds the record and decides the prediction."""

from typing import Any, Sequence, Tuple

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
