"""A PyTorch Lightning callback that runs ``normwd.torch.Monitor`` on the module and its
optimizer (the global rank 0 writes). By default it measures scale-invariance on the first
batch the module's ``forward`` is called on.

Example:
    >>> from normwd.integrations.lightning import MonitorCallback
    >>> callback = MonitorCallback(out="runs/lightning", every=10)
    >>> # lightning.Trainer(callbacks=[callback], ...).fit(module, data)
"""

from typing import Any, Optional

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

import torch

from ..torch import Monitor
from ._first_batch import FIRST_BATCH, FirstBatch, check


class MonitorCallback(pl.Callback):
    """Measures the module's weights during ``fit`` (its first optimizer) into ``out``, in
    normwd's run format; ``every`` as for ``Monitor``. ``example_inputs``: ``"first-batch"``
    (the default) measures scale-invariance on the first call in training of the module's
    ``forward`` (a ``training_step`` that calls ``self(x)``) or, where that is never called, of
    the child module that ``training_step`` calls (``self.model(x)``), before the first
    optimizer step. None leaves it to the graph; anything else is given to ``Monitor`` as is."""

    def __init__(self, out: str, every: int = 10, example_inputs: Any = FIRST_BATCH):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int):
            raise TypeError(f"every={every!r}: expected an integer >= 1")
        if every < 1:
            raise ValueError(f"every={every!r}: expected an integer >= 1")
        check(example_inputs)
        self.out, self.every, self.example_inputs = out, every, example_inputs
        self.monitor: Optional[Monitor] = None
        self._first: Optional[FirstBatch] = None

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # On every process: the Monitor writes on rank 0 only, and under FSDP2 every rank must
        # take part in its sums.
        if not trainer.optimizers:
            raise ValueError("MonitorCallback: the trainer has no optimizer (configure_optimizers returned none)")
        given = None if self.example_inputs == FIRST_BATCH else self.example_inputs
        configs = getattr(trainer, "lr_scheduler_configs", None) or []
        scheduler = configs[0].scheduler if configs else None
        self.monitor = Monitor(pl_module, trainer.optimizers[0], out=self.out, every=self.every, example_inputs=given, scheduler=scheduler)
        if self.example_inputs == FIRST_BATCH:
            self._first = FirstBatch(pl_module, parts=True)

    def on_before_optimizer_step(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer) -> None:
        # Called inside the step's closure, after the backward: the first batch has been through
        # forward; the Monitor's own hooks read the gradients after the step.
        if self._first is not None and self.monitor is not None:
            first, self._first = self._first, None
            first.remove()
            if first.inputs() is not None:
                self.monitor.measure_invariance(first.inputs(), submodule=first.submodule)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._first is not None:
            self._first.remove()
            self._first = None
        if self.monitor is not None:
            self.monitor.close()
