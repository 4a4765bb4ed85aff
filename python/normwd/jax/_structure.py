"""Scale-invariance read from the jaxpr of a forward pass: each kernel's scale followed through
the computation it feeds, as ``normwd.torch`` follows a ``torch.fx`` graph.

Each value of the jaxpr gets one of three facts about a kernel scaled by ``a`` (per output
channel, or as a whole): it does not depend on ``a`` (``CONST``: an input, another parameter, or
anything a normalization has made free of ``a``), it is multiplied by ``a`` to a power ``deg``
that varies along some of its axes (``Scaled``), or neither (``BROKEN``: a bias added, a
nonlinearity of a scaled value, channels of different scales summed). A normalization is
recognized by what it does, not by its name: ``x * rsqrt(mean(x*x))`` has degree 0 when ``x``'s
scale is constant along the reduced axes, so batch norm (reducing over batch and space) keeps a
per-channel scale out and layer norm (over the features) a whole-tensor one. The kernel is
scale-invariant at a granularity when every output is ``CONST`` under it. Nested jaxprs
(``jit``, ``custom_jvp``, ``scan`` with its carry iterated to a fixed point) are followed.
"""

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import jax

from ._roles import _native_rank, _path, forward


@dataclass(frozen=True)
class Scaled:
    """A value multiplied by the kernel's scale to the power ``deg``, the scale varying along
    ``axes`` (empty: the same everywhere)."""

    axes: FrozenSet[int]
    deg: Fraction


CONST = "const"
BROKEN = "broken"
#: A constant no larger than a normalization's epsilon (or a zero mean): adding it leaves a scale.
SMALL = "small"


def is_literal(v: Any) -> bool:
    """Whether a jaxpr operand is a literal (a constant written into the equation), not a variable."""
    return hasattr(v, "val") and not hasattr(v, "count")


def _small(value: Any) -> bool:
    try:
        return abs(float(value)) <= 1e-2
    except (TypeError, ValueError):
        return False


#: Elementwise maps a positive scale passes through unchanged (``max`` and ``min`` with a
#: constant are taken with the sums below).
_HOMOGENEOUS = {"abs", "neg", "copy", "copy_p", "convert_element_type", "reduce_precision", "stop_gradient", "real", "optimization_barrier"}


def _join(values: Sequence[Any]) -> Any:
    """The fact about an elementwise sum or choice of ``values``."""
    scaled = [v for v in values if isinstance(v, Scaled)]
    if any(v == BROKEN for v in values):
        return BROKEN
    if not scaled:
        return CONST
    if len(scaled) != len(values) or len(set(scaled)) != 1:
        return BROKEN
    return scaled[0]


class _Reader:
    """Follows one set of facts (a kernel's scale) through a jaxpr."""

    def run(self, jaxpr: Any, inputs: List[Any]) -> List[Any]:
        env: Dict[Any, Any] = {}
        for v, fact in zip(jaxpr.invars, inputs):
            env[v] = fact
        for v in getattr(jaxpr, "constvars", []):
            env[v] = CONST

        def get(v: Any) -> Any:
            if is_literal(v):
                return SMALL if _small(v.val) else CONST
            return env.get(v, CONST)

        for e in jaxpr.eqns:
            ins = [get(v) for v in e.invars]
            outs = self.eqn(e, ins)
            for v, fact in zip(e.outvars, outs):
                env[v] = fact
        return [CONST if get(v) == SMALL else get(v) for v in jaxpr.outvars]

    def eqn(self, e: Any, ins: List[Any]) -> List[Any]:
        name = e.primitive.name
        n_out = len(e.outvars)
        if ins and all(f == SMALL for f in ins) and name in ("broadcast_in_dim", "convert_element_type", "reshape", "copy", "expand_dims", "squeeze"):
            # An epsilon or a zero, broadcast: still one.
            return [SMALL] * n_out
        facts = [CONST if f == SMALL else f for f in ins]
        if all(f == CONST for f in facts) and name not in ("scan", "while"):
            return [CONST] * n_out
        p = e.params
        sub = p.get("jaxpr") or p.get("call_jaxpr") or p.get("fun_jaxpr")
        if name in ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint", "custom_lin") and sub is not None:
            inner = getattr(sub, "jaxpr", sub)
            return self.run(inner, facts[-len(inner.invars) :] if len(facts) >= len(inner.invars) else facts)
        if name == "scan":
            return self.scan(e, facts)
        if name in ("add", "sub", "add_any", "select_n", "max", "min", "concatenate", "clamp"):
            data = facts[1:] if name == "select_n" else facts
            # A literal added (an epsilon under a square root) leaves the scale: literals are
            # not data that breaks it.
            data = [f for f, raw in zip(data, ins[1:] if name == "select_n" else ins) if raw != SMALL] or [CONST]
            if name == "select_n" and facts[0] not in (CONST,):
                return [BROKEN]
            if name == "concatenate":
                return [BROKEN] if any(isinstance(f, Scaled) for f in data) else [_join(data)]
            return [_join(data)] * n_out
        if name in _HOMOGENEOUS:
            return [facts[0]] * n_out
        if name == "mul":
            return [self._product(facts[0], facts[1], 1)]
        if name == "div":
            return [self._product(facts[0], facts[1], -1)]
        if name == "integer_pow":
            return [self._power(facts[0], Fraction(p["y"]))]
        if name == "square":
            return [self._power(facts[0], Fraction(2))]
        if name == "sqrt":
            return [self._power(facts[0], Fraction(1, 2))]
        if name == "rsqrt":
            return [self._power(facts[0], Fraction(-1, 2))]
        if name in ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin", "cumsum", "cumlogsumexp", "cummax"):
            f = facts[0]
            axes = set(p.get("axes", (p.get("axis"),)) or ())
            if not isinstance(f, Scaled):
                return [f] * n_out
            if f.axes & axes:
                return [BROKEN] * n_out
            if name in ("argmax", "argmin"):
                return [CONST] * n_out
            if name.startswith("cum"):
                return [f] * n_out
            return [Scaled(_drop(f.axes, axes), f.deg)] * n_out
        if name == "reshape":
            return [self._reshape(facts[0], e.invars[0].aval.shape, p["new_sizes"])]
        if name == "squeeze":
            f = facts[0]
            if not isinstance(f, Scaled):
                return [f]
            dims = set(p["dimensions"])
            return [Scaled(_drop(f.axes, dims), f.deg)]
        if name == "expand_dims":
            return [facts[0]]
        if name == "transpose":
            f = facts[0]
            if not isinstance(f, Scaled):
                return [f]
            perm = list(p["permutation"])
            return [Scaled(frozenset(perm.index(a) for a in f.axes), f.deg)]
        if name == "broadcast_in_dim":
            f = facts[0]
            if not isinstance(f, Scaled):
                return [f]
            dims, shape = p["broadcast_dimensions"], e.invars[0].aval.shape
            return [Scaled(frozenset(dims[a] for a in f.axes if shape[a] > 1), f.deg)]
        if name in ("slice", "dynamic_slice", "gather", "rev", "pad", "dynamic_update_slice"):
            f = facts[0]
            if not isinstance(f, Scaled):
                return [f] if name != "dynamic_update_slice" else [_join([facts[0], facts[1]])]
            if name in ("slice", "rev", "dynamic_slice"):
                return [f]
            return [BROKEN]
        if name in ("reduce_window_sum", "reduce_window_max", "reduce_window_min"):
            # Pooling: a scale passes when the window does not span an axis it varies along.
            f = facts[0]
            window = p["window_dimensions"]
            if isinstance(f, Scaled) and any(window[a] > 1 for a in f.axes):
                return [BROKEN]
            return [f]
        if name == "dot_general":
            return [self._dot(e, facts)]
        if name == "conv_general_dilated":
            return [self._conv(e, facts)]
        # Anything else (a nonlinearity, an unknown primitive): a scaled input makes the result
        # depend on the scale in no known way.
        return [BROKEN if any(f != CONST for f in facts) else CONST] * n_out

    def _product(self, a: Any, b: Any, sign: int) -> Any:
        if BROKEN in (a, b):
            return BROKEN
        if not isinstance(a, Scaled) and not isinstance(b, Scaled):
            return CONST
        axes = (a.axes if isinstance(a, Scaled) else frozenset()) | (b.axes if isinstance(b, Scaled) else frozenset())
        deg = (a.deg if isinstance(a, Scaled) else 0) + sign * (b.deg if isinstance(b, Scaled) else 0)
        if deg == 0 and _cancels(a, b):
            return CONST
        return Scaled(axes, Fraction(deg))

    def _power(self, f: Any, y: Fraction) -> Any:
        if not isinstance(f, Scaled):
            return f
        return CONST if f.deg * y == 0 else Scaled(f.axes, f.deg * y)

    def _reshape(self, f: Any, old: Tuple[int, ...], new: Tuple[int, ...]) -> Any:
        """A scale varying along axes of ``old`` followed into ``new`` (axes split or merged)."""
        if not isinstance(f, Scaled) or not f.axes:
            return f
        groups = _reshape_groups(tuple(old), tuple(new))
        if groups is None:
            return BROKEN
        axes: Set[int] = set()
        for olds, news in groups:
            if f.axes & set(olds):
                # A scale cannot vary along an axis of size 1.
                axes |= {k for k in news if new[k] > 1}
        return Scaled(frozenset(axes), f.deg)

    def _dot(self, e: Any, facts: List[Any]) -> Any:
        (lc, rc), (lb, rb) = e.params["dimension_numbers"]
        a, b = facts
        if BROKEN in (a, b):
            return BROKEN
        la, ra = e.invars[0].aval.ndim, e.invars[1].aval.ndim
        lfree = [i for i in range(la) if i not in lc and i not in lb]
        rfree = [i for i in range(ra) if i not in rc and i not in rb]
        # Output axes: batch, then lhs free, then rhs free.
        out_of_l = {d: i for i, d in enumerate(lb)} | {d: len(lb) + i for i, d in enumerate(lfree)}
        out_of_r = {d: i for i, d in enumerate(rb)} | {d: len(lb) + len(lfree) + i for i, d in enumerate(rfree)}
        axes: Set[int] = set()
        deg = Fraction(0)
        for f, contracted, where in ((a, lc, out_of_l), (b, rc, out_of_r)):
            if isinstance(f, Scaled):
                if f.axes & set(contracted):
                    return BROKEN
                axes |= {where[x] for x in f.axes}
                deg += f.deg
        return CONST if deg == 0 and not axes else Scaled(frozenset(axes), deg)

    def _conv(self, e: Any, facts: List[Any]) -> Any:
        lhs, rhs = facts[0], facts[1]
        if BROKEN in (lhs, rhs):
            return BROKEN
        dn = e.params["dimension_numbers"]
        lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
        axes: Set[int] = set()
        deg = Fraction(0)
        if isinstance(lhs, Scaled):
            # Only a scale along the batch axis passes a convolution (it sums over the rest).
            if lhs.axes - {lhs_spec[0]}:
                return BROKEN
            axes |= {out_spec[0]} if lhs.axes else set()
            deg += lhs.deg
        if isinstance(rhs, Scaled):
            # rhs_spec: (out features, in features, spatial...): only the output features pass.
            if rhs.axes - {rhs_spec[0]}:
                return BROKEN
            axes |= {out_spec[1]} if rhs.axes else set()
            deg += rhs.deg
        return Scaled(frozenset(axes), deg)

    def scan(self, e: Any, facts: List[Any]) -> List[Any]:
        p = e.params
        body = p["jaxpr"].jaxpr
        nc, ncarry = p["num_consts"], p["num_carry"]
        consts, carry, xs = facts[:nc], facts[nc : nc + ncarry], facts[nc + ncarry :]
        # The stacked axis (0) of xs is sliced off inside the body.
        xs_in = [Scaled(_drop(f.axes, {0}), f.deg) if isinstance(f, Scaled) else f for f in xs]
        for _ in range(4):
            outs = self.run(body, list(consts) + list(carry) + xs_in)
            new_carry = [_join([c, o]) if c != o else c for c, o in zip(carry, outs[:ncarry])]
            if new_carry == list(carry):
                break
            carry = new_carry
        else:
            carry = [BROKEN if c != CONST else c for c in carry]
        # Stacked back on axis 0, along which a per-layer scale varies.
        ys = [Scaled(frozenset({0} | {a + 1 for a in f.axes}), f.deg) if isinstance(f, Scaled) else f for f in outs[ncarry:]]
        return list(carry) + ys


def _cancels(a: Any, b: Any) -> bool:
    """Whether a product or quotient of degree 0 is free of the scale: the two vary along the
    same axes (a normalization's statistic broadcast back over what it reduced)."""
    sa = a.axes if isinstance(a, Scaled) else frozenset()
    sb = b.axes if isinstance(b, Scaled) else frozenset()
    return sa == sb


def _drop(axes: FrozenSet[int], removed: Set[int]) -> FrozenSet[int]:
    """Axis numbers after removing ``removed`` axes."""
    return frozenset(a - sum(1 for r in removed if r < a) for a in axes if a not in removed)


def _reshape_groups(old: Tuple[int, ...], new: Tuple[int, ...]) -> Optional[List[Tuple[Tuple[int, ...], Tuple[int, ...]]]]:
    """The runs of ``old`` axes that become runs of ``new`` axes with the same total size."""
    groups = []
    i = j = 0
    while i < len(old) or j < len(new):
        olds, news = [], []
        so = sn = 1
        if i < len(old):
            olds.append(i)
            so *= old[i]
            i += 1
        if j < len(new):
            news.append(j)
            sn *= new[j]
            j += 1
        while so != sn:
            if so < sn and i < len(old):
                olds.append(i)
                so *= old[i]
                i += 1
            elif sn < so and j < len(new):
                news.append(j)
                sn *= new[j]
                j += 1
            else:
                return None
        # Size-1 axes join the run they follow.
        while i < len(old) and old[i] == 1 and (j >= len(new) or new[j] != 1):
            olds.append(i)
            i += 1
        while j < len(new) and new[j] == 1 and (i >= len(old) or old[i] != 1):
            news.append(j)
            j += 1
        groups.append((tuple(olds), tuple(news)))
    return groups


def trace(model: Any, example_inputs: Any, apply_fn: Any = None) -> Tuple[Any, List[Any], Dict[Tuple[str, ...], str], Dict[Tuple[str, ...], Any]]:
    """The jaxpr of a forward pass on ``example_inputs`` whose first inputs are the parameters'
    leaves, with those leaves (``(key path, array)``), the roles and the owning modules."""
    params, fn, roles, owners = forward(model, apply_fn)
    keyed, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = [v for _, v in keyed]
    try:
        closed = jax.make_jaxpr(lambda ls, x: fn(jax.tree_util.tree_unflatten(treedef, ls), x))(leaves, example_inputs)
    except Exception as e:
        raise ValueError(f"example_inputs: the model's forward pass could not be traced on them ({type(e).__name__}: {e})") from e
    return closed.jaxpr, keyed, roles, owners


def structural_invariance(model: Any, example_inputs: Any, apply_fn: Any = None) -> Dict[str, str]:
    """Which kernels the jaxpr of a forward pass on ``example_inputs`` shows the outputs to be
    invariant to the scale of: ``channel`` (each output channel's scale on its own; per layer of
    a stack) or ``tensor``, by path; kernels absent are not invariant (or not shown to be).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)), nnx.Linear(8, 2, rngs=nnx.Rngs(0)))
        >>> structural_invariance(net, jnp.ones((5, 4)))
        {'layers/0/kernel': 'tensor'}
    """
    jaxpr, keyed, roles, owners = trace(model, example_inputs, apply_fn)
    leaves = [v for _, v in keyed]
    n_inputs = len(jaxpr.invars) - len(leaves)
    reader = _Reader()
    out: Dict[str, str] = {}
    for i, (kp, w) in enumerate(keyed):
        path = _path(kp)
        if roles.get(path) != "weight" or w.ndim < 2:
            continue
        stack = w.ndim - _native_rank(owners.get(path[:-1]), w.ndim)
        for name, axes in (("channel", set(range(stack)) | {w.ndim - 1}), ("tensor", set(range(stack)))):
            facts = [CONST] * len(leaves) + [CONST] * n_inputs
            facts[i] = Scaled(frozenset(axes), Fraction(1))
            results = reader.run(jaxpr, facts)
            if all(r == CONST for r in results):
                out["/".join(path)] = name
                break
    return out
