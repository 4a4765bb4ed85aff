"""A PyTorch Lightning callback that runs ``normwd.torch.Monitor`` on the module and its
optimizer, on the global rank 0 only.

Example:
    >>> from normwd.integrations.lightning import MonitorCallback
    >>> callback = MonitorCallback(out="runs/lightning", every=10)
    >>> # lightning.Trainer(callbacks=[callback], ...).fit(module, data)
"""

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

from ..torch import Monitor


class MonitorCallback(pl.Callback):
    """Measures the module's weights during ``fit`` (its first optimizer) into ``out``, in
    normwd's run format; ``every`` as for ``Monitor``."""

    def __init__(self, out: str, every: int = 10):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int):
            raise TypeError(f"every={every!r}: expected an integer >= 1")
        if every < 1:
            raise ValueError(f"every={every!r}: expected an integer >= 1")
        self.out, self.every = out, every
        self.monitor = None

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.global_rank != 0:
            return
        if not trainer.optimizers:
            raise ValueError("MonitorCallback: the trainer has no optimizer (configure_optimizers returned none)")
        self.monitor = Monitor(pl_module, trainer.optimizers[0], out=self.out, every=self.every)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.monitor is not None:
            self.monitor.close()
