"""What an optax transformation does to each parameter, read from the transformation itself.

optax builds an optimizer as a chain of small transformations (``scale_by_adam``,
``add_decayed_weights``, ``scale_by_learning_rate``, ``masked``, ``partition``) whose settings
live in the closures of their functions. The monitor reads them there, so it predicts from what
the user wrote (a schedule included) and never from a second copy of the settings. What cannot be
read (an unknown transformation) leaves the parameter without a prediction, said in
``monitor.json``: never a guess.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax

from .. import _core

Path = Tuple[str, ...]

#: Transformations that rescale or clip the gradient without moving the equilibrium angle of a
#: scale-invariant weight (the closed forms depend on lr*wd and the moments, not on a gradient
#: scale; clipping is rare at equilibrium).
_NEUTRAL = (
    # Muon's shape factor scales the update and, at equilibrium, the norm alike: the angle stays.
    "scale_by_shape",
    "clip_by_global_norm",
    "clip",
    "zero_nans",
    "identity",
    "init_empty_state",
    "keep_params_nonnegative",
    "scale_by_param_block_norm",
)


@dataclass
class LeafRule:
    """The optimizer acting on one parameter, as the core's closed forms name it: ``optimizer``
    (``sgd``, ``adam``, ``adamw``, ``lion``, ``muon``; None with ``why`` where optax's transformation has
    no closed form here), its ``lr`` and ``weight_decay`` (numbers, or optax schedules of the
    step count), ``momentum``, ``betas``, ``decoupled``, ``nesterov``."""

    optimizer: Optional[str] = None
    why: Optional[str] = None
    lr: Any = 0.0
    weight_decay: Any = 0.0
    momentum: float = 0.0
    betas: Optional[Tuple[float, float]] = None
    decoupled: Optional[bool] = None
    nesterov: bool = False
    #: Names of the settings ``optax.inject_hyperparams`` holds in the state (read at each step).
    injected: Tuple[str, ...] = field(default_factory=tuple)
    #: Whether a decay acts on the parameter (an injected ``weight_decay`` applies only then).
    decayed: bool = False


def _cells(fn: Any) -> Dict[str, Any]:
    code = getattr(fn, "__code__", None)
    if code is None:
        return {}
    return dict(zip(code.co_freevars, [c.cell_contents for c in fn.__closure__ or ()]))


def _kind(fn: Any) -> str:
    """The optax factory that made update function ``fn`` (``scale_by_adam``, ``chain``)."""
    return getattr(fn, "__qualname__", "").split(".<locals>")[0]


def _labels(tree: Any, params: Any) -> Dict[Path, Any]:
    """A mask or labels tree, or its callable, evaluated on ``params``: each leaf's value by path."""
    from ._roles import _path

    value = tree(params) if callable(tree) else tree
    return {_path(kp): v for kp, v in jax.tree_util.tree_leaves_with_path(value)}


def pieces(tx: Any, params: Any, paths: List[Path], injected: Dict[str, Any]) -> Dict[Path, List[Tuple[str, Dict[str, Any]]]]:
    """Each parameter's transformations in the order they act: ``(kind, settings)`` pairs."""
    out: Dict[Path, List[Tuple[str, Dict[str, Any]]]] = {p: [] for p in paths}

    def add(active: List[Path], piece: Tuple[str, Dict[str, Any]]) -> None:
        for p in active:
            out[p].append(piece)

    def walk(fn: Any, active: List[Path], depth: int = 0) -> None:
        if depth > 40 or not active:
            return
        kind, cells = _kind(fn), _cells(fn)
        if kind == "chain":
            for f in cells.get("update_fns", ()):
                walk(f, active, depth + 1)
        elif kind == "with_extra_args_support":
            walk(cells["tx"].update, active, depth + 1)
        elif kind == "masked":
            flags = _labels(cells["mask"], params)
            walk(cells["inner"].update, [p for p in active if bool(flags.get(p, False))], depth + 1)
        elif kind == "partition" or kind == "multi_transform":
            labels = _labels(cells["param_labels"], params)
            for label, t in cells["transforms"].items():
                walk(t.update, [p for p in active if labels.get(p) == label], depth + 1)
        elif kind == "inject_hyperparams":
            # The inner factory rebuilt with the values the state holds at this step.
            inner = cells["inner_factory"](**cells["other_hps"], **{k: _number(v) for k, v in injected.items()})
            add(active, ("injected", {"names": tuple(injected)}))
            walk(inner.update, active, depth + 1)
        elif kind == "scale_by_adam":
            add(active, ("adam", {"b1": cells["b1"], "b2": cells["b2"], "nesterov": bool(cells.get("nesterov", False))}))
        elif kind == "scale_by_muon":
            if cells.get("adaptive") or cells.get("preconditioning", "frobenius") != "frobenius" or cells.get("ns_steps", 5) != 5:
                add(active, ("unknown", {"name": "scale_by_muon (adaptive, another preconditioning or other than 5 Newton-Schulz steps)"}))
            else:
                add(active, ("muon", {"beta": cells["beta"], "nesterov": bool(cells.get("nesterov", True))}))
        elif kind == "scale_by_lion":
            add(active, ("lion", {"b1": cells["b1"], "b2": cells["b2"]}))
        elif kind == "trace":
            add(active, ("trace", {"decay": cells["decay"], "nesterov": bool(cells.get("nesterov", False))}))
        elif kind == "add_decayed_weights":
            add(active, ("decay", {"weight_decay": cells["weight_decay"]}))
        elif kind == "scale":
            add(active, ("scale", {"value": cells["step_size"]}))
        elif kind == "scale_by_schedule":
            f = cells["step_size_fn"]
            inner = _cells(f)
            if _kind(f) == "scale_by_learning_rate" and "learning_rate" in inner:
                sched = inner["learning_rate"]
                add(active, ("scale", {"value": _Schedule(sched, inner.get("m", -1))}))
            else:
                add(active, ("scale", {"value": _Schedule(f, 1)}))
        elif kind in _NEUTRAL:
            pass
        else:
            add(active, ("unknown", {"name": kind or repr(fn)}))

    try:
        walk(tx.update, list(paths))
    except Exception as e:  # noqa: BLE001
        # A transformation built otherwise than this optax version builds it: nothing is read,
        # and every parameter says why, rather than the user's setup failing.
        return {p: [("unknown", {"name": f"a transformation normwd could not read ({type(e).__name__}: {e})"})] for p in paths}
    return out


def _number(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


class _Schedule:
    """``sign * schedule(count)``: an optax schedule read from a transformation."""

    def __init__(self, fn: Callable[[Any], Any], sign: float):
        self.fn, self.sign = fn, sign

    def __call__(self, count: int) -> float:
        return self.sign * float(self.fn(count))


def value(v: Any, count: int) -> float:
    """A setting's value at the step that used optax count ``count`` (a schedule evaluated)."""
    return float(v(count)) if callable(v) else float(v)


def rule(steps: List[Tuple[str, Dict[str, Any]]]) -> LeafRule:
    """The closed form's settings of a parameter whose transformations are ``steps`` (in order).
    Decay before the moments is L2 in the gradient (coupled), after them decoupled; the lr is the
    negative of the scale after both."""
    kinds = [k for k, _ in steps]
    r = LeafRule()
    for k, s in steps:
        if k == "injected":
            r.injected = s["names"]
    unknown = [s["name"] for k, s in steps if k == "unknown"]
    if unknown:
        r.why = f"optax's {', '.join(unknown)} has no closed form in normwd"
        return r
    scales = [s["value"] for k, s in steps if k == "scale"]
    if len(scales) != 1:
        r.why = "no single learning-rate scale in the chain" if not scales else "several scales in the chain (the lr is their product)"
        return r
    scale = scales[0]
    r.lr = _Schedule(scale.fn, -scale.sign) if isinstance(scale, _Schedule) else -float(scale)
    at_scale = kinds.index("scale")
    decays = [(i, s["weight_decay"]) for i, (k, s) in enumerate(steps) if k == "decay"]
    if len(decays) > 1:
        r.why = "decay added twice"
        return r
    if decays and decays[0][0] > at_scale:
        r.why = "decay added after the lr scale (not multiplied by the lr: no closed form)"
        return r
    moments = [(i, k, s) for i, (k, s) in enumerate(steps) if k in ("adam", "lion", "trace", "muon")]
    if len(moments) > 1:
        r.why = "several moment transformations"
        return r
    decay_at = decays[0][0] if decays else None
    r.weight_decay = decays[0][1] if decays else 0.0
    r.decayed = bool(decays)
    if not moments:
        r.optimizer, r.decoupled = "sgd", True if decay_at is None else False
        return r
    i, k, s = moments[0]
    coupled = decay_at is not None and decay_at < i
    if k == "adam" and s["nesterov"]:
        r.why = "Adam with Nesterov momentum (optax's nesterov=True) has no closed form in normwd"
        return r
    if k == "adam":
        r.optimizer, r.betas, r.decoupled = ("adamw" if decays and not coupled else "adam"), (s["b1"], s["b2"]), not coupled
    elif k == "muon":
        if coupled:
            r.why = "decay inside Muon's orthogonalization (no closed form)"
            return r
        r.optimizer, r.momentum, r.nesterov, r.decoupled = "muon", float(s["beta"]), s["nesterov"], True
    elif k == "lion":
        if coupled:
            r.why = "decay inside Lion's sign (no closed form)"
            return r
        r.optimizer, r.betas, r.decoupled = "lion", (s["b1"], s["b2"]), True
    else:
        r.optimizer, r.momentum, r.nesterov, r.decoupled = "sgd", float(s["decay"]), s["nesterov"], not coupled
    return r


def injected_hyperparams(state: Any) -> Dict[str, Any]:
    """The settings an ``optax.inject_hyperparams`` state holds (the first found), by name."""
    found: List[Any] = []

    def look(x: Any) -> bool:
        # optax's InjectHyperparamsState and InjectStatefulHyperparamsState (not a subclass).
        injected = isinstance(getattr(x, "hyperparams", None), dict) and hasattr(x, "inner_state")
        if injected and not found:
            found.append(x.hyperparams)
        return injected

    jax.tree_util.tree_leaves(state, is_leaf=look)
    return dict(found[0]) if found else {}


def step_settings(rule: LeafRule, count: int, hp: Dict[str, float]) -> Any:
    """The core's settings (``StepSettings``) of a parameter under ``rule`` at the step that used
    optax count ``count``: a schedule evaluated there, the values an ``inject_hyperparams`` state
    held then (``hp``) where the rule takes them from it."""
    if rule.optimizer is None:
        return _core.StepSettings(None, 0.0, 0.0)
    lr = float(hp["learning_rate"]) if "learning_rate" in rule.injected and "learning_rate" in hp else value(rule.lr, count)
    wd = 0.0
    if rule.decayed:
        wd = float(hp["weight_decay"]) if "weight_decay" in rule.injected and "weight_decay" in hp else value(rule.weight_decay, count)
    momentum = float(hp["momentum"]) if rule.optimizer == "sgd" and rule.momentum and "momentum" in hp else rule.momentum
    betas = rule.betas
    if betas is not None:
        betas = (float(hp.get("b1", betas[0])), float(hp.get("b2", betas[1])))
    return _core.StepSettings(rule.optimizer, max(lr, 0.0), max(wd, 0.0), momentum, betas, rule.decoupled, rule.nesterov)
