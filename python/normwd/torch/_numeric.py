"""Scale-invariance measured: rescale a weight (or each of its output channels, groups or
heads by its own factor) in a float64 copy of the model and compare the outputs on the user's
example inputs with those of a control, a random perturbation of the same size. Run in training
mode, so batch norm normalizes with the batch's statistics as it does when the gradient is
taken, with the same random numbers for every forward pass (dropout).

The control matters: a layer whose output the model barely uses (a ConvNeXt block behind its
1e-6 layer scale at initialization) changes the outputs by less than float32 can tell under
any perturbation, which an absolute threshold would read as invariance."""

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ._roles import is_norm

#: Largest change of the outputs under a rescale, relative to the change under the control,
#: still read as invariance: a norm's epsilon (1e-5 against activation variances of 1e-3 and up)
#: leaves ~1e-3 of it; a weight that is not invariant changes the outputs about as much either way.
TOLERANCE = 1e-2
#: The rescale factor (and the range of per-slice factors, [1/FACTOR, FACTOR]).
FACTOR = 1.25


@dataclass
class Numeric:
    """The measurement on one weight."""

    #: Outputs unchanged when the whole tensor is rescaled (with its bias where ``with_bias``).
    scale_invariant: bool
    #: The finest slicing whose slices can each be rescaled alone: ``channel``, ``group of N``,
    #: ``head of N``, ``tensor`` (empty when not invariant as a whole).
    granularity: str
    #: The outputs' change under the whole-tensor rescale, over their change under the control.
    change: float
    #: The outputs' relative change under the control (near 0: the model barely uses the weight).
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


def _change(a: List[torch.Tensor], b: List[torch.Tensor]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        scale = x.abs().max().item() + 1e-12
        worst = max(worst, (x - y).abs().max().item() / scale)
    return worst


class Probe:
    """A copy of ``model`` that runs ``example_inputs`` with the same random numbers each time."""

    def __init__(self, model: nn.Module, example_inputs: Any):
        self.model = copy.deepcopy(model).double()
        self.model.train()
        # A norm's epsilon is a numerical guard, not part of the function whose invariance is
        # asked about; over a small batch (batch norm on 1x1 maps of 2 images) it is not small
        # against the variance it is added to.
        for m in self.model.modules():
            if is_norm(m):
                for attr in ("eps", "variance_epsilon", "epsilon"):
                    if isinstance(getattr(m, attr, None), float):
                        setattr(m, attr, 1e-30)
        # Positional arguments (a tensor, a tuple or list of them) or keyword arguments (a dict,
        # such as a Hugging Face tokenizer's batch).
        as_double = lambda x: x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x  # noqa: E731
        if isinstance(example_inputs, Mapping):
            self.inputs: Tuple[Any, ...] = ()
            self.kwargs: Dict[str, Any] = {k: as_double(v) for k, v in example_inputs.items()}
        else:
            inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
            self.inputs, self.kwargs = tuple(as_double(x) for x in inputs), {}
        self.params = dict(self.model.named_parameters())
        # The CUDA generators the model draws from (dropout) are forked too, so the user's
        # random state is left as it was.
        self.devices = sorted({p.device.index or 0 for p in self.model.parameters() if p.is_cuda})
        self.base = self.run()
        if not self.base:
            raise ValueError("example_inputs: the model's output holds no floating-point tensor to compare")

    def run(self) -> List[torch.Tensor]:
        with torch.no_grad(), torch.random.fork_rng(devices=self.devices):
            torch.manual_seed(0)
            return [t.detach() for t in _tensors(self.model(*self.inputs, **self.kwargs))]

    def control(self, name: str, bias: Optional[str], rows: Optional[slice] = None, out_dim: int = 0) -> float:
        """The outputs' relative change when weight ``name`` (and ``bias``), or only their output
        channels ``rows``, move by random noise of ``FACTOR - 1`` times their norm: as large a
        step as the rescale, in a direction that changes the function."""
        gen = torch.Generator().manual_seed(1)
        saved = []
        try:
            with torch.no_grad():
                for n, dim in [(name, out_dim)] + ([(bias, 0)] if bias else []):
                    t = self.params[n]
                    saved.append((t, t.detach().clone()))
                    part = t if rows is None else t.narrow(dim, rows.start, rows.stop - rows.start)
                    noise = torch.randn(part.shape, generator=gen, dtype=torch.float64).to(t.device)
                    part.add_(noise * ((FACTOR - 1) * part.norm() / (noise.norm() + 1e-300)))
            return _change(self.base, self.run())
        finally:
            with torch.no_grad():
                for t, v in saved:
                    t.copy_(v)

    def change(self, name: str, bias: Optional[str], factors: Callable[[torch.Tensor], torch.Tensor], out_dim: int = 0) -> float:
        """The outputs' relative change when weight ``name`` (and ``bias``) are multiplied by
        ``factors(weight)``, one factor per output channel along ``out_dim``."""
        w = self.params[name]
        saved = [(w, w.detach().clone())]
        b = self.params.get(bias) if bias else None
        if b is not None:
            saved.append((b, b.detach().clone()))
        try:
            with torch.no_grad():
                f = factors(w).to(device=w.device, dtype=w.dtype)
                shape = [1] * w.ndim
                shape[out_dim] = -1
                w.mul_(f.reshape(shape))
                if b is not None:
                    b.mul_(f.reshape(-1))
            return _change(self.base, self.run())
        finally:
            with torch.no_grad():
                for t, v in saved:
                    t.copy_(v)


def _blocks(rows: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random factor in [1/FACTOR, FACTOR] per block of ``size`` rows."""
    n = (rows + size - 1) // size
    f = torch.exp((torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * torch.log(torch.tensor(FACTOR, dtype=torch.float64)))
    return f.repeat_interleave(size)[:rows]


def numeric(probe: Probe, name: str, bias: Optional[str], sizes: Sequence[Tuple[int, str]], slices: Optional[int] = None, out_dim: int = 0) -> Numeric:
    """Measures weight ``name``: the whole-tensor rescale against the control, then independent
    factors per block of each ``(size, label)`` in ``sizes`` (``(1, "channel")``, the structural
    granularity's), the finest invariant one named. Not invariant as a whole, each block of
    ``slices`` rows alone (a fused q/k/v projection's heads). Output channels lie along
    ``out_dim`` (1 for Hugging Face's transposed ``Conv1D``)."""
    w = probe.params[name]
    rows = w.shape[out_dim]
    gen = torch.Generator().manual_seed(0)
    control = probe.control(name, bias, None, out_dim)
    if control == 0.0:
        return Numeric(False, "", float("nan"), 0.0, [])
    ratio = lambda change: change / control  # noqa: E731
    whole = ratio(probe.change(name, bias, lambda t: torch.full((rows,), FACTOR, dtype=t.dtype), out_dim))
    if whole <= TOLERANCE:
        for size, label in sorted(set(sizes)):
            if size >= rows:
                continue
            f = _blocks(rows, size, gen)
            if ratio(probe.change(name, bias, lambda t: f, out_dim)) <= TOLERANCE:
                return Numeric(True, label, whole, control, [])
        return Numeric(True, "tensor", whole, control, [])
    rows_ok = []
    if slices and slices < rows and rows % slices == 0:
        for start in range(0, rows, slices):
            stop = start + slices

            def one(t: torch.Tensor, start: int = start, stop: int = stop) -> torch.Tensor:
                f = torch.ones(rows, dtype=t.dtype)
                f[start:stop] = FACTOR
                return f

            # The control moves the same rows: a slice the outputs barely use (attention logits
            # near 0 at initialization) is not thereby invariant.
            own = probe.control(name, bias, slice(start, stop), out_dim)
            if own > 0 and probe.change(name, bias, one, out_dim) / own <= TOLERANCE:
                rows_ok.append((start, stop))
    return Numeric(False, "", whole, control, rows_ok)
