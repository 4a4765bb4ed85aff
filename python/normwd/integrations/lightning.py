"""A PyTorch Lightning callback that runs ``normwd.torch.Monitor`` on the module and its
optimizer (the global rank 0 writes). By default it measures scale-invariance on the first
batch the module's ``forward`` is called on.

Example:
    >>> from normwd.integrations.lightning import MonitorCallback
    >>> callback = MonitorCallback(out="runs/lightning", every=10)
    >>> # lightning.Trainer(callbacks=[callback], ...).fit(module, data)
"""

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

import torch

from ._first_batch import MonitorStart


class MonitorCallback(MonitorStart, pl.Callback):
    """Measures the module's weights during ``fit`` (under all its optimizers: Muon beside AdamW
    in a manual-optimization module is one run) into ``out``, in
    normwd's run format; ``every`` as for ``Monitor``. ``example_inputs``: ``"first-batch"``
    (the default) measures scale-invariance on the first call in training of the module's
    ``forward`` (a ``training_step`` that calls ``self(x)``) or, where that is never called, of
    the child module that ``training_step`` calls (``self.model(x)``), before the first
    optimizer step. None leaves it to the graph; anything else is given to ``Monitor`` as is
    (``MonitorStart``'s arguments)."""

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.optimizers:
            raise ValueError("MonitorCallback: the trainer has no optimizer (configure_optimizers returned none)")
        configs = getattr(trainer, "lr_scheduler_configs", None) or []
        opts = list(trainer.optimizers)
        self.begin(pl_module, opts[0] if len(opts) == 1 else opts, configs[0].scheduler if configs else None, parts=True)

    def on_before_optimizer_step(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer) -> None:
        # Called inside the step's closure, after the backward: the first batch has been through
        # forward; the Monitor's own hooks read the gradients after the step.
        self.before_step()

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.end()
