"""Roles of a Flax model's parameters and optax decay masks from them."""

from typing import Any, Callable, Dict, Tuple

import jax

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


def decay_mask(model: Any, policy: str = "exclude-norm-bias") -> Callable[[Any], Any]:
    """The decay mask optax takes (``optax.adamw(..., mask=decay_mask(model))``,
    ``optax.add_decayed_weights(wd, mask=...)``), under normwd's policy: ``exclude-norm-bias``
    (the default: decay the layers' kernels, not norm scales and shifts, gains, biases or
    embeddings) or ``all``. The roles are decided here once (``roles``); the mask is a function
    of the params optax passes (an ``nnx.Optimizer``'s state or a Linen params tree), so its tree
    always matches theirs.

    The policies that depend on scale-invariance (``scale-invariant-only``,
    ``none-on-scale-invariant``) need its measurement, not built for JAX yet: refused with
    ``ValueError``.

    Example:
        >>> import jax.numpy as jnp
        >>> params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "LayerNorm_0": {"scale": jnp.ones((4, 3))}}
        >>> decay_mask(params)(params)
        {'Dense_0': {'bias': False, 'kernel': True}, 'LayerNorm_0': {'scale': False}}
    """
    if policy not in _core.policies():
        raise ValueError(f"policy={policy!r}: expected one of {', '.join(_core.policies())}")
    if policy in ("scale-invariant-only", "none-on-scale-invariant"):
        raise ValueError(f"policy={policy!r}: depends on scale-invariance, which normwd.jax does not measure yet; use 'exclude-norm-bias' or 'all'")
    decided = {p: _core.decide(r, False, policy)[0] for p, r in _roles_by_path(model).items()}

    def mask(params: Any) -> Any:
        def one(keys: Tuple[Any, ...], _: Any) -> bool:
            path = _path(keys)
            if path not in decided:
                raise ValueError(f"decay_mask: the params hold {'/'.join(path)}, which the model it was made for does not")
            return decided[path]

        return jax.tree_util.tree_map_with_path(one, params)

    return mask
