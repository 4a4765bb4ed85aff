"""Roles of a Flax model's parameters and optax decay masks from them."""

from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from .. import _core

#: Flax's normalization modules (NNX and Linen share the names); their ``scale`` and ``bias``
#: are a norm layer's scale and shift.
_NORMS = ("BatchNorm", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm", "WeightNorm", "SpectralNorm")
#: Flax's layers whose ``kernel`` multiplies the input.
_LAYERS = ("Linear", "LinearGeneral", "Einsum", "Conv", "ConvTranspose", "Dense", "DenseGeneral", "ConvLocal")


def _name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path(keys: Tuple[Any, ...]) -> Tuple[str, ...]:
    """A leaf's path as names, without NNX's ``.value`` and Linen's ``params`` collection."""
    names = tuple(_name(k) for k in keys)
    if names and names[-1] == "value":
        names = names[:-1]
    if names and names[0] == "params":
        names = names[1:]
    return names


def _role(owner: str, leaf: str, where: str) -> str:
    """The core's role name of parameter ``leaf`` of a module of type (or Linen name) ``owner``."""
    is_norm = any(n in owner for n in _NORMS)
    if is_norm and leaf == "scale":
        return "norm-scale"
    if is_norm and leaf == "bias":
        return "norm-shift"
    if leaf == "embedding" or "Embed" in owner:
        return "embedding"
    if leaf == "kernel":
        return "weight"
    if leaf == "bias":
        return "bias"
    if leaf == "scale":
        # A scale outside a known norm: a gain (LayerScale-like), never decayed by default.
        return "gain"
    named = _core.role_from_name(leaf)
    if named is not None:
        return named
    raise ValueError(
        f"{where}: a parameter named {leaf!r} in a {owner or 'module'} has no role normwd knows "
        "(expected a layer's kernel or bias, a norm's scale or bias, an embedding); name it in no_weight_decay or ask for it to be supported"
    )


def _nnx_roles(model: Any) -> Dict[Tuple[str, ...], str]:
    from flax import nnx

    owners: Dict[Tuple[str, ...], str] = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            owners[tuple(str(p) for p in path)] = type(node).__name__
    out = {}
    for keys, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
        path = _path(keys)
        out[path] = _role(owners.get(path[:-1], ""), path[-1], "/".join(path))
    return out


def _tree_roles(params: Any) -> Dict[Tuple[str, ...], str]:
    out = {}
    for keys, leaf in jax.tree_util.tree_leaves_with_path(params):
        path = _path(keys)
        where = "/".join(path)
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(f"params: the leaf at {where} is a {type(leaf).__name__}, not an array")
        owner = path[-2] if len(path) >= 2 else ""
        out[path] = _role(owner, path[-1], where)
    return out


def _roles_by_path(model: Any) -> Dict[Tuple[str, ...], str]:
    try:
        from flax import nnx

        if isinstance(model, nnx.Module):
            return _nnx_roles(model)
    except ImportError:  # pragma: no cover - flax is optional
        pass
    if isinstance(model, (dict,)) or hasattr(model, "items"):
        return _tree_roles(model)
    raise TypeError(f"model: expected a Flax NNX module or a params pytree (Linen's variables['params']), got {type(model).__name__}")


def roles(model: Any) -> Dict[str, str]:
    """Each parameter's role (the core's names: ``weight``, ``bias``, ``norm-scale``,
    ``norm-shift``, ``gain``, ``embedding``, ``token``), by its ``/``-joined path: from the
    module that owns it in an NNX model, from Flax's names in a Linen ``params`` tree (a norm
    module's ``scale``/``bias``; ``kernel``, ``bias``, ``embedding``). A leaf of no known role
    raises ``ValueError`` naming it; a leaf that is not an array, ``TypeError``.

    Example:
        >>> import jax.numpy as jnp
        >>> roles({"params": {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "LayerNorm_0": {"scale": jnp.ones((4, 3))}}})
        {'Dense_0/bias': 'bias', 'Dense_0/kernel': 'weight', 'LayerNorm_0/scale': 'norm-scale'}
    """
    return {"/".join(p): r for p, r in _roles_by_path(model).items()}


def decay_mask(model: Any, policy: str = "exclude-norm-bias", example_inputs: Any = None, apply_fn: Any = None) -> Callable[[Any], Any]:
    """The decay mask optax takes (``optax.adamw(..., mask=decay_mask(model))``,
    ``optax.add_decayed_weights(wd, mask=...)``), under normwd's policy: ``exclude-norm-bias``
    (the default: decay the layers' kernels, not norm scales and shifts, gains, biases or
    embeddings) or ``all``. The roles are decided here once (``roles``); the mask is a function
    of the params optax passes (an ``nnx.Optimizer``'s state or a Linen params tree), so its tree
    always matches theirs.

    The policies that depend on scale-invariance (``scale-invariant-only``,
    ``none-on-scale-invariant``) measure it on ``example_inputs`` (``measure_invariance``;
    ``apply_fn`` for a params tree); without them they are refused with ``ValueError``.

    Example:
        >>> import jax.numpy as jnp
        >>> params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "LayerNorm_0": {"scale": jnp.ones((4, 3))}}
        >>> decay_mask(params)(params)
        {'Dense_0': {'bias': False, 'kernel': True}, 'LayerNorm_0': {'scale': False}}
    """
    if policy not in _core.policies():
        raise ValueError(f"policy={policy!r}: expected one of {', '.join(_core.policies())}")
    invariant: Dict[str, str] = {}
    if policy in ("scale-invariant-only", "none-on-scale-invariant"):
        if example_inputs is None:
            raise ValueError(f"policy={policy!r}: depends on scale-invariance, measured on example_inputs (give a batch: decay_mask(model, policy, example_inputs=x))")
        invariant = measure_invariance(model, example_inputs, apply_fn)
    decided = {p: _core.decide(r, "/".join(p) in invariant, policy)[0] for p, r in _roles_by_path(model).items()}

    return by_path(decided, "decay_mask")


def by_path(decided: Dict[Tuple[str, ...], Any], who: str) -> Callable[[Any], Any]:
    """A function of the params optax passes (an ``nnx.Optimizer``'s state or a Linen tree) that
    gives each leaf its value in ``decided``: its tree always matches theirs. Params the model did
    not hold, or a single value where params were expected, are refused naming ``who``."""

    def tree(params: Any) -> Any:
        leaves = jax.tree_util.tree_leaves_with_path(params)
        if not leaves or not leaves[0][0]:
            raise ValueError(f"{who}: called with a single value, not the params (optax.inject_hyperparams takes a callable for a schedule: give it static_args=('mask',))")

        def one(keys: Tuple[Any, ...], _: Any) -> Any:
            path = _path(keys)
            if path not in decided:
                raise ValueError(f"{who}: the params hold {'/'.join(path)}, which the model it was made for does not")
            return decided[path]

        return jax.tree_util.tree_map_with_path(one, params)

    return tree


#: The derivative along a weight slice over that along a random direction of its size, below
#: which the slice counts as scale-invariant (normwd.torch's tolerance).
TOLERANCE = 1e-2


def _native_rank(owner: Any, ndim: int) -> int:
    """The rank of one layer's array of an ``ndim``-D parameter of module ``owner`` (None: not
    known): 2 for a dense layer's kernel or an embedding, the kernel size's plus 2 for a
    convolution, 1 for a norm's scale and shift; more axes in front are a stack of layers
    (``nnx.vmap``, scanned layers)."""
    size = getattr(owner, "kernel_size", None)
    name = type(owner).__name__
    if size is not None:
        rank = len(size) + 2 if isinstance(size, (tuple, list)) else 3
    elif name in ("Linear", "Dense", "Embed"):
        rank = 2
    elif any(n in name for n in _NORMS):
        rank = 1
    else:
        rank = ndim
    return min(rank, ndim)


def forward(model: Any, apply_fn: Any = None) -> Tuple[Any, Callable[[Any, Any], Any], Dict[Tuple[str, ...], str], Dict[Tuple[str, ...], Any]]:
    """The model as a function of its parameters: ``(params, fn(params, x), roles by path,
    owning modules by path)``. An NNX module is split (batch norm uses the batch's statistics,
    as in training; its statistics are copied inside, never updated); a params tree needs its
    ``apply_fn(params, x)``."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is optional
        nnx = None
    if nnx is not None and isinstance(model, nnx.Module):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        _check_finite(params)

        def fn(p: Any, x: Any) -> Any:
            # Fresh copies of the other state (batch statistics) inside the trace: a norm layer in
            # training mode updates them, which NNX allows only for variables made in the trace.
            return nnx.merge(graphdef, p, jax.tree_util.tree_map(jnp.copy, rest))(x)

        return params, fn, _nnx_roles(model), owners(model)
    if not callable(apply_fn):
        raise TypeError("apply_fn: a params tree needs the function that applies it, apply_fn(params, example_inputs)")
    roles = _tree_roles(model)
    _check_finite(model)
    return model, apply_fn, roles, {}


def _check_finite(params: Any) -> None:
    """Refuses parameters holding NaN or inf, naming the first: every verdict read from them
    would be silently wrong."""
    for kp, leaf in jax.tree_util.tree_leaves_with_path(params):
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.isfinite(leaf).all()):
            raise ValueError(f"params: {'/'.join(_path(kp))} holds NaN or inf (a diverged training?); scale-invariance cannot be read from it")


def owners(model: Any) -> Dict[Tuple[str, ...], Any]:
    """The modules of an NNX model by path (empty for a params tree): a parameter's owner tells
    its role and the rank of one layer's array."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is optional
        return {}
    if not isinstance(model, nnx.Module):
        return {}
    return {tuple(str(p) for p in path): node for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)}


def measure_invariance(model: Any, example_inputs: Any, apply_fn: Any = None, seed: int = 0) -> Dict[str, str]:
    """Which kernels the loss is invariant to the scale of, measured (F1a): the derivative
    ``<grad, w>`` along each output channel (the kernel's last axis; per layer of a stack) and
    along each whole kernel, from ``jax.grad`` of three random projections of the outputs on
    ``example_inputs``, against the derivative along a random direction of the same norm. Returns
    ``channel`` or ``tensor`` (the finest slices that are invariant) for each invariant kernel,
    by path. ``model``: an NNX module (called on ``example_inputs``; batch norm uses the batch's
    statistics, as in training), or a params tree with ``apply_fn(params, example_inputs)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)), nnx.Linear(8, 2, rngs=nnx.Rngs(0)))
        >>> measure_invariance(net, jnp.ones((5, 4)) + jnp.arange(4.0))
        {'layers/0/kernel': 'tensor'}
    """
    params, fn, role_of, owners = forward(model, apply_fn)
    try:
        outputs = jax.tree_util.tree_leaves(fn(params, example_inputs))
    except Exception as e:
        raise ValueError(f"example_inputs: the model's forward pass on them raised {type(e).__name__}: {e}") from e
    grads = []
    for i in range(3):
        keys = jax.random.split(jax.random.key(seed * 3 + i), max(len(outputs), 1))
        directions = [jax.random.normal(k, o.shape, o.dtype) for k, o in zip(keys, outputs)]

        def loss(p: Any, directions: Any = directions) -> Any:
            return sum((d * o).sum() for d, o in zip(directions, jax.tree_util.tree_leaves(fn(p, example_inputs))))

        grads.append(dict((_path(kp), g) for kp, g in jax.tree_util.tree_leaves_with_path(jax.grad(loss)(params))))
    out: Dict[str, str] = {}
    for kp, w in jax.tree_util.tree_leaves_with_path(params):
        path = _path(kp)
        if role_of.get(path) != "weight" or w.ndim < 2:
            continue
        stack = w.ndim - _native_rank(owners.get(path[:-1]), w.ndim)
        verdict = None
        for name, axes in (("channel", tuple(range(stack, w.ndim - 1))), ("tensor", tuple(range(stack, w.ndim)))):
            n = 1
            for a in axes:
                n *= w.shape[a]
            ok = True
            for g in grads:
                gw = g[path]
                dot = (gw * w).sum(axes)
                control = jnp.sqrt((gw * gw).sum(axes) * (w * w).sum(axes) / n)
                ok = ok and bool((abs(dot) <= TOLERANCE * control).all())
            if ok:
                verdict = name
                break
        if verdict is not None:
            out["/".join(path)] = verdict
    return out
