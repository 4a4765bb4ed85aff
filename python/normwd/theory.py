"""The theory's closed forms (THEORY.md), computed by normwd's core.

Example:
    >>> from normwd import theory
    >>> angle, steps = theory.equilibrium("adamw", lr=1e-3, weight_decay=0.1)
    >>> round(angle, 5), round(steps)
    (0.00324, 10000)

``Hyper`` holds an optimizer's hyperparameters, checked once when made (a value out of its
domain raises ``ValueError`` naming the argument), with the closed forms as methods:
``equilibrium()``, ``gap_angle(k)``, ``grad_weight_ratio()`` (F13), ``effective_lr(norm)`` and
``mistakes(role, scale_invariant)``:

    >>> h = theory.Hyper("sgd", lr=0.1, weight_decay=5e-4, momentum=0.9)
    >>> round(h.equilibrium()[0], 5), h.decoupled, round(h.grad_weight_ratio(), 4)
    (0.00725, False, 0.0316)
    >>> theory.Hyper("sgd", lr=0.1, weight_decay=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: weight_decay=-1: expected a finite number >= 0
"""

from typing import Optional, Tuple

from . import _core

#: An optimizer's hyperparameters as the closed forms take them (the module's example).
Hyper = _core.Hyper


def equilibrium(
    optimizer: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.0,
    betas: Optional[Tuple[float, float]] = None,
    decoupled: Optional[bool] = None,
    shape: Optional[Tuple[int, int]] = None,
    nesterov: Optional[bool] = None,
) -> Tuple[Optional[float], float]:
    """The equilibrium angular update per step of a scale-invariant weight (F7 SGD(M), F8
    AdamW, F9 Lion, F18 Muon), or None without a closed form (L2 in Adam's gradient, no decay),
    and the relaxation time in steps, ``1/(lr*weight_decay)`` (SGD's L2: divided by
    ``1-momentum``).

    ``optimizer`` is one of ``sgd``, ``adam``, ``adamw``, ``lion``, ``nadam``, ``muon``;
    ``decoupled`` defaults to the optimizer's own (AdamW, Lion and Muon decoupled, SGD and Adam
    L2 in the gradient). Muon's angle depends on the matrix: ``shape`` is its ``(rows, cols)``
    (fan-out, fan-in), ``nesterov`` PyTorch's (default True), ``momentum`` its ``b``.

    Example:
        >>> angle, steps = equilibrium("sgd", 0.1, 5e-4, momentum=0.9)
        >>> round(angle, 5), round(steps)
        (0.00725, 2000)
        >>> angle, steps = equilibrium("muon", 0.02, 0.1, momentum=0.95, shape=(768, 3072))
        >>> round(angle / (2 * 0.02 * 0.1) ** 0.5, 2), round(steps)
        (0.18, 500)
    """
    return Hyper(optimizer, lr, weight_decay, momentum, betas, decoupled, nesterov).equilibrium(shape)


def gap_angle(
    optimizer: str,
    lr: float,
    weight_decay: float,
    k: int,
    momentum: float = 0.0,
    betas: Optional[Tuple[float, float]] = None,
    decoupled: Optional[bool] = None,
) -> Optional[float]:
    """The equilibrium angle between a scale-invariant weight and itself ``k`` steps later
    (F17), which is not ``k`` times the angle per step once ``k`` nears the relaxation time.

    Example:
        >>> round(gap_angle("sgd", 0.1, 5e-4, 1, momentum=0.9), 4) == round(equilibrium("sgd", 0.1, 5e-4, 0.9)[0], 4)
        True
    """
    return Hyper(optimizer, lr, weight_decay, momentum, betas, decoupled).gap_angle(k)


def effective_lr(optimizer: str, lr: float, norm: float) -> float:
    """The effective learning rate of a scale-invariant weight of norm ``norm``: ``lr/norm**2``
    for SGD, ``lr/norm`` for the sign-like updates of Adam and Lion.

    Example:
        >>> effective_lr("sgd", 0.1, 2.0)
        0.025
    """
    return _core.effective_lr(optimizer, lr, norm)
