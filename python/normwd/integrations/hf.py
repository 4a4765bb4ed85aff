"""A Hugging Face ``Trainer`` callback that runs ``normwd.torch.Monitor`` on the model and the
optimizer the Trainer built, in the main process only.

Example:
    >>> from normwd.integrations.hf import MonitorCallback
    >>> callback = MonitorCallback(out="runs/hf", every=10)
    >>> # transformers.Trainer(..., callbacks=[callback]).train()
"""

from transformers import TrainerCallback

from ..torch import Monitor


class MonitorCallback(TrainerCallback):
    """Measures the model's weights during ``train()`` into ``out``, in normwd's run format;
    ``every`` as for ``Monitor``."""

    def __init__(self, out: str, every: int = 10):
        if isinstance(every, bool) or not isinstance(every, int):
            raise TypeError(f"every={every!r}: expected an integer >= 1")
        if every < 1:
            raise ValueError(f"every={every!r}: expected an integer >= 1")
        self.out, self.every = out, every
        self.monitor = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if model is None or optimizer is None:
            raise ValueError("MonitorCallback: the Trainer passed no model or optimizer to on_train_begin")
        self.monitor = Monitor(model, optimizer, out=self.out, every=self.every)

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
