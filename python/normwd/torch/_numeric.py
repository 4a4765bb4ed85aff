"""Scale-invariance measured for every weight at once (F1a): when the outputs do not change as
a weight's rows are rescaled, the derivative of any function of the outputs along the weight
itself is zero, ``<grad, w> = 0``, per output channel, group or head for the slices that can be
rescaled alone. One forward pass on the user's example inputs and ``PROJECTIONS`` backward
passes, each of a random projection of the outputs, give every weight's gradient; each row's
``<g, w>`` is kept and the gradients dropped.

The derivative along ``w`` is compared with a control: the derivative, in expectation, along a
random direction of the same norm (``||g|| ||w|| / sqrt(n)``). A weight the model barely uses
(a ConvNeXt block behind its 1e-6 layer scale at initialization) has both small, and only their
ratio is read. The pass runs in training mode, so batch norm normalizes with the batch's
statistics as it does when the gradient is taken, on the model's own parameters (no copy of the
model; a float32 copy of half-precision ones), with its batch-norm buffers copied so their
running statistics are left as they were."""

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ._roles import is_norm
from ._structure import _PER_CHANNEL, out_dim

#: Largest derivative along the weight, relative to the control, still read as invariance: a
#: norm's epsilon and float32's rounding leave under 1e-4 of it; a weight that is not
#: invariant has a ratio of order one (below 1e-2 with probability about 1e-6 over the
#: projections).
TOLERANCE = 1e-2
#: Backward passes, each with its own random projection of the outputs: the ratio of a weight
#: that is not invariant falls under ``TOLERANCE`` by chance only when every projection misses.
PROJECTIONS = 3
#: The norms' epsilon during the pass: a numerical guard, not part of the function whose
#: invariance is asked about; over a small batch (batch norm on 1x1 maps of 2 images) the
#: default 1e-5 is not small against the variance it is added to.
EPS = 1e-12


@dataclass
class Numeric:
    """The measurement on one weight."""

    #: Outputs unchanged when the whole tensor is rescaled (with its bias where asked).
    scale_invariant: bool
    #: The finest slicing whose slices can each be rescaled alone: ``channel``, ``group of N``,
    #: ``head of N``, ``tensor`` (empty when not invariant as a whole).
    granularity: str
    #: The derivative along the whole tensor, over the control's.
    change: float
    #: The control's size: 0 when the outputs do not depend on the weight at these values,
    #: NaN when the pass gave no finite gradient for it.
    control: float
    #: For a weight invariant per slice but not as a whole (a fused q/k/v projection): the
    #: invariant row ranges, ``[(start, stop), ...]``.
    rows: List[Any]


def _tensors(out: Any) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    if hasattr(out, "to_tuple"):  # Hugging Face ModelOutput
        return _tensors(out.to_tuple())
    return []


@dataclass
class _Rows:
    """Per output row of one tensor: ``<g, w>`` and ``||g||^2`` for each projection, ``||w||^2``
    and the row's size; float64."""

    gw: torch.Tensor
    gg: torch.Tensor
    ww: torch.Tensor
    n: torch.Tensor

    def __add__(self, other: "_Rows") -> "_Rows":
        return _Rows(self.gw + other.gw, self.gg + other.gg, self.ww + other.ww, self.n + other.n)


def _rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.detach().movedim(dim, 0).reshape(t.shape[dim], -1)


@contextlib.contextmanager
def _measuring(model: nn.Module) -> Iterator[None]:
    """Training mode and a negligible epsilon in every norm for the pass, then the model as it was."""
    modes = [(m, m.training) for m in model.modules()]
    eps = []
    for m in model.modules():
        if is_norm(m):
            for attr in ("eps", "variance_epsilon", "epsilon"):
                if isinstance(getattr(m, attr, None), float):
                    eps.append((m, attr, getattr(m, attr)))
                    setattr(m, attr, EPS)
    try:
        model.train()
        yield
    finally:
        for m, attr, v in eps:
            setattr(m, attr, v)
        for m, training in modes:
            m.training = training


def _no_autocast() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for device in ("cpu", "cuda"):
        if device == "cpu" or torch.cuda.is_available():
            stack.enter_context(torch.autocast(device_type=device, enabled=False))
    return stack


class Measurement:
    """One forward and ``PROJECTIONS`` backward passes of ``model`` on ``example_inputs`` (the
    positional arguments of a call, or a dict of keyword arguments such as a tokenizer's batch),
    with each weight's per-row sums kept. ``record`` also records the operations the forward
    pass ran (``graph``, see ``_record``), for models ``torch.fx`` cannot trace."""

    def __init__(self, model: nn.Module, example_inputs: Any, record: bool = False):
        named = dict(model.named_parameters())
        low = {torch.float16, torch.bfloat16}
        compute = {n: torch.float32 if p.dtype in low else p.dtype for n, p in named.items()}
        dtype = next((d for d in compute.values() if d.is_floating_point), torch.float32)
        cast = lambda x: x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x  # noqa: E731
        if isinstance(example_inputs, Mapping):
            args: Tuple[Any, ...] = ()
            kwargs: Dict[str, Any] = {k: cast(v) for k, v in example_inputs.items()}
        else:
            inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
            args, kwargs = tuple(cast(x) for x in inputs), {}
        # The model's own parameters (a float32 copy of half-precision ones) as leaves of this
        # pass only; the user's .grad is not touched.
        params = {n: p.detach().to(compute[n]).requires_grad_(p.is_floating_point()) for n, p in named.items()}
        # Norms' buffers copied (training mode updates running statistics), half-precision
        # ones in float32 as the parameters.
        buffers = {}
        for prefix, m in model.named_modules():
            for b, t in m.named_buffers(recurse=False):
                if t.dtype in low:
                    buffers[f"{prefix}.{b}" if prefix else b] = t.float()
                elif is_norm(m):
                    buffers[f"{prefix}.{b}" if prefix else b] = t.clone()
        self.graph = None
        #: Batch/instance norms that normalized at most 2 values per channel in the pass (batch
        #: norm on 1x1 maps of 2 images): their outputs are +-1 whatever feeds them, so the
        #: gradients of the weights before them are rounding noise. Name -> values per channel.
        self.degenerate: Dict[str, int] = {}
        hooks = [m.register_forward_hook(self._count(n)) for n, m in model.named_modules() if isinstance(m, _PER_CHANNEL)]
        devices = sorted({p.device.index or 0 for p in named.values() if p.is_cuda})
        with _measuring(model), torch.random.fork_rng(devices=devices), _no_autocast(), torch.enable_grad():
            torch.manual_seed(0)
            recorder = None
            if record:
                from ._record import Recorder

                recorder = Recorder(model, {id(t): n for n, t in params.items()})
            with recorder if recorder is not None else contextlib.nullcontext():
                out = torch.func.functional_call(model, {**params, **buffers}, args, kwargs, strict=False)
            for h in hooks:
                h.remove()
            if recorder is not None:
                self.graph = recorder.graph
            outputs = [t for t in _tensors(out) if t.requires_grad]
            if not _tensors(out):
                raise ValueError("example_inputs: the model's output holds no floating-point tensor to compare")
            if not outputs:
                raise ValueError("example_inputs: the model's outputs do not depend on its parameters on these inputs")
            self.sums = self._backward(model, params, outputs)

    def rename(self, prefix: str) -> None:
        """Names the sums and norms as the whole model does, for a part measured on its own
        inputs (``prefix`` the part's name and a dot; the recorded graph keeps the part's)."""
        if prefix:
            self.sums = {prefix + k: v for k, v in self.sums.items()}
            self.degenerate = {prefix + k: v for k, v in self.degenerate.items()}

    def _count(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.ndim >= 2:
                per = x.numel() // x.shape[1] // (1 if isinstance(module, nn.modules.batchnorm._BatchNorm) else x.shape[0])
                if per <= 2:
                    self.degenerate[name] = per

        return hook

    def _backward(self, model: nn.Module, params: Dict[str, torch.Tensor], outputs: List[torch.Tensor]) -> Dict[str, _Rows]:
        dims: Dict[str, int] = {}
        for prefix, m in model.named_modules():
            for local, p in m.named_parameters(recurse=False):
                name = f"{prefix}.{local}" if prefix else local
                if name in params and p.ndim >= 2:
                    dims[name] = out_dim(m)
        # Each weight's bias, rescaled with it where it is invariant only together with it.
        for name in list(dims):
            if name.endswith(".weight") and name[: -len("weight")] + "bias" in params:
                bias = name[: -len("weight")] + "bias"
                if params[bias].ndim == 1 and params[bias].shape[0] == params[name].shape[dims[name]]:
                    dims[bias] = 0
        names = [n for n in dims if params[n].requires_grad]
        gen = torch.Generator().manual_seed(0)
        per: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
        ww: Dict[str, torch.Tensor] = {}
        for k in range(PROJECTIONS):
            projections = [(torch.randn(t.shape, generator=gen, dtype=torch.float64) / math.sqrt(t.numel())).to(t.device, t.dtype) for t in outputs]
            grads = torch.autograd.grad(outputs, [params[n] for n in names], projections, retain_graph=k + 1 < PROJECTIONS, allow_unused=True)
            for n, g in zip(names, grads):
                w = _rows(params[n], dims[n]) if params[n].ndim > 1 else params[n].detach().reshape(-1, 1)
                if g is None:
                    g = torch.zeros_like(w)
                else:
                    g = _rows(g, dims[n]) if g.ndim > 1 else g.reshape(-1, 1)
                per[n].append(((g * w).sum(1, dtype=torch.float64), (g * g).sum(1, dtype=torch.float64)))
                if k == 0:
                    ww[n] = (w * w).sum(1, dtype=torch.float64).cpu()
            del grads
        out = {}
        for n in names:
            gw = torch.stack([a for a, _ in per[n]]).cpu()
            gg = torch.stack([b for _, b in per[n]]).cpu()
            width = params[n].numel() // ww[n].shape[0]
            out[n] = _Rows(gw, gg, ww[n], torch.full_like(ww[n], width))
        return out

    def numeric(self, name: str, bias: Optional[str], sizes: Sequence[Tuple[int, str]], slices: Optional[int] = None) -> Numeric:
        """Weight ``name`` (rescaled with ``bias`` where given): the whole tensor against the
        control, then independent random signs per block of each ``(size, label)`` in ``sizes``
        (``(1, "channel")``, the structural granularity's), the finest invariant one named. Not
        invariant as a whole, each block of ``slices`` rows alone (a fused q/k/v projection's
        heads)."""
        s = self.sums.get(name)
        if s is None:
            return Numeric(False, "", float("nan"), float("nan"), [])
        if bias is not None and bias in self.sums:
            s = s + self.sums[bias]
        rows = s.ww.shape[0]
        control = _control(s, slice(0, rows))
        if not math.isfinite(control) or not bool(torch.isfinite(s.gw).all()):
            return Numeric(False, "", float("nan"), float("nan"), [])
        if control == 0.0:
            return Numeric(False, "", float("nan"), 0.0, [])
        whole = _along(s, torch.ones(rows, dtype=torch.float64), slice(0, rows)) / control
        if whole <= TOLERANCE:
            gen = torch.Generator().manual_seed(0)
            for size, label in sorted(set(sizes)):
                if size >= rows:
                    continue
                signs = (torch.randint(0, 2, ((rows + size - 1) // size,), generator=gen, dtype=torch.float64) * 2 - 1).repeat_interleave(size)[:rows]
                if _along(s, signs, slice(0, rows)) / control <= TOLERANCE:
                    return Numeric(True, label, whole, control, [])
            return Numeric(True, "tensor", whole, control, [])
        invariant_rows = []
        if slices and slices < rows and rows % slices == 0:
            for start in range(0, rows, slices):
                part = slice(start, start + slices)
                # Against the same rows' own control: a slice the outputs barely use (attention
                # logits near 0 at initialization) is compared with what it does use.
                own = _control(s, part)
                if own > 0 and _along(s, torch.ones(rows, dtype=torch.float64), part) / own <= TOLERANCE:
                    invariant_rows.append((start, start + slices))
        return Numeric(False, "", whole, control, invariant_rows)


def _control(s: _Rows, part: slice) -> float:
    """The derivative's root mean square over the projections, in expectation, along a random
    direction with the norm of rows ``part``: ``||g|| ||w|| / sqrt(n)``."""
    gg = s.gg[:, part].sum(1)
    ww = s.ww[part].sum()
    n = s.n[part].sum()
    return float(torch.sqrt(gg.mean() * ww / n))


def _along(s: _Rows, coefficients: torch.Tensor, part: slice) -> float:
    """The derivative's root mean square over the projections along the rows ``part`` of the
    tensor, each row scaled by its coefficient (+-1)."""
    d = (s.gw[:, part] * coefficients[part]).sum(1)
    return float(torch.sqrt((d * d).mean()))
