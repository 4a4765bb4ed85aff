"""Labels for ``optax.partition`` and Muon's dimension numbers for ``optax.contrib.muon``, from
the model's own structure: the roles (``roles``), measured scale-invariance, and the output
layer read from the jaxpr of a forward pass."""

from typing import Any, Callable, Dict, Optional, Set, Tuple

import jax

from .. import _core
from ._roles import _native_rank, _path, _roles_by_path, by_path, measure_invariance, owners
from ._structure import is_literal, trace

Path = Tuple[str, ...]

#: Primitives an output passes through unchanged in kind on its way back to the layer that
#: produced it (a residual sum, a reshape, a cast, a scaling).
_THROUGH = {"add", "sub", "reshape", "transpose", "convert_element_type", "broadcast_in_dim", "squeeze", "expand_dims", "copy", "copy_p", "mul", "div", "neg", "reduce_precision"}
#: The contractions a layer's kernel enters.
_CONTRACTIONS = {"dot_general", "conv_general_dilated"}


def output_layers(model: Any, example_inputs: Any, apply_fn: Any = None) -> Set[str]:
    """The kernels of the layers that produce the model's outputs (the head), read from the jaxpr
    of a forward pass on ``example_inputs``: each output followed back through sums, reshapes,
    casts and scalings to the contraction (``dot_general``, a convolution) that made it, and
    that contraction's parameter operand. A head tied to the embedding is found as the embedding.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> net = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 2, rngs=nnx.Rngs(0)))
        >>> output_layers(net, jnp.ones((3, 4)))
        {'layers/2/kernel'}
    """
    jaxpr, keyed, _, _ = trace(model, example_inputs, apply_fn)
    param_of = {v: "/".join(_path(kp)) for v, (kp, _) in zip(jaxpr.invars[: len(keyed)], keyed)}
    producer = {o: e for e in jaxpr.eqns for o in e.outvars}
    found: Set[str] = set()
    seen: Set[Any] = set()

    def source(v: Any, depth: int = 0) -> Optional[str]:
        """The parameter a contraction's operand is (through casts, reshapes, transposes)."""
        if is_literal(v) or depth > 20:
            return None
        if v in param_of:
            return param_of[v]
        e = producer.get(v)
        if e is not None and e.primitive.name in ("convert_element_type", "reshape", "transpose", "copy", "copy_p") and e.invars:
            return source(e.invars[0], depth + 1)
        return None

    def back(v: Any) -> None:
        if is_literal(v) or v in seen or v in param_of:
            return
        seen.add(v)
        e = producer.get(v)
        if e is None:
            return
        name = e.primitive.name
        if name in _CONTRACTIONS:
            for operand in e.invars:
                p = source(operand)
                if p is not None:
                    found.add(p)
        elif name in _THROUGH:
            for operand in e.invars:
                back(operand)

    for v in jaxpr.outvars:
        back(v)
    return found


def muon_dimension_numbers(model: Any, example_inputs: Any = None, apply_fn: Any = None, conv: bool = False, output: Optional[Set[str]] = None) -> Callable[[Any], Any]:
    """What ``optax.contrib.muon(..., muon_weight_dimension_numbers=...)`` takes: for each hidden
    weight matrix Muon should train, ``MuonDimensionNumbers`` with its input axes as the
    reduction and its last axis as the output (a stacked layer axis left as a batch axis: each
    layer orthogonalized on its own); ``None`` for what AdamW should train (embeddings, the
    output layer, norm scales and shifts, biases, and conv kernels unless ``conv=True``: flattened
    over the kernel's window and inputs, Keller Jordan's practice). The decisions are the core's
    (``muon_takes``), as ``normwd.torch.muon_param_groups``'s. The output layer is read from the
    jaxpr on ``example_inputs`` (``output_layers``), or given as ``output`` (paths); without
    either it is refused (``ValueError``): a guess could hand the head to Muon.

    optax's own default (``ndim == 2`` goes to Muon) gives it the embeddings, the head and a
    stacked model's 2-D norm scales, and leaves its 3-D stacked kernels to AdamW.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> net = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 2, rngs=nnx.Rngs(0)))
        >>> dims = muon_dimension_numbers(net, jnp.ones((3, 4)))
        >>> sorted(k for k, v in flat(dims(nnx.state(net, nnx.Param))).items() if v is not None)
        ['layers/0/kernel']
        >>> tx = optax.contrib.muon(0.02, muon_weight_dimension_numbers=dims)
    """
    from optax.contrib import MuonDimensionNumbers

    roles = _roles_by_path(model)
    modules = owners(model)
    if output is None:
        if example_inputs is None:
            raise ValueError("example_inputs: the output layer, which Muon must leave to AdamW, is read from a forward pass on them (or name it: output={'head/kernel'})")
        output = output_layers(model, example_inputs, apply_fn)
    output = set(output)

    def dims(params: Any) -> Any:
        def one(keys: Tuple[Any, ...], leaf: Any) -> Any:
            path = _path(keys)
            role = roles.get(path)
            if role is None:
                raise ValueError(f"muon_dimension_numbers: the params hold {'/'.join(path)}, which the model it was made for does not")
            # One layer's array: a stacked layer axis in front is a batch axis.
            rank = _native_rank(modules.get(path[:-1]), leaf.ndim)
            if (rank > 2 and not conv) or not _core.muon_takes(role, rank, "/".join(path) in output):
                return None
            stack = leaf.ndim - rank
            return MuonDimensionNumbers(reduction_axis=tuple(range(stack, leaf.ndim - 1)), output_axis=leaf.ndim - 1)

        return jax.tree_util.tree_map_with_path(one, params)

    return dims


def param_labels(
    model: Any,
    policy: str = "exclude-norm-bias",
    example_inputs: Any = None,
    apply_fn: Any = None,
    scale_invariant: bool = False,
) -> Callable[[Any], Any]:
    """Labels for ``optax.partition`` (``multi_transform``): ``"decay"`` and ``"no_decay"`` by
    normwd's ``policy`` (the same decisions as ``decay_mask``), and with ``scale_invariant=True``
    a third label, ``"scale_invariant"``, for the kernels measured scale-invariant on
    ``example_inputs``: their own lr and decay set their effective lr (``2*lr*wd`` decides their
    equilibrium angle, not ``lr`` alone).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)), nnx.Linear(8, 2, rngs=nnx.Rngs(0)))
        >>> labels = param_labels(net, example_inputs=jnp.ones((5, 4)) + jnp.arange(4.0), scale_invariant=True)
        >>> sorted(flat(labels(nnx.state(net, nnx.Param))).items())
        [('layers/0/kernel', 'scale_invariant'), ('layers/1/bias', 'no_decay'), ('layers/1/scale', 'no_decay'), ('layers/2/bias', 'no_decay'), ('layers/2/kernel', 'decay')]
        >>> tx = optax.partition({"decay": optax.adamw(1e-3, weight_decay=0.1), "no_decay": optax.adam(1e-3),
        ...                       "scale_invariant": optax.adamw(1e-3, weight_decay=0.5)}, labels)
    """
    if policy not in _core.policies():
        raise ValueError(f"policy={policy!r}: expected one of {', '.join(_core.policies())}")
    invariant: Dict[str, str] = {}
    if scale_invariant or policy in ("scale-invariant-only", "none-on-scale-invariant"):
        if example_inputs is None:
            raise ValueError("example_inputs: scale-invariance is measured on a batch (param_labels(model, ..., example_inputs=x))")
        invariant = measure_invariance(model, example_inputs, apply_fn)
    roles = _roles_by_path(model)
    decided: Dict[Path, str] = {}
    for path, role in roles.items():
        si = "/".join(path) in invariant
        if scale_invariant and si:
            decided[path] = "scale_invariant"
        else:
            decided[path] = "decay" if _core.decide(role, si, policy)[0] else "no_decay"

    return by_path(decided, "param_labels")


def flat(tree: Any) -> Dict[str, Any]:
    """A tree's leaves by ``/``-joined path (``None`` leaves kept), for reading masks and labels.

    Example:
        >>> flat({"a": {"b": 1, "c": None}})
        {'a/b': 1, 'a/c': None}
    """
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: x is None or type(x).__name__ == "MuonDimensionNumbers")
    return {"/".join(_path(kp)): v for kp, v in leaves}
