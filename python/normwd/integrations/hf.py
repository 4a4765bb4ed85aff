"""A Hugging Face ``Trainer`` callback that runs ``normwd.torch.Monitor`` on the model and the
optimizer the Trainer built (rank 0 writes). By default it measures scale-invariance
on the first training batch (a transformer's QK-normed projections are found without help).

Example:
    >>> from normwd.integrations.hf import MonitorCallback
    >>> callback = MonitorCallback(out="runs/hf", every=10)
    >>> # transformers.Trainer(..., callbacks=[callback]).train()
"""

from typing import Any, Optional

from transformers import TrainerCallback

from ..torch import Monitor
from ._first_batch import FIRST_BATCH, FirstBatch, check


class MonitorCallback(TrainerCallback):
    """Measures the model's weights during ``train()`` into ``out``, in normwd's run format;
    ``every`` as for ``Monitor``. ``example_inputs``: ``"first-batch"`` (the default) measures
    scale-invariance on the first batch the model is called on, before the first optimizer
    step; None leaves it to the model's graph; anything else is given to ``Monitor`` as is."""

    def __init__(self, out: str, every: int = 10, example_inputs: Any = FIRST_BATCH):
        if isinstance(every, bool) or not isinstance(every, int):
            raise TypeError(f"every={every!r}: expected an integer >= 1")
        if every < 1:
            raise ValueError(f"every={every!r}: expected an integer >= 1")
        check(example_inputs)
        self.out, self.every, self.example_inputs = out, every, example_inputs
        self.monitor: Optional[Monitor] = None
        self._first: Optional[FirstBatch] = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        # On every process: the Monitor writes on rank 0 only, and under FSDP2 every rank must
        # take part in its sums.
        if model is None or optimizer is None:
            raise ValueError("MonitorCallback: the Trainer passed no model or optimizer to on_train_begin")
        given = None if self.example_inputs == FIRST_BATCH else self.example_inputs
        self.monitor = Monitor(model, optimizer, out=self.out, every=self.every, example_inputs=given, scheduler=lr_scheduler)
        if self.example_inputs == FIRST_BATCH:
            self._first = FirstBatch(model)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # The first batch has been through the model: measure on it before the first step.
        if self._first is not None and self.monitor is not None:
            first, self._first = self._first, None
            first.remove()
            if first.inputs() is not None:
                self.monitor.measure_invariance(first.inputs())

    def on_train_end(self, args, state, control, **kwargs):
        if self._first is not None:
            self._first.remove()
            self._first = None
        if self.monitor is not None:
            self.monitor.close()
