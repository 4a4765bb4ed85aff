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

from . import theory
from ._core import __version__, policies, roles

__all__ = ["__version__", "policies", "roles", "theory"]
