"""A Hugging Face ``Trainer`` callback that runs ``normwd.torch.Monitor`` on the model and the
optimizer the Trainer built (rank 0 writes). By default it measures scale-invariance
on the first training batch (a transformer's QK-normed projections are found without help).

Example:
    >>> from normwd.integrations.hf import MonitorCallback
    >>> callback = MonitorCallback(out="runs/hf", every=10)
    >>> # transformers.Trainer(..., callbacks=[callback]).train()
"""

from transformers import TrainerCallback

from ._first_batch import MonitorStart


class MonitorCallback(MonitorStart, TrainerCallback):
    """Measures the model's weights during ``train()`` into ``out``, in normwd's run format;
    ``every`` as for ``Monitor``. ``example_inputs``: ``"first-batch"`` (the default) measures
    scale-invariance on the first batch the model is called on, before the first optimizer
    step; None leaves it to the model's graph; anything else is given to ``Monitor`` as is
    (``MonitorStart``'s arguments)."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if model is None or optimizer is None:
            raise ValueError("MonitorCallback: the Trainer passed no model or optimizer to on_train_begin")
        self.begin(model, optimizer, lr_scheduler)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.before_step()

    def on_train_end(self, args, state, control, **kwargs):
        self.end()
