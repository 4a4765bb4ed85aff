"""The first training batch, caught where the model is called, for the trainer callbacks'
``example_inputs="first-batch"``."""

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

#: The callbacks' default ``example_inputs``: the first batch the model is called on in training.
FIRST_BATCH = "first-batch"


def check(example_inputs: Any) -> None:
    """Refuses a string other than ``"first-batch"`` (a misspelling would be taken as inputs)."""
    if isinstance(example_inputs, str) and example_inputs != FIRST_BATCH:
        raise ValueError(f"example_inputs={example_inputs!r}: expected {FIRST_BATCH!r} (the default), None, or the inputs of one forward call")


class FirstBatch:
    """Holds the positional and keyword arguments of ``model``'s first call in training mode
    (the hook removes itself then); ``inputs`` gives them in ``audit``'s form."""

    def __init__(self, model: nn.Module):
        self.args: Optional[Tuple[Any, ...]] = None
        self.kwargs: Dict[str, Any] = {}
        self._hook = model.register_forward_pre_hook(self._catch, with_kwargs=True)

    def _catch(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if not module.training or self.args is not None:
            return
        detach = lambda x: x.detach() if isinstance(x, torch.Tensor) else x  # noqa: E731
        self.args = tuple(detach(a) for a in args)
        self.kwargs = {k: detach(v) for k, v in kwargs.items()}
        self.remove()

    def remove(self) -> None:
        """Removes the hook (idempotent)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def inputs(self) -> Any:
        """The caught call as ``example_inputs``: the keyword arguments when it had only those
        (a Hugging Face model's), else the positional ones (None before the first call)."""
        if self.args is None:
            return None
        if not self.args:
            return dict(self.kwargs)
        return self.args if len(self.args) > 1 else self.args[0]
