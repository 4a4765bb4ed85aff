"""``monitor``: normwd's per-layer measurements inside a JAX training, as an optax
``GradientTransformation`` wrapping the user's own, computed inside ``jit`` every ``every``
steps and written in normwd's run format."""

import json
import math
import os
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _core
from .._records import decay_policy, probe_line, write_json
from . import _optax
from ._roles import _native_rank, _path, _roles_by_path, measure_invariance, owners


class MonitorState(NamedTuple):
    """The monitor's state: the steps counted, then the wrapped transformation's state."""

    count: Any
    inner: Any


class _Entry(NamedTuple):
    """One probed parameter: its path, role, the rank of one layer's array, its stacked layers,
    output channels (its last axis), scale-invariance and the optax rule acting on it."""

    path: Tuple[str, ...]
    name: str
    role: str
    ndim: int
    layers: int
    channels: int
    cols: int
    per_row: bool
    scale_invariant: bool
    rule: _optax.LeafRule


class Monitor(optax.GradientTransformationExtraArgs):
    """The transformation ``monitor`` returns: the user's transformation with the measurements
    around it (``init``, ``update`` as optax's), and ``close()``, which waits for the last
    measurements and finishes the run folder. ``records`` holds the records written so far,
    ``steps`` the steps counted."""

    @property
    def _host(self) -> "_Host":
        return self.update.__self__

    def close(self) -> None:
        """Waits for the measurements in flight, closes ``metrics.jsonl`` and writes
        ``config.toml`` again with the lr range the run showed."""
        self._host.close()

    @property
    def records(self) -> List[Dict[str, Any]]:
        """The probe records written so far (dicts, as in ``metrics.jsonl``)."""
        return self._host.records

    @property
    def steps(self) -> int:
        """The last step measured (a probe step's count of steps)."""
        return self._host.last_step

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def monitor(
    tx: Any,
    out: str,
    model: Any,
    every: int = 10,
    example_inputs: Any = None,
    apply_fn: Any = None,
    channels: str = "summary",
) -> Monitor:
    """Wraps optax transformation ``tx`` so that, every ``every`` steps, each weight's and norm
    scale's norm, gradient norm, effective lr, angular update and ``cos(w, g)`` (and, for
    scale-invariant kernels, their output channels': five quantiles each with ``channels=
    "summary"``, every one with ``"full"``) are computed on the device inside ``jit``, brought to
    the host once per probe step (one ordered ``jax.debug.callback``), and written to
    ``out/metrics.jsonl`` in normwd's run format beside the equilibrium the theory predicts (F7
    SGD with momentum, F8 Adam(W), F9 Lion) from the settings read from ``tx`` itself:
    optax's ``scale_by_adam``, ``trace``, ``scale_by_lion``, ``add_decayed_weights`` with its
    ``mask``, ``scale_by_learning_rate`` with a schedule, ``partition`` labels, and the values an
    ``optax.inject_hyperparams`` state holds at each step. A transformation normwd has no closed
    form for leaves its parameters without a prediction (``monitor.json`` says why).

    ``model``: the NNX module (or Linen ``params`` tree) whose parameters ``tx`` updates, for the
    roles; ``example_inputs`` (and ``apply_fn`` for a params tree) measures scale-invariance
    (``measure_invariance``), without which no weight is taken as scale-invariant. Layers
    stacked on a leading axis (``nnx.vmap``, scanned layers) are measured layer by layer
    (``path[i]``).

    Works in ``nnx.Optimizer(model, monitor(...), wrt=nnx.Param)`` and in a plain ``tx.update``
    loop (which must pass ``params``). ``close()`` (or a ``with`` block) finishes the folder;
    ``normwd report OUT`` draws it. The measurements never raise into the training: a failure
    is one ``RuntimeWarning`` and the training goes on unmeasured.

    Example:
        >>> import tempfile, jax, optax
        >>> from flax import nnx
        >>> net = nnx.Sequential(nnx.Linear(4, 8, use_bias=False, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0)))
        >>> x = jax.random.normal(jax.random.key(0), (16, 4))
        >>> with monitor(optax.adamw(1e-2, weight_decay=0.1), tempfile.mkdtemp(), net, every=1, example_inputs=x) as tx:
        ...     opt = nnx.Optimizer(net, tx, wrt=nnx.Param)
        ...     for _ in range(3):
        ...         _ = opt.update(net, nnx.grad(lambda m: (m(x) * x.sum(1, keepdims=True)).mean())(net))
        >>> tx.steps, sorted({r["path"] for r in tx.records})
        (3, ['layers/0/kernel', 'layers/1/scale'])
    """
    if isinstance(every, bool) or not isinstance(every, int):
        raise TypeError(f"every={every!r}: expected an integer >= 1")
    if every < 1:
        raise ValueError(f"every={every!r}: expected an integer >= 1")
    if channels not in ("summary", "full", "none"):
        raise ValueError(f"channels={channels!r}: expected 'summary' (five quantiles per array), 'full' (every channel) or 'none'")
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(f"tx: expected an optax GradientTransformation, got {type(tx).__name__}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out={out!r}: expected a folder path (str or os.PathLike)")
    host = _Host(optax.with_extra_args_support(tx), tx, os.fspath(out), model, every, example_inputs, apply_fn, channels)
    return Monitor(host.init, host.update)


class _Host:
    """The host side: what is known before the training, the files, and the probe steps'
    records."""

    def __init__(self, tx: Any, original: Any, out: str, model: Any, every: int, example_inputs: Any, apply_fn: Any, channels: str):
        self.tx, self.original, self.out, self.every, self.channels = tx, original, out, every, channels
        self.roles = _roles_by_path(model)
        self.model_name = type(model).__name__
        self.invariant: Dict[str, str] = {}
        if example_inputs is not None:
            self.invariant = measure_invariance(model, example_inputs, apply_fn)
        self._owners = owners(model)
        self.records: List[Dict[str, Any]] = []
        self.last_step = 0
        self.entries: List[_Entry] = []
        self._warned: set = set()
        self._broken = False
        self._lrs: set = set()
        self._lr_initial: Optional[float] = None
        self._file: Any = None
        metrics = os.path.join(out, "metrics.jsonl")
        if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
            raise ValueError(f"out={out!r}: already holds a run ({metrics}); choose another folder (records of two trainings would interleave)")
        try:
            os.makedirs(out, exist_ok=True)
            self._file = open(metrics, "w", encoding="utf-8")
        except OSError as e:
            raise ValueError(f"out={out!r}: cannot write the run there ({e})") from e

    # -- optax's two functions --------------------------------------------------------------

    def init(self, params: Any) -> MonitorState:
        inner = self.tx.init(params)
        self._read(params, _optax.injected_hyperparams(inner))
        return MonitorState(count=jnp.zeros([], jnp.int32), inner=inner)

    def update(self, updates: Any, state: MonitorState, params: Any = None, **extra: Any) -> Tuple[Any, MonitorState]:
        grads = updates
        new, inner = self.tx.update(updates, state.inner, params, **extra)
        count = state.count + 1
        if params is None:
            self._warn_once("params", "update() was called without params: nothing is measured (pass params, as nnx.Optimizer does)")
            return new, MonitorState(count, inner)
        if self._broken or not self.entries:
            return new, MonitorState(count, inner)
        try:
            hp = {k: jnp.asarray(v, jnp.float32) for k, v in _optax.injected_hyperparams(inner).items() if _is_number(v)}
            operands = (grads, params, new, hp, count)
            jax.lax.cond(count % self.every == 0, self._probe, lambda ops: None, operands)
        except Exception as e:  # noqa: BLE001
            # The user's training is not normwd's to stop.
            self._give_up("tracing the measurements", e)
        return new, MonitorState(count, inner)

    # -- before the training --------------------------------------------------------------

    def _read(self, params: Any, injected: Dict[str, Any]) -> None:
        """The probed parameters, their roles and the optax rule acting on each; ``monitor.json``
        and ``config.toml``."""
        leaves = {_path(kp): leaf for kp, leaf in jax.tree_util.tree_leaves_with_path(params)}
        unknown = [p for p in leaves if p not in self.roles]
        if unknown:
            raise ValueError(f"params: the optimizer's params hold {'/'.join(unknown[0])}, which the model given to monitor does not (give the model whose parameters tx updates)")
        steps = _optax.pieces(self.original, params, list(leaves), injected)
        entries = []
        for path, leaf in leaves.items():
            role = self.roles[path]
            if not _core.probed(role) or leaf.ndim == 0:
                continue
            name = "/".join(path)
            ndim = _native_rank(self._owners.get(path[:-1]), leaf.ndim)
            layers = int(np.prod(leaf.shape[: leaf.ndim - ndim])) if leaf.ndim > ndim else 1
            si = name in self.invariant
            channels = int(leaf.shape[-1])
            cols = max(1, int(leaf.size) // max(1, layers * channels))
            entries.append(_Entry(path, name, role, ndim, layers, channels, cols, si and ndim >= 2 and leaf.shape[-1] > 1, si, _optax.rule(steps[path])))
        self.entries = entries
        self._injected0 = {k: _optax._number(v) for k, v in injected.items()}
        self._write_settings()
        self._write_config()

    def _write_settings(self) -> None:
        tensors, mistakes = [], []
        for e in self.entries:
            s = _optax.step_settings(e.rule, 0, self._injected0)
            t: Dict[str, Any] = {"name": e.name, "role": e.role, "scale_invariant": e.scale_invariant, "layers": e.layers, "optimizer": e.rule.optimizer, "lr": s.lr, "weight_decay": s.weight_decay}
            if e.rule.why:
                t["no_prediction"] = e.rule.why
            tensors.append(t)
            mistakes += [f"{code}: {e.name}" for code, _, _ in s.mistakes(e.role, e.scale_invariant)]
        info = {
            "source": "normwd.jax.monitor",
            "model": self.model_name,
            "optimizer": _describe(self.entries),
            "every": self.every,
            "channels": self.channels,
            "tensors": tensors,
            "mistakes": mistakes,
        }
        write_json(os.path.join(self.out, "monitor.json"), info)

    def _write_config(self) -> None:
        main = next((e for e in self.entries if e.rule.optimizer and e.rule.decayed), next((e for e in self.entries if e.rule.optimizer), None))
        rule = main.rule if main is not None else _optax.LeafRule()
        s = _optax.step_settings(rule, 0, self._injected0) if main is not None else None
        decayed = [_optax.step_settings(e.rule, 0, self._injected0).weight_decay for e in self.entries]
        fields = {
            "source": "normwd.jax.monitor",
            "model": self.model_name,
            "optimizer": _describe(self.entries),
            "rule": rule.optimizer,
            "lr": max(self._lrs) if self._lrs else (s.lr if s else 0.0),
            "lr_range": [min(self._lrs), max(self._lrs)] if self._lrs else None,
            "lr_initial": self._lr_initial,
            "momentum": rule.momentum,
            "weight_decay": max(decayed, default=0.0),
            "betas": list(rule.betas) if rule.betas else None,
            "decoupled": rule.decoupled,
            "policy": self._policy(),
            "every": self.every,
            "lr_varies": len(self._lrs) > 1,
            "scheduler": "optax schedule" if callable(rule.lr) else None,
        }
        _core.write_run_config(self.out, json.dumps(fields))

    def _policy(self) -> str:
        """The decay policy the rules follow (``decay_policy`` of the probed tensors)."""
        return decay_policy((e.role, e.scale_invariant, e.rule.decayed) for e in self.entries)

    # -- inside jit --------------------------------------------------------------------------

    def _probe(self, operands: Any) -> None:
        grads, params, new, hp, count = operands
        by_path = [{_path(kp): v for kp, v in jax.tree_util.tree_leaves_with_path(t)} for t in (grads, params, new)]
        parts = []
        for e in self.entries:
            g, w, d = (jnp.asarray(t[e.path], jnp.float32) for t in by_path)
            rows = e.channels if e.per_row else 1
            shape = (e.layers, -1, rows)
            w, g, d = w.reshape(shape), g.reshape(shape), d.reshape(shape)
            # Per layer: ||w||^2, ||g||^2, <w,g>, ||d||^2, <w,d> (d: the update the step adds).
            ww, dd, wd = (w * w).sum(1), (d * d).sum(1), (w * d).sum(1)
            totals = jnp.stack([ww.sum(-1), (g * g).sum((1, 2)), (w * g).sum((1, 2)), dd.sum(-1), wd.sum(-1)], axis=1)
            parts.append(totals.reshape(-1))
            if e.per_row:
                parts.append(jnp.stack([ww, dd, wd], axis=1).reshape(-1))
        jax.debug.callback(self._host_step, count, jnp.concatenate(parts), hp, ordered=True)

    # -- on the host, once per probe step -----------------------------------------------------

    def _host_step(self, count: Any, flat: Any, hp: Dict[str, Any]) -> None:
        try:
            self._write(int(count), np.asarray(flat, dtype=np.float64), {k: float(v) for k, v in hp.items()})
        except Exception as e:  # noqa: BLE001
            self._give_up(f"writing step {int(count)}", e)

    def _write(self, step: int, flat: np.ndarray, hp: Dict[str, float]) -> None:
        if self._broken or self._file is None or self._file.closed:
            return
        at, new = 0, []
        for e in self.entries:
            totals = flat[at : at + 5 * e.layers].reshape(e.layers, 5)
            at += 5 * e.layers
            rows = None
            if e.per_row:
                rows = flat[at : at + 3 * e.layers * e.channels].reshape(e.layers, 3, e.channels)
                at += 3 * e.layers * e.channels
            s = _optax.step_settings(e.rule, step - 1, hp)
            for layer in range(e.layers):
                name = e.name if e.layers == 1 else f"{e.name}[{layer}]"
                ww, gg, wg, dd, wd = (float(v) for v in totals[layer])
                if not all(math.isfinite(v) for v in (ww, gg, wg, dd, wd)):
                    self._warn_once(f"nonfinite:{name}", f"{name} holds NaN or inf at step {step}: the training diverged; its records are left out")
                    continue
                per_channel = ([], [], []) if rows is None else (rows[layer, 0].tolist(), rows[layer, 1].tolist(), rows[layer, 2].tolist())
                # Muon's view of one layer's kernel: (outputs, inputs).
                line = probe_line(step, name, e.role, e.ndim, e.scale_invariant, (ww, gg, wg, dd, wd), per_channel, s, self.channels, (e.channels, e.cols))
                self._file.write(line + "\n")
                new.append(json.loads(line))
        if self._lr_initial is None:
            self._lr_initial = self._first_lr(hp)
        lr = self._first_lr(hp, step - 1)
        if lr is not None:
            self._lrs.add(lr)
        self._file.flush()
        self.records += new
        self.last_step = step

    def _first_lr(self, hp: Dict[str, float], count: int = 0) -> Optional[float]:
        main = next((e for e in self.entries if e.rule.optimizer), None)
        return None if main is None else _optax.step_settings(main.rule, count, hp).lr

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"normwd.jax.monitor: {message}", RuntimeWarning, stacklevel=3)

    def _give_up(self, what: str, e: BaseException) -> None:
        self._broken = True
        self._warn_once("broken", f"stopped monitoring: {what} failed ({type(e).__name__}: {e}); the training goes on")

    def close(self) -> None:
        # The callbacks of steps already dispatched run first.
        try:
            jax.effects_barrier()
        except Exception:  # noqa: BLE001
            pass
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
                self._write_config()
            except OSError as e:
                self._warn_once("close", f"could not finish writing {self.out} ({e}); the records written so far stay")


def _is_number(v: Any) -> bool:
    return hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0 or isinstance(v, (int, float))


def _describe(entries: List[_Entry]) -> str:
    names = sorted({e.rule.optimizer or "unreadable" for e in entries})
    return "optax:" + "+".join(names)
