"""What each tensor of a PyTorch model is (weight, bias, norm scale or shift, gain, embedding,
position/class token, buffer), read from the module that owns it."""

from typing import Dict, Iterator, Tuple

import torch
from torch import nn

from .. import _core

_NORMS: Tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer: one of PyTorch's, or a custom class named as
    one (``RMSNorm``, ``LayerNorm2d``) with no submodules and only 1-D parameters of its own,
    the form custom norms take.

    Example:
        >>> is_norm(torch.nn.BatchNorm2d(8)), is_norm(torch.nn.Linear(2, 2))
        (True, False)
    """
    if isinstance(module, _NORMS):
        return True
    if "norm" not in type(module).__name__.lower() or any(True for _ in module.children()):
        return False
    own = list(module.parameters(recurse=False))
    return bool(own) and all(p.ndim == 1 for p in own)


def is_dtensor(t: object) -> bool:
    """Whether ``t`` is a DTensor (FSDP2's sharded parameters), without importing
    ``torch.distributed.tensor`` where it is absent.

    Example:
        >>> is_dtensor(torch.zeros(2))
        False
    """
    return type(t).__name__ == "DTensor" and hasattr(t, "to_local")


def local_values(t: torch.Tensor) -> torch.Tensor:
    """A tensor's own values on this rank: its shard under FSDP2, else itself.

    Example:
        >>> x = torch.zeros(2)
        >>> local_values(x) is x
        True
    """
    return t.to_local() if is_dtensor(t) else t


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel and ``torch.compile`` wrappers,
    whose parameter names are the ones people know.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap(torch.nn.DataParallel(net)) is net
        True
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _role(module: nn.Module, local: str, tensor: torch.Tensor) -> str:
    if is_norm(module):
        return "norm-shift" if local in ("bias", "beta", "b", "shift") else "norm-scale"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    # Position embeddings and tokens, weight norm's gain, a state-space layer's dynamics: the
    # core's name lists.
    by_name = _core.role_from_name(local)
    if by_name is not None:
        return by_name
    if local.lower().endswith("bias"):
        return "bias"
    if tensor.ndim <= 1:
        return "gain"
    return "weight"


def roles(model: nn.Module) -> Dict[str, str]:
    """The role of every parameter and buffer of ``model``, by dotted name (the core's role
    names: ``weight``, ``bias``, ``norm-scale``, ``norm-shift``, ``gain``, ``embedding``,
    ``token``, ``dynamics``, ``buffer``).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
        >>> sorted(roles(net).items())[:3]
        [('0.bias', 'bias'), ('0.weight', 'weight'), ('1.bias', 'norm-shift')]
    """
    out: Dict[str, str] = {}
    for name, module, local, tensor, is_buffer in _named(model):
        out[name] = "buffer" if is_buffer else _role(module, local, tensor)
    return out


def _named(model: nn.Module) -> Iterator[Tuple[str, nn.Module, str, torch.Tensor, bool]]:
    """(dotted name, owning module, local name, tensor, is buffer) of every tensor, parameters
    shared by two modules (tied weights) once, under their first name."""
    seen = set()
    for mname, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{mname}.{local}" if mname else local), module, local, p, False
        for local, b in module.named_buffers(recurse=False):
            yield (f"{mname}.{local}" if mname else local), module, local, b, True
