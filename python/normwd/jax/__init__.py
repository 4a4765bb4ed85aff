"""normwd for JAX (Flax NNX and Linen, optax): each parameter's role from the model's own
modules, and the decay masks optax takes, decided by normwd's core as for PyTorch.

A Flax norm layer's scale is a norm scale whatever its shape: in a scanned or ``nnx.vmap``-ed
stack of layers it is 2-D, and the usual ``ndim > 1`` mask decays it (optax issue #25,
levanter PR #405). Roles come from the module that owns each parameter (an NNX model) or from
Flax's own parameter names (a Linen ``params`` tree), never from the number of dimensions.

Example:
    >>> import jax, optax
    >>> from flax import nnx
    >>> import normwd.jax as nwj
    >>> net = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)))
    >>> sorted(nwj.roles(net).items())
    [('layers/0/bias', 'bias'), ('layers/0/kernel', 'weight'), ('layers/1/bias', 'norm-shift'), ('layers/1/scale', 'norm-scale')]
    >>> opt = nnx.Optimizer(net, optax.adamw(1e-3, weight_decay=0.1, mask=nwj.decay_mask(net)), wrt=nnx.Param)

``measure_invariance`` measures which kernels the loss is invariant to the scale of (F1a, one
``jax.grad`` per random projection), which the policies ``scale-invariant-only`` and
``none-on-scale-invariant`` need. ``monitor`` wraps an optax transformation and measures each
kernel's and norm scale's angle, norm and effective lr inside ``jit``, beside the equilibrium the
settings read from the transformation predict, in normwd's run format (``normwd report``).
``structural_invariance`` reads the same verdicts from the jaxpr of a forward pass; ``audit``
puts both beside the optax setup's decay and its mistakes; ``param_labels`` and
``muon_dimension_numbers`` split a model for ``optax.partition`` and ``optax.contrib.muon``.
"""

from .._audit import Audit, Mistake, ParamAudit
from ._audit import audit
from ._labels import flat, muon_dimension_numbers, output_layers, param_labels
from ._monitor import Monitor, MonitorState, monitor
from ._roles import decay_mask, measure_invariance, roles
from ._structure import structural_invariance

__all__ = [
    "Audit",
    "Mistake",
    "Monitor",
    "MonitorState",
    "ParamAudit",
    "audit",
    "decay_mask",
    "flat",
    "measure_invariance",
    "monitor",
    "muon_dimension_numbers",
    "output_layers",
    "param_labels",
    "roles",
    "structural_invariance",
]
