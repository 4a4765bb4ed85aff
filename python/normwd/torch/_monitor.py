"""``Monitor``: the per-layer measurements of a normwd run, taken inside the user's own PyTorch
training by optimizer step hooks, with the theory's equilibrium beside them, written in
normwd's run format (``metrics.jsonl`` probe records)."""

import json
import math
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import _core
from .._records import decay_policy, probe_line, write_json
from ._audit import audit
from ._optimizer import each, settings, unwrap_optimizer
from ._roles import is_dtensor, local_values, unwrap


class Monitor:
    """Measures, every ``every`` optimizer steps, each weight's and norm scale's norm, gradient
    norm, effective learning rate, angular update and ``cos(w, g)`` (and, for scale-invariant
    weights, its output channels' norms and angles: five quantiles each with
    ``channels="summary"``, the default, every channel with ``"full"``), with the equilibrium
    angle that the group's settings at that step predict (F7 SGD with momentum, F8 AdamW, F9 Lion; plain SGD's
    equilibrium norm too), and writes them to ``out/metrics.jsonl`` in normwd's run format.
    The records are built by normwd's core, as the engine's probes and ``normwd inspect`` build
    theirs: scale-invariant weights get the predictions (``pred_basis`` ``scale-invariant``),
    other decayed weight matrices the angle as an approximation (``approximate``), the rest
    none; an optimizer without a closed form gets no prediction and no effective lr (NaN);
    ``out/monitor.json`` lists the tensors and each group's relaxation time ``1/(lr*wd)``.

    A probe step measures at most ``tensors_per_step`` tensors (32 by default; None: all), the
    next ones in turn, so its records stay about 20 KB and its cost bounded on a large model;
    each tensor is measured every ``every * ceil(tensors / tensors_per_step)`` steps. The angle
    comes from the update ``d = w' - w`` itself, precise at any size. The sums are taken on the
    parameters' own device in one pass after the step, from one copy of the probed weights in
    their own dtype and pairwise reductions (no float64 copy of the model), and reach the host
    once per probe step. Settings are read from the optimizer's groups at each step, so any
    scheduler is followed. The hooks never raise into the training: a weight that turns NaN or
    inf, or a failed write, is said in one warning (``RuntimeWarning``) and its records are left
    out (a failed write ends the monitoring); a zero norm is recorded with an undefined
    effective lr (``null``). Misuse (a bad ``every``, an ``out`` that cannot be written or
    already holds a run) is refused when the Monitor is made. The gradient is the one the step
    used, read after it (a ``GradScaler`` has unscaled it; a closure, as Lightning's, computed
    it inside the step); a step the scaler skips is not counted. Under DistributedDataParallel
    rank 0 measures and writes; under FSDP2 every rank measures its shards, the sums are
    all-reduced once per probe step, and rank 0 writes the full tensors' values.

    ``optimizer`` may be a list: several optimizers training one model together, the usual
    ``[torch.optim.Muon(hidden), torch.optim.AdamW(rest)]``. A training step is counted when each
    has stepped once, in any order; the weights are copied before the first of them and measured
    after the last, and each tensor is predicted for by the optimizer holding it (Muon's F18 for
    its matrices, from each matrix's shape).

    ``example_inputs`` (as ``audit``'s) measures scale-invariance before the first step;
    ``measure_invariance`` does it later, with a batch that came later; ``report`` is the audit
    whose verdicts it follows.

    ``scheduler`` (the lr scheduler the training steps, or its name) is recorded in
    ``config.toml`` with the initial, peak and lowest lr the probes saw; the trainer callbacks
    pass theirs.

    ``writer`` also receives each measurement: a TensorBoard ``SummaryWriter`` (anything with
    ``add_scalar``) as ``normwd/<tensor>/<quantity>`` at the step, or a W&B run (anything with
    ``log``) as one dict per probe step with ``commit=False``, so it joins the user's next log.

    Example:
        >>> import tempfile, torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8, bias=False), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        >>> with Monitor(net, opt, out=tempfile.mkdtemp(), every=1) as mon:
        ...     for _ in range(3):
        ...         opt.zero_grad(); net(torch.randn(16, 4)).square().mean().backward(); opt.step()
        >>> mon.steps, len(mon.records) > 0
        (3, True)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Union[torch.optim.Optimizer, Sequence[torch.optim.Optimizer]],
        out: str,
        every: int = 10,
        example_inputs: Any = None,
        writer: Any = None,
        tensors_per_step: Optional[int] = 32,
        channels: str = "summary",
        scheduler: Any = None,
    ):
        check_every(every)
        if tensors_per_step is not None and (isinstance(tensors_per_step, bool) or not isinstance(tensors_per_step, int)):
            raise TypeError(f"tensors_per_step={tensors_per_step!r}: expected an integer >= 1 or None (every tensor at each probe step)")
        if tensors_per_step is not None and tensors_per_step < 1:
            raise ValueError(f"tensors_per_step={tensors_per_step!r}: expected an integer >= 1 or None (every tensor at each probe step)")
        if channels not in ("summary", "full", "none"):
            raise ValueError(f"channels={channels!r}: expected 'summary' (five quantiles per array), 'full' (every channel) or 'none'")
        self.tensors_per_step, self.channels = tensors_per_step, channels
        if scheduler is not None and not isinstance(scheduler, str) and not hasattr(scheduler, "step"):
            raise TypeError(f"scheduler: expected the lr scheduler the training steps (or its name), got {type(scheduler).__name__}")
        #: The lr scheduler's class name, recorded in ``config.toml`` (the trainer callbacks pass it).
        self.scheduler: Optional[str] = scheduler if isinstance(scheduler, str) or scheduler is None else type(scheduler).__name__
        self._cursor = 0
        self._probe: List[Tuple[str, torch.Tensor, int, bool]] = []
        # Whether the coming step is a probe step (set before it, read after it).
        self._scheduled = False
        if not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"out={out!r}: expected a folder path (str or os.PathLike)")
        out = os.fspath(out)
        if writer is not None and not (hasattr(writer, "add_scalar") or hasattr(writer, "log")):
            raise ValueError(f"writer: expected a TensorBoard SummaryWriter (add_scalar) or a W&B run (log), got {type(writer).__name__}")
        self.writer = writer
        model = unwrap(model)
        optimizer = unwrap_optimizer(optimizer)
        self.optimizer = optimizer
        self.every = every
        self.out = out
        self.steps = 0
        #: The records written so far (dicts), for programs that read them in the loop.
        self.records: List[Dict[str, Any]] = []
        self._model = model
        report = audit(model, optimizer, example_inputs)
        self._adopt(report)
        self.active = not (torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0)
        # Under FSDP2 each rank holds a shard of every weight: all ranks measure their shards
        # and the sums are added across ranks (one all-reduce per probe step); rank 0 writes.
        self._sharded = any(is_dtensor(p) for _, p, _, _ in self._tracked)
        self._before_w: Optional[List[torch.Tensor]] = None
        self._model_name = type(model).__name__
        self._lrs: set = set()
        self._lr_initial = settings(optimizer)[0].lr if optimizer.param_groups else None
        #: Problems already warned about (each is said once).
        self._warned: set = set()
        self._broken = False
        if self.active:
            metrics = os.path.join(out, "metrics.jsonl")
            if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
                raise ValueError(f"out={out!r}: already holds a run ({metrics}); choose another folder (records of two trainings would interleave)")
            try:
                os.makedirs(out, exist_ok=True)
                self._write_settings(report)
                self._write_config()
                self._file = open(metrics, "w", encoding="utf-8")
            except OSError as e:
                raise ValueError(f"out={out!r}: cannot write the run there ({e})") from e
        # The optimizers that stepped in the current training step (several: Muon beside AdamW).
        self._stepped: set = set()
        self._n_optimizers = len(each(optimizer))
        self._hooks = []
        for i, o in enumerate(each(optimizer)):
            self._hooks += [o.register_step_pre_hook(self._before_hook(i)), o.register_step_post_hook(self._after_hook(i))]

    def _adopt(self, report: Any) -> None:
        """Tracks the tensors ``report`` (an audit) says are probed and in a group, with its
        verdicts on scale-invariance."""
        named = dict(self._model.named_parameters())
        self._tracked: List[Tuple[str, torch.Tensor, int, bool]] = []
        self._roles: Dict[str, str] = {}
        for p in report.params:
            if _core.probed(p.role) and p.groups and p.name in named:
                self._tracked.append((p.name, named[p.name], p.groups[0], p.scale_invariant))
                self._roles[p.name] = p.role
        self._policy = _policy(report)
        self.report = report

    def measure_invariance(self, example_inputs: Any, submodule: Optional[str] = None) -> None:
        """Measures scale-invariance on ``example_inputs`` (as ``audit``'s argument: a batch,
        a tuple, or a dict of keyword arguments) and follows its verdicts from the next step on,
        for a Monitor made before a batch was at hand (the trainer callbacks give it the first
        training batch); ``submodule`` as for ``audit``. Anything that goes wrong is a warning:
        the Monitor goes on with what it had.

        Example:
            >>> import tempfile, torch
            >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8, bias=False), torch.nn.LayerNorm(8))
            >>> opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
            >>> mon = Monitor(net, opt, out=tempfile.mkdtemp())
            >>> mon.measure_invariance(torch.randn(4, 4))
            >>> mon.report["0.weight"].numeric, mon.close()
            ('yes (tensor)', None)
        """
        try:
            report = audit(self._model, self.optimizer, example_inputs, submodule=submodule)
        except Exception as e:  # noqa: BLE001
            self._warn_once("measure", f"could not measure scale-invariance on the example inputs ({type(e).__name__}: {e}); the graph's verdicts stay")
            return
        names = [n for n, _, _, _ in self._tracked]
        self._adopt(report)
        if [n for n, _, _, _ in self._tracked] != names:
            # A copy taken before this step is of other tensors: this step is not measured.
            self._before_w = None
        else:
            now = {t[0]: t for t in self._tracked}
            self._probe = [now[t[0]] for t in self._probe]
        if self.active and not self._broken:
            try:
                self._write_settings(report)
            except OSError as e:
                self._warn_once("settings", f"could not rewrite {self.out}/monitor.json ({e})")

    def _write_settings(self, report: Any) -> None:
        info = {
            "source": "normwd.torch.Monitor",
            "model": self._model_name,
            "optimizer": _kind(self.optimizer),
            "every": self.every,
            "tensors_per_step": self.tensors_per_step,
            "channels": self.channels,
            "tensors": [{"name": n, "group": g, "scale_invariant": si} for n, _, g, si in self._tracked],
            "groups": [_group_info(g) for g in settings(self.optimizer)],
            "mistakes": [m.code + ": " + m.param for m in report.mistakes],
        }
        write_json(os.path.join(self.out, "monitor.json"), info)

    def _write_config(self) -> None:
        """``config.toml`` of normwd's run format, as far as the optimizer's first group tells,
        marked as a run trained elsewhere (``normwd report`` reads it; ``train --resume`` refuses)."""
        groups = settings(self.optimizer)
        g = groups[0]
        fields = {
            "source": "normwd.torch.Monitor",
            "model": self._model_name,
            "optimizer": _kind(self.optimizer),
            "rule": g.optimizer,
            # The peak lr (a schedule's last one is often 0), with the range seen.
            "lr": max(self._lrs) if self._lrs else g.lr,
            "lr_range": [min(self._lrs), max(self._lrs)] if self._lrs else None,
            "lr_initial": self._lr_initial,
            "momentum": g.momentum,
            "weight_decay": max(s.weight_decay for s in groups),
            "betas": list(g.betas) if g.betas else None,
            "decoupled": g.decoupled,
            "policy": self._policy,
            "every": self.every,
            "lr_varies": len(self._lrs) > 1,
            "scheduler": self.scheduler,
        }
        _core.write_run_config(self.out, json.dumps(fields))

    def _probing(self) -> bool:
        if self._sharded:
            # Every rank takes part in each probe step's all-reduce, whatever happened on rank 0
            # (a rank that stopped would leave the others waiting).
            return (self.steps + 1) % self.every == 0
        return self.active and not self._broken and (self.steps + 1) % self.every == 0

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"normwd.torch.Monitor: {message}", RuntimeWarning, stacklevel=3)

    def _before_hook(self, index: int) -> Callable[..., None]:
        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if index in self._stepped:
                # A new training step began before every optimizer stepped in the last one (a
                # GradScaler skipped one): the last one ends here.
                self._end_step()
            if self._stepped:
                return
            # The user's training is not normwd's to stop: whatever goes wrong here is a warning.
            try:
                self._measure_before()
            except Exception as e:  # noqa: BLE001
                self._give_up("measuring before the step", e)

        return hook

    def _after_hook(self, index: int) -> Callable[..., None]:
        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self._stepped.add(index)
            if len(self._stepped) == self._n_optimizers:
                self._end_step()

        return hook

    def _end_step(self) -> None:
        self._stepped = set()
        self.steps += 1
        try:
            self._measure_after()
        except Exception as e:  # noqa: BLE001
            self._give_up(f"measuring step {self.steps}", e)

    def _give_up(self, what: str, e: BaseException) -> None:
        """Stops monitoring after an unexpected error, with one warning; the training goes on."""
        self._broken = True
        self._before_w = None
        self._warn_once("broken", f"stopped monitoring: {what} failed ({type(e).__name__}: {e}); the training goes on")

    def _measure_before(self) -> None:
        if not self._probing():
            return
        # A rotating subset where asked: the next tensors_per_step of the tracked ones.
        n, k = len(self._tracked), self.tensors_per_step
        if k is None or k >= n:
            self._probe = list(self._tracked)
        else:
            self._probe = [self._tracked[(self._cursor + i) % n] for i in range(k)]
            self._cursor = (self._cursor + k) % n
        self._scheduled = True
        with torch.no_grad():
            # One copy of each probed weight (its shard under FSDP2) in its own dtype: the step
            # changes the parameter in place.
            self._before_w = [local_values(p).detach().clone() for _, p, _, _ in self._probe]

    def _measure_after(self) -> None:
        scheduled, self._scheduled = self._scheduled, False
        if self._sharded and scheduled:
            # The all-reduce must happen on every rank, whatever failed on this one.
            return self._measure_sharded()
        if self._before_w is None:
            return
        self._write(*self._sums())

    def _measure_sharded(self) -> None:
        try:
            if self._before_w is None:
                raise RuntimeError("the copy before the step failed")
            rows, flat = self._sums()
        except Exception as e:  # noqa: BLE001
            # NaN of the same size: the other ranks' sums arrive, and the step's records are
            # left out on rank 0 with a warning.
            self._warn_once("shard", f"measuring this rank's shards failed ({type(e).__name__}: {e}); the step's records are left out")
            size = sum(5 + (3 * p.shape[0] if _per_row(p, si) else 0) for _, p, _, si in self._probe)
            device = self._probe[0][1].device if self._probe else "cpu"
            rows, flat = None, torch.full((size,), float("nan"), dtype=torch.float64, device=device)
        with torch.no_grad():
            torch.distributed.all_reduce(flat)
        if rows is None:
            self._before_w = None
            return
        self._write(rows, flat)

    def _sums(self) -> Tuple[List[Optional[torch.Tensor]], torch.Tensor]:
        """Each probed tensor's rows (scale-invariant ones only, ``_step_sums``) and all the
        sums in one vector: the totals, five per tensor, then the rows; under FSDP2 this rank's
        part, rows placed among all the tensor's rows."""
        assert self._before_w is not None
        with torch.no_grad():
            # Everything from one pass over each tensor after the step: the weight before it, the
            # weight after it and the gradient the step used (left in .grad, also where a closure
            # computed it inside the step, as Lightning's does).
            totals, rows = [], []
            for (_, p, _, si), w0 in zip(self._probe, self._before_w):
                g = p.grad
                per_row = _per_row(p, si)
                t, r = _step_sums(w0, local_values(p).detach(), None if g is None else local_values(g).detach(), per_row)
                if per_row and is_dtensor(p):
                    # This rank's rows, at their place among all the tensor's rows.
                    full = r.new_zeros(3, p.shape[0])
                    start = _row_offset(p)
                    full[:, start : start + r.shape[1]] = r
                    r = full
                totals.append(t)
                rows.append(r)
            return rows, torch.cat(totals + [r.reshape(-1) for r in rows if r is not None])

    def _write(self, rows: List[Optional[torch.Tensor]], flat: torch.Tensor) -> None:
        """The probe step's records from ``_sums``' vector (all ranks' under FSDP2), on rank 0."""
        groups = settings(self.optimizer)
        # One transfer to the host per probe step.
        host = flat.cpu().tolist()
        self._before_w = None
        if not self.active or self._broken:
            return
        new = []
        at = 5 * len(rows)
        for i, ((name, p, gi, si), r) in enumerate(zip(self._probe, rows)):
            ww, gg, wg, dd, wd = host[5 * i : 5 * i + 5]
            n = 0 if r is None else r.shape[1]
            rww, rdd, rwd = host[at : at + n], host[at + n : at + 2 * n], host[at + 2 * n : at + 3 * n]
            at += 3 * n
            if not all(math.isfinite(x) for x in (ww, gg, wg, dd, wd)):
                self._warn_once(f"nonfinite:{name}", f"{name} holds NaN or inf at step {self.steps}: the training diverged; its records are left out")
                continue
            g = groups[gi]
            rows_cols = (p.shape[0], p.numel() // max(p.shape[0], 1)) if p.ndim >= 2 else (1, max(p.numel(), 1))
            line = probe_line(self.steps, name, self._roles[name], p.ndim, si, (ww, gg, wg, dd, wd), (rww, rdd, rwd), g.step_settings(), self.channels, rows_cols)
            self._file.write(line + "\n")
            new.append(json.loads(line))
        # The first group's lr: the schedule the run reports (other groups may scale it).
        self._lrs.add(groups[0].lr)
        self.records += new
        self._file.flush()
        if self.writer is not None:
            self._send(new)

    def _send(self, records: List[Dict[str, Any]]) -> None:
        scalars = {}
        for r in records:
            for key in ("angle", "norm", "grad_norm", "eff_lr", "cos_wg", "pred_angle"):
                if r[key] is not None and math.isfinite(r[key]):
                    scalars[f"normwd/{r['path']}/{key}"] = r[key]
        if hasattr(self.writer, "add_scalar"):
            for tag, v in scalars.items():
                self.writer.add_scalar(tag, v, self.steps)
        else:
            self.writer.log(scalars, commit=False)

    def close(self) -> None:
        """Removes the hooks, closes the file and writes ``config.toml`` again with what the run
        showed (whether its lr changed). A closed Monitor measures nothing more; ``normwd report
        OUT`` (or ``normwd.report(OUT)``) draws its report."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self.active and not self._file.closed:
            try:
                self._file.close()
                self._write_config()
            except OSError as e:
                self._warn_once("close", f"could not finish writing {self.out} ({e}); the records written so far stay")

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _kind(optimizer: Any) -> str:
    """The optimizers' class names, ``Muon+AdamW`` for several."""
    return "+".join(type(o).__name__ for o in each(optimizer))


def check_every(every: Any) -> None:
    """Refuses a probe interval that is not an integer >= 1 (``True`` included), naming it.

    Example:
        >>> check_every(10)
    """
    if isinstance(every, bool) or not isinstance(every, int):
        raise TypeError(f"every={every!r}: expected an integer >= 1")
    if every < 1:
        raise ValueError(f"every={every!r}: expected an integer >= 1")


#: Elements taken at a time by the sums: their temporaries (the update, products) stay bounded.
_CHUNK = 1 << 22


def _per_row(p: torch.Tensor, scale_invariant: bool) -> bool:
    """Whether a probed tensor's output channels are measured one by one: scale-invariant
    weights with more than one."""
    return scale_invariant and p.ndim >= 2 and p.shape[0] > 1


def _row_offset(p: Any) -> int:
    """The first row of this rank's shard of DTensor ``p`` among all its rows."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return int(offset[0]) if offset else 0


def _step_sums(w0: torch.Tensor, w1: torch.Tensor, g: Optional[torch.Tensor], per_row: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One tensor's sums around a step, on its device: ``[<w,w>, <g,g>, <w,g>, <d,d>, <w,d>]``
    (float64) with the update ``d = w' - w`` and, ``per_row``, each output channel's
    ``[<w_r,w_r>, <d_r,d_r>, <w_r,d_r>]`` (``[3, rows]``, float64).

    In the weights' dtype (half precision upcast to float32 a chunk at a time), without a
    float64 copy: ``d`` is one rounding of a difference, exact for the close values a step
    leaves, and the reductions are pairwise (torch's cascade sums), so the angle taken from
    ``d`` keeps about 1e-6 of its own size at any size (tested against float64)."""
    rows = w0.shape[0] if per_row else 1
    x, y = w0.reshape(rows, -1), w1.reshape(rows, -1)
    gx = g.reshape(rows, -1) if g is not None else None
    width = x.shape[1]
    out_rows, gg, wg = [], w0.new_zeros((), dtype=torch.float64), w0.new_zeros((), dtype=torch.float64)
    step = max(1, _CHUNK // max(1, width))
    # Blocks of whole rows, or pieces of the one long row of a tensor summed as a whole.
    span = _CHUNK if rows == 1 else width
    for i in range(0, rows, step):
        for j in range(0, width, span):
            xc, yc = x[i : i + step, j : j + span], y[i : i + step, j : j + span]
            gc = gx[i : i + step, j : j + span] if gx is not None else None
            if xc.dtype in (torch.float16, torch.bfloat16):
                xc, yc = xc.float(), yc.float()
                gc = gc.float() if gc is not None else None
            d = yc - xc
            block = torch.stack([(xc * xc).sum(1), (d * d).sum(1), (xc * d).sum(1)]).double()
            out_rows.append(block)
            if gc is not None:
                gg += (gc * gc).sum().double()
                wg += (xc * gc).sum().double()
    per = torch.cat(out_rows, dim=1) if rows > 1 else torch.stack(out_rows).sum(0)
    ww, dd, wd = per.sum(1)
    totals = torch.stack([ww, gg, wg, dd, wd])
    return totals, (per if per_row else None)


def _group_info(g: Any) -> Dict[str, Any]:
    """A group's settings with the theory's equilibrium angle and relaxation time (steps)."""
    info: Dict[str, Any] = {"optimizer": g.kind, "lr": g.lr, "weight_decay": g.weight_decay, "momentum": g.momentum, "betas": g.betas}
    eq = g.equilibrium()
    if eq is not None:
        info.update(pred_angle=eq[0], relaxation_steps=eq[1])
    why = g.no_prediction()
    if why is not None:
        info.update(no_prediction=why)
    if g.corrected or g.cautious:
        info.update(corrected_weight_decay=g.corrected, cautious_weight_decay=g.cautious)
    return info


def _policy(report: Any) -> str:
    """The decay policy the groups follow (``decay_policy`` of the grouped tensors)."""
    return decay_policy((p.role, p.scale_invariant, (p.weight_decay or 0) > 0) for p in report.params if p.role != "buffer" and p.groups)
