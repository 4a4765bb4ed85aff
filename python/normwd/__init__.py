"""normwd: weight decay on normalized networks, measured and predicted.

The decisions (which tensors are decayed, which setups are mistakes) and the theory's closed
forms come from normwd's Rust core (``normwd._core``); ``normwd.torch`` applies them to a live
PyTorch model and optimizer.

Example:
    >>> import normwd
    >>> angle, steps = normwd.theory.equilibrium("sgd", lr=0.1, weight_decay=5e-4, momentum=0.9)
    >>> round(steps)
    2000
"""

import os
from typing import Optional, Union

from . import theory
from ._core import __version__, policies, roles

__all__ = ["__version__", "policies", "report", "roles", "theory"]


def report(*run_dirs: Union[str, "os.PathLike[str]"], out: Optional[Union[str, "os.PathLike[str]"]] = None) -> str:
    """Writes the report of normwd runs or ``normwd.torch.Monitor`` runs (the same as
    ``normwd report RUN_DIR ...``) into ``out`` (default: the first run's folder); returns the
    path of ``report.html``.

    Example:
        >>> import tempfile, torch, normwd.torch as nwd
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8, bias=False), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        >>> run = tempfile.mkdtemp()
        >>> with nwd.Monitor(net, opt, out=run, every=1):
        ...     for _ in range(3):
        ...         opt.zero_grad(); net(torch.randn(16, 4)).square().mean().backward(); opt.step()
        >>> report(run).endswith("report.html")
        True
    """
    if not run_dirs:
        raise ValueError("run_dirs: expected at least one run folder")
    dirs = [os.fspath(d) for d in run_dirs]
    return _core.report(dirs, os.fspath(out) if out is not None else dirs[0])


from . import _core  # noqa: E402  (after report, which names it)
