"""What the trainer callbacks share: their settings checked when they are made, the Monitor
made at the start of training, and the first training batch, caught where the model is called,
for their ``example_inputs="first-batch"``."""

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..torch import Monitor
from ..torch._monitor import check_every

#: The callbacks' default ``example_inputs``: the first batch the model is called on in training.
FIRST_BATCH = "first-batch"


def check(example_inputs: Any) -> None:
    """Refuses a string other than ``"first-batch"`` (a misspelling would be taken as inputs)."""
    if isinstance(example_inputs, str) and example_inputs != FIRST_BATCH:
        raise ValueError(f"example_inputs={example_inputs!r}: expected {FIRST_BATCH!r} (the default), None, or the inputs of one forward call")


class FirstBatch:
    """Holds the positional and keyword arguments of the first call in training mode of
    ``model`` or, with ``parts``, of whichever of the model and its direct children with
    parameters is called first (the outermost: a LightningModule whose ``training_step`` calls
    ``self.model(x)`` is never called itself). The hooks remove themselves then; ``inputs`` gives
    the arguments in ``audit``'s form and ``submodule`` the name of the module they are for."""

    def __init__(self, model: nn.Module, parts: bool = False):
        self.args: Optional[Tuple[Any, ...]] = None
        self.kwargs: Dict[str, Any] = {}
        #: The called module's name in ``model`` (None: the model itself).
        self.submodule: Optional[str] = None
        modules = [("", model)]
        if parts:
            modules += [(n, m) for n, m in model.named_children() if next(m.parameters(), None) is not None]
        self._hooks: List[Any] = [m.register_forward_pre_hook(self._catch(name), with_kwargs=True) for name, m in modules]

    def _catch(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            if not module.training or self.args is not None:
                return
            detach = lambda x: x.detach() if isinstance(x, torch.Tensor) else x  # noqa: E731
            self.args = tuple(detach(a) for a in args)
            self.kwargs = {k: detach(v) for k, v in kwargs.items()}
            self.submodule = name or None
            self.remove()

        return hook

    def remove(self) -> None:
        """Removes the hooks (idempotent)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def inputs(self) -> Any:
        """The caught call as ``example_inputs``: the keyword arguments when it had only those
        (a Hugging Face model's), else the positional ones (None before the first call)."""
        if self.args is None:
            return None
        if not self.args:
            return dict(self.kwargs)
        return self.args if len(self.args) > 1 else self.args[0]


class MonitorStart:
    """The part of a trainer callback around its Monitor (``monitor``, made by ``begin`` at the
    start of training; None before): ``out`` and ``every`` as for ``Monitor``,
    ``example_inputs`` ``"first-batch"`` (caught by ``begin``, measured by ``before_step``),
    None, or the inputs themselves."""

    def __init__(self, out: str, every: int = 10, example_inputs: Any = FIRST_BATCH):
        check_every(every)
        check(example_inputs)
        self.out, self.every, self.example_inputs = out, every, example_inputs
        self.monitor: Optional[Monitor] = None
        self._first: Optional[FirstBatch] = None

    def begin(self, model: nn.Module, optimizer: Any, scheduler: Any, parts: bool = False) -> None:
        """Makes the Monitor (on every process: rank 0 writes, and under FSDP2 every rank takes
        part in its sums) and, by default, starts catching the first batch (``parts`` as for
        ``FirstBatch``)."""
        given = None if self.example_inputs == FIRST_BATCH else self.example_inputs
        self.monitor = Monitor(model, optimizer, out=self.out, every=self.every, example_inputs=given, scheduler=scheduler)
        if self.example_inputs == FIRST_BATCH:
            self._first = FirstBatch(model, parts=parts)

    def before_step(self) -> None:
        """Before the first optimizer step, the first batch has been through the model: the
        Monitor measures scale-invariance on it (once)."""
        if self._first is not None and self.monitor is not None:
            first, self._first = self._first, None
            first.remove()
            if first.inputs() is not None:
                self.monitor.measure_invariance(first.inputs(), submodule=first.submodule)

    def end(self) -> None:
        """Stops catching and closes the Monitor."""
        if self._first is not None:
            self._first.remove()
            self._first = None
        if self.monitor is not None:
            self.monitor.close()
