"""A model's dataflow recorded from a forward pass it actually runs, for models ``torch.fx``
cannot trace (every Hugging Face model: data-dependent control flow, ``**kwargs``). A
``TorchFunctionMode`` sees each torch function and tensor method the forward pass calls; conv
and linear layers and normalization layers are kept as single ``call_module`` nodes (module
hooks mark their extent), as ``_structure``'s tracer keeps them. The result is a ``torch.fx``
graph in the form ``torch.fx`` would have built, so ``_structure`` reads both alike. It holds
the path the example inputs took, the one the training takes on batches like them."""

import operator
from typing import Any, Dict, List

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from ._roles import is_norm
from ._structure import is_producer

# Tensor methods the graph knows under the names ``torch.fx`` gives them.
_METHODS = {
    "__mul__": "mul",
    "__rmul__": "mul",
    "__imul__": "mul",
    "__truediv__": "div",
    "__itruediv__": "div",
    "__add__": "add",
    "__radd__": "add",
    "__iadd__": "add_",
    "__sub__": "sub",
    "__rsub__": "sub",
}


class Recorder(TorchFunctionMode):
    """Records the forward pass run inside it into ``graph`` (an ``fx.Graph``). ``names`` maps
    the ``id`` of each parameter tensor the pass uses to its name (``get_attr`` nodes)."""

    def __init__(self, model: nn.Module, names: Dict[int, str]):
        super().__init__()
        self.graph = fx.Graph()
        self.names = names
        self.nodes: Dict[int, fx.Node] = {}
        # Every tensor seen stays referenced until the pass ends, so no id is reused.
        self.keep: List[Any] = []
        self.inside = 0
        self.pending: List[Any] = []
        self.hooks = []
        for qualname, m in model.named_modules():
            if qualname and (is_producer(m) or is_norm(m)):
                self.hooks.append(m.register_forward_pre_hook(self._enter, with_kwargs=True))
                self.hooks.append(m.register_forward_hook(self._leave(qualname), with_kwargs=True))

    def __exit__(self, *exc: Any) -> Any:
        for h in self.hooks:
            h.remove()
        self.keep.clear()
        return super().__exit__(*exc)

    def _node(self, value: Any) -> Any:
        """The graph's argument for ``value``: a tensor's node (a new ``get_attr`` for a
        parameter, a ``placeholder`` for an input, buffer or constant), containers mapped."""
        if isinstance(value, torch.Tensor):
            node = self.nodes.get(id(value))
            if node is None:
                name = self.names.get(id(value))
                if name is not None:
                    node = self.graph.create_node("get_attr", name)
                else:
                    node = self.graph.create_node("placeholder", f"input_{len(self.nodes)}")
                self._bind(value, node)
            return node
        if isinstance(value, (list, tuple)):
            return type(value)(self._node(v) for v in value) if not hasattr(value, "_fields") else tuple(self._node(v) for v in value)
        if isinstance(value, dict):
            return {k: self._node(v) for k, v in value.items()}
        if value is None or isinstance(value, (bool, int, float, str, slice, torch.dtype, torch.device, torch.Size, type(Ellipsis))):
            return value
        return repr(value)

    def _bind(self, value: Any, node: fx.Node) -> None:
        self.keep.append(value)
        self.nodes[id(value)] = node
        # What the analysis may ask of a value (an empty past key-value cache concatenated
        # with the new values carries their scale).
        node.meta["numel"] = value.numel()

    def _outputs(self, out: Any, node: fx.Node) -> None:
        if isinstance(out, torch.Tensor):
            self._bind(out, node)
        elif isinstance(out, (list, tuple)):
            for i, v in enumerate(out):
                if isinstance(v, torch.Tensor):
                    self._bind(v, self.graph.create_node("call_function", operator.getitem, (node, i)))

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.inside or not _has_tensor(out):
            return out
        name = getattr(func, "__name__", "")
        a, k = self._node(tuple(args)), self._node(dict(kwargs))
        if name == "__getitem__":
            node = self.graph.create_node("call_function", operator.getitem, a, k)
        elif _is_method(func):
            node = self.graph.create_node("call_method", _METHODS.get(name, name), a, k)
        else:
            node = self.graph.create_node("call_function", func, a, k)
        self._outputs(out, node)
        return out

    def _enter(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if self.inside == 0:
            self.pending.append((self._node(tuple(args)), self._node(dict(kwargs))))
        self.inside += 1

    def _leave(self, qualname: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            self.inside -= 1
            if self.inside == 0:
                a, k = self.pending.pop()
                self._outputs(out, self.graph.create_node("call_module", qualname, a, k))

        return hook


def _has_tensor(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return True
    return isinstance(out, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in out)


def _is_method(func: Any) -> bool:
    """Whether ``func`` is a tensor method (``x.view``), which ``torch.fx`` records as
    ``call_method``; torch may hand over the method of ``torch.Tensor`` or of its C base."""
    name = getattr(func, "__name__", None)
    owners = (torch.Tensor, getattr(torch._C, "TensorBase", torch.Tensor))
    return name is not None and any(getattr(cls, name, None) is func for cls in owners)
