"""``audit`` for Flax models and optax transformations: each parameter's role, its measured
scale-invariance, what the transformation does to it (read from optax's own pieces) and the
mistakes in that setup, judged by the core as ``normwd.torch.audit`` judges a PyTorch setup."""

from typing import Any, Dict, List

import jax

from .._audit import Audit, Mistake, ParamAudit
from . import _optax
from ._roles import _path, _roles_by_path, measure_invariance
from ._structure import structural_invariance


def audit(model: Any, tx: Any = None, example_inputs: Any = None, apply_fn: Any = None, params: Any = None) -> Audit:
    """Every parameter of ``model`` (an NNX module, or a Linen ``params`` tree with ``apply_fn``)
    with its role, its scale-invariance read from the jaxpr of a forward pass on
    ``example_inputs`` (``structural_invariance``) and measured there (F1a with ``jax.grad``: per
    output channel or whole; the measurement decides, a disagreement is noted; ``-`` without
    inputs), and, given optax transformation ``tx``,
    the lr and decay it applies to each (read from its ``add_decayed_weights`` and ``mask``, its
    lr or schedule at step 0, its ``inject_hyperparams`` values) with the mistakes the core finds
    in that: a norm scale or shift, a bias or an embedding decayed (a stacked layer's 2-D
    LayerNorm scale caught by an ``ndim > 1`` mask is one), Adam's L2 on a scale-invariant
    kernel, a scale-invariant kernel left undecayed. ``params``: the tree ``tx`` is given, where
    it is not ``nnx.state(model, nnx.Param)`` (default) or the Linen tree itself.

    Example:
        >>> import jax, optax
        >>> from flax import nnx
        >>> net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)))
        >>> naive = optax.adamw(1e-3, weight_decay=0.1, mask=lambda p: jax.tree_util.tree_map(lambda x: x.ndim >= 1, p))
        >>> [(m.code, m.param) for m in audit(net, naive).mistakes]
        [('norm-decayed', 'layers/1/bias'), ('norm-decayed', 'layers/1/scale')]
    """
    roles = _roles_by_path(model)
    invariant: Dict[str, str] = {}
    notes: List[str] = []
    graph: Dict[str, str] = {}
    if example_inputs is not None:
        invariant = measure_invariance(model, example_inputs, apply_fn)
        graph = structural_invariance(model, example_inputs, apply_fn)
    else:
        notes.append("no example_inputs: scale-invariance neither read from the jaxpr nor measured (both trace a forward pass)")
    if params is None:
        params = model
        try:
            from flax import nnx

            if isinstance(model, nnx.Module):
                params = nnx.state(model, nnx.Param)
        except ImportError:  # pragma: no cover - flax is optional
            pass
    leaves = {_path(kp): leaf for kp, leaf in jax.tree_util.tree_leaves_with_path(params)}
    rules: Dict[Any, _optax.LeafRule] = {}
    hp: Dict[str, Any] = {}
    if tx is not None:
        if not (hasattr(tx, "init") and hasattr(tx, "update")):
            raise TypeError(f"tx: expected an optax GradientTransformation, got {type(tx).__name__}")
        unknown = [p for p in leaves if p not in roles]
        if unknown:
            raise ValueError(f"params: hold {'/'.join(unknown[0])}, which the model does not")
        injected = _optax.injected_hyperparams(tx.init(params))
        steps = _optax.pieces(tx, params, list(leaves), injected)
        rules = {p: _optax.rule(s) for p, s in steps.items()}
        hp = {k: _optax._number(v) for k, v in injected.items()}
    out, mistakes = [], []
    for path, role in roles.items():
        name = "/".join(path)
        leaf = leaves.get(path)
        verdict = invariant.get(name, "")
        entry = ParamAudit(
            name=name,
            shape=list(getattr(leaf, "shape", ())),
            role=role,
            scale_invariant=bool(verdict),
            granularity=verdict,
            structural=(f"yes ({graph[name]})" if name in graph else "no") if example_inputs is not None else "-",
            numeric=(f"yes ({verdict})" if verdict else "no") if example_inputs is not None else "-",
        )
        if example_inputs is not None and graph.get(name, "") != verdict and role == "weight":
            # The measurement decides; the jaxpr's reading is kept beside it.
            entry.note = f"the jaxpr shows {graph.get(name, 'no invariance')}, the measurement {verdict or 'none'}"
        rule = rules.get(path)
        if rule is not None:
            s = _optax.step_settings(rule, 0, hp)
            entry.groups = [0]
            entry.lr, entry.weight_decay = s.lr, s.weight_decay
            if rule.why:
                entry.note = "; ".join(n for n in (entry.note, rule.why) if n)
            for code, severity, why in s.mistakes(role, entry.scale_invariant):
                mistakes.append(Mistake(param=name, code=code, severity=severity, why=why))
        out.append(entry)
    return Audit(params=out, mistakes=mistakes, notes=notes)
