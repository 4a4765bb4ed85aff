"""Scale-invariance read from the model's graph (``torch.fx``): a weight is scale-invariant
when everything its layer computes reaches normalization layers through operations that carry
a positive scale unchanged (reshapes, ReLU, pooling, dropout, multiplication by a constant,
layers without bias), and nothing of it leaks elsewhere (a residual sum, the output)."""

import operator
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from ._roles import is_norm

_PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_HOMOGENEOUS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
)
_NONLINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)
_HOMOGENEOUS_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.leaky_relu,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.dropout,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
}
_RESHAPE_METHODS = {"view", "reshape", "permute", "transpose", "flatten", "contiguous", "squeeze", "unsqueeze", "unflatten", "relu", "relu_", "clone"}
# Casts and views that carry a value unchanged but for its dtype or shape (a recorded forward
# pass shows them where ``torch.fx`` would too).
_RESHAPE_METHODS |= {"to", "float", "double", "half", "bfloat16", "type", "type_as", "expand", "narrow", "select", "view_as", "reshape_as"}
_SPLITS = {"unbind", "chunk", "split", "tensor_split"}
# Norms whose mean removal per channel also removes the layer's bias (per-channel constant).
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass
class Structural:
    """The graph's verdict on one weight."""

    scale_invariant: bool
    #: ``channel``, ``group of N``, ``head of N`` or ``tensor`` (empty when not invariant).
    granularity: str
    #: The norm layers its output reaches.
    norms: Tuple[str, ...]
    #: Invariant only with its bias rescaled too (a bias the norm does not remove).
    with_bias: bool
    #: Part of its output reaches norms and part does not, after a split (a fused q/k/v
    #: projection under QK-norm): invariant per slice, not as a whole.
    partial: bool
    #: Why, in words.
    why: str
    #: The rows rescaled together under ``group of N`` / ``head of N`` (N), else None.
    slice_size: Optional[int] = None


def is_producer(module: nn.Module) -> bool:
    """Whether ``module`` is a layer whose weight the analysis follows: a conv or linear layer,
    or Hugging Face's ``Conv1D`` (GPT-2's linear layer, its weight stored transposed).

    Example:
        >>> is_producer(torch.nn.Conv2d(3, 8, 3)), is_producer(torch.nn.ReLU())
        (True, False)
    """
    return isinstance(module, _PRODUCERS) or (type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor))


def out_dim(module: nn.Module) -> int:
    """The dimension of a layer's weight that holds its output channels: 1 for Hugging Face's
    ``Conv1D`` (GPT-2), which stores the weight transposed, else 0.

    Example:
        >>> out_dim(torch.nn.Linear(2, 3))
        0
    """
    return 1 if type(module).__name__ == "Conv1D" else 0


class _Tracer(fx.Tracer):
    """Keeps norm layers, PyTorch's and custom ones, as single nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_norm(m) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> Tuple[Optional[fx.GraphModule], Optional[str]]:
    """The model's graph, or why ``torch.fx`` cannot trace it.

    Example:
        >>> g, why = trace(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        >>> why is None
        True
    """
    try:
        graph = _Tracer().trace(model)
        return fx.GraphModule(model, graph), None
    except Exception as e:  # fx raises many types on data-dependent control flow
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def trace_parts(model: nn.Module, prefix: str = "") -> Tuple[List[Tuple[str, nn.Module, fx.GraphModule]], List[Tuple[str, str]]]:
    """The model's graph, or when it cannot be traced (data-dependent control flow, no
    ``forward`` of its own as in a LightningModule), the graphs of its largest traceable parts:
    ``[(name prefix, part, graph)]``, and ``[(part, why)]`` for each that failed. A part's graph
    sees only what happens inside it, so a layer whose output leaves it reads as leaking.

    Example:
        >>> parts, failed = trace_parts(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        >>> [p for p, _, _ in parts], failed
        ([''], [])
    """
    graph, why = trace(model)
    if graph is not None:
        return [(prefix, model, graph)], []
    parts: List[Tuple[str, nn.Module, fx.GraphModule]] = []
    failed = [(prefix.rstrip(".") or "the model", why or "")]
    for name, child in model.named_children():
        if next(child.parameters(), None) is None:
            continue
        p, f = trace_parts(child, f"{prefix}{name}.")
        parts += p
        failed += f
    return parts, failed


def _tensor_args(node: fx.Node) -> List[fx.Node]:
    return [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, fx.Node)]


def _norm_of(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[Tuple[str, Any]]:
    if node.op == "call_module" and is_norm(modules[node.target]):
        return node.target, modules[node.target]
    if node.op == "call_function" and node.target in (F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm) + ((F.rms_norm,) if hasattr(F, "rms_norm") else ()):
        return node.name, node.target
    return None


def _descendants(node: fx.Node, modules: Dict[str, nn.Module]) -> Set[fx.Node]:
    """Every node computed from ``node`` up to the norms: what a rescale of it can reach (a
    norm's output does not carry it)."""
    out: Set[fx.Node] = set()
    frontier = [node]
    while frontier:
        for user in frontier.pop().users:
            if user not in out:
                out.add(user)
                if _norm_of(user, modules) is None:
                    frontier.append(user)
    return out


def _linear_in(node: fx.Node, src: fx.Node, reached: Set[fx.Node]) -> bool:
    """Whether ``node`` is linear in ``src`` through a product with values the rescale does not
    reach: ``x * y`` and ``x / y`` (a gate, an attention mask), ``a @ x`` (attention weights
    times the values), and attention itself in its values (softmax weights from queries and
    keys the rescale does not reach: OLMo2's v_proj under its post-norm)."""
    args = list(node.args) + list(node.kwargs.values())
    unreached = lambda xs: all(not isinstance(x, fx.Node) or (x is not src and x not in reached) for x in xs)  # noqa: E731
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    if name in ("mul", "__mul__", "__rmul__", "mul_", "matmul", "__matmul__", "bmm") or target in (torch.mul, torch.matmul, torch.bmm, operator.mul, operator.matmul):
        return sum(1 for a in args if a is src) == 1 and unreached([a for a in args if a is not src])
    if name in ("div", "__truediv__", "div_") or target in (torch.div, operator.truediv):
        return bool(node.args) and node.args[0] is src and unreached(args[1:])
    if target in (torch.cat, torch.concat) and node.args and isinstance(node.args[0], (list, tuple)) and src in node.args[0]:
        # Beside empty tensors only (a recorded pass knows their sizes): an empty key-value
        # cache that the new values are appended to.
        return all(x is src or (isinstance(x, fx.Node) and x.meta.get("numel") == 0) for x in node.args[0])
    if target is F.scaled_dot_product_attention:
        value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value")
        return value is src and unreached([a for a in args if a is not src])
    return False


def _carries(node: fx.Node, src: fx.Node, modules: Dict[str, nn.Module], reached: Set[fx.Node]) -> Optional[str]:
    """How ``node`` carries a positive scale of its input ``src``: ``linear`` (reshapes,
    splits, constant factors, products with values the rescale does not reach, given the
    nodes it does reach), ``nonlinear`` (ReLU, max pooling: positively homogeneous, but not
    affine), or None (it mixes the scaled value with something else)."""
    if node.op in ("call_function", "call_method") and _linear_in(node, src, reached):
        return "linear"
    others = [a for a in _tensor_args(node) if a is not src]
    if node.op == "call_module":
        m = modules[node.target]
        # A layer without bias is linear: a scale passes through it to whatever norm follows.
        if is_producer(m) and getattr(m, "bias", None) is None and not others:
            return "linear"
        if isinstance(m, _HOMOGENEOUS_MODULES) and not others:
            return "nonlinear" if isinstance(m, _NONLINEAR) else "linear"
        return None
    first = node.args[0] if node.args else None
    if node.op == "call_method":
        # The other arguments of a reshape or split are sizes and dimensions, not tensors.
        if node.target in _RESHAPE_METHODS | _SPLITS and first is src:
            return "nonlinear" if node.target.startswith("relu") else "linear"
        if node.target in ("mul", "div", "__mul__", "__truediv__") and not others:
            return "linear"
        return None
    if node.op == "call_function":
        if node.target is operator.getitem and first is src:
            return "linear"
        if node.target in (torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze) and first is src:
            return "linear"
        if node.target in _HOMOGENEOUS_FUNCTIONS and not others:
            return "nonlinear" if node.target in (F.relu, torch.relu, F.leaky_relu, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool2d) else "linear"
        if node.target in (torch.unbind, torch.chunk, torch.split) and first is src:
            return "linear"
        if node.target in (operator.mul, operator.truediv, torch.mul) and not others:
            # A product with a Python number: positive factors only keep the sign.
            consts = [a for a in node.args if isinstance(a, (int, float))]
            return "linear" if consts and all(c > 0 for c in consts) else None
    return None


def norm_width(norm: Any) -> Optional[int]:
    """How many features a norm layer normalizes together: its ``normalized_shape``, else the
    size of its 1-D scale (a custom RMSNorm); None for a function or a norm without either.

    Example:
        >>> norm_width(torch.nn.LayerNorm(64)), norm_width(torch.nn.functional.layer_norm)
        (64, None)
    """
    shape = getattr(norm, "normalized_shape", None)
    if shape:
        return int(torch.tensor(shape).prod())
    w = getattr(norm, "weight", None)
    return w.numel() if isinstance(w, torch.Tensor) and w.ndim == 1 else None


def _granularity(norm: Any, rows: int, split: bool, mixed: bool) -> Tuple[str, Optional[int]]:
    """The granularity's label and, for groups and heads, the rows rescaled together
    (``mixed``: another layer lies between, whose outputs mix the rows)."""
    if isinstance(norm, _PER_CHANNEL) or norm in (F.batch_norm, F.instance_norm):
        return "channel", None
    if isinstance(norm, nn.GroupNorm):
        size = norm.num_channels // norm.num_groups
        return f"group of {size}", size
    size = norm_width(norm)
    # A norm narrower than the layer's output normalizes slices of it (QK-norm over each head,
    # after a split or a view into heads).
    if size and size < rows and not mixed and (split or rows % size == 0):
        return f"head of {size}", size
    return "tensor", None


def structural(model: nn.Module, graph: fx.Graph) -> Dict[str, Structural]:
    """The verdict of ``graph`` (from [`trace`]'s graph module, or recorded from a forward
    pass) on every conv/linear weight of ``model``."""
    modules = dict(model.named_modules())
    out: Dict[str, Structural] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not is_producer(modules.get(node.target, nn.Identity())):
            continue
        layer = modules[node.target]
        rows = layer.weight.shape[out_dim(layer)]
        norms: List[Tuple[str, Any]] = []
        leaks: List[str] = []
        nonlinear = False
        split = False
        mixed = False
        frontier = [node]
        seen: Set[fx.Node] = set()
        reached = _descendants(node, modules)
        while frontier:
            cur = frontier.pop()
            for user in cur.users:
                if user in seen:
                    continue
                seen.add(user)
                norm = _norm_of(user, modules)
                if norm is not None and user.args and user.args[0] is cur:
                    norms.append(norm)
                    continue
                how = _carries(user, cur, modules, reached)
                if how is None:
                    leaks.append(user.name)
                    continue
                nonlinear |= how == "nonlinear"
                mixed |= user.op == "call_module" and is_producer(modules[user.target])
                split |= user.op in ("call_method", "call_function") and (user.target in _SPLITS or user.target in (torch.unbind, torch.chunk, torch.split, operator.getitem))
                frontier.append(user)
        key = f"{node.target}.weight"
        names = tuple(dict.fromkeys(n for n, _ in norms))
        if not norms:
            out[key] = Structural(False, "", (), False, False, "its output reaches no normalization layer")
            continue
        has_bias = getattr(layer, "bias", None) is not None
        removes_bias = all(isinstance(n, _PER_CHANNEL) or n in (F.batch_norm, F.instance_norm) for _, n in norms) and not nonlinear
        with_bias = has_bias and not removes_bias
        gran, size = _granularity(norms[0][1], rows, split, mixed)
        if leaks:
            if split:
                why = f"part of its output reaches {', '.join(names)} ({gran}), the rest goes on without a norm ({leaks[0]}): invariant per slice, not as a whole"
                out[key] = Structural(False, gran, names, with_bias, True, why, size)
            else:
                out[key] = Structural(False, "", names, with_bias, False, f"its output reaches {', '.join(names)} but also {leaks[0]}, which a rescale changes")
            continue
        why = f"its output reaches only {', '.join(names)}" + (" (with its bias: the norm does not remove it)" if with_bias else "")
        out[key] = Structural(True, gran, names, with_bias, False, why, size)
    return out


def added_to_activations(graph: fx.Graph) -> Set[str]:
    """The parameters the graph reads directly (not through a layer) and adds to activations,
    after any slicing or reshaping (``self.pos[:T]``): learned position embeddings and tokens,
    whatever their name."""
    passes = {"view", "reshape", "expand", "expand_as", "unsqueeze", "squeeze", "to", "type_as", "contiguous", "repeat", "flatten", "transpose", "permute"}
    out: Set[str] = set()
    for node in graph.nodes:
        if node.op != "get_attr":
            continue
        frontier, seen = [node], set()
        while frontier and str(node.target) not in out:
            cur = frontier.pop()
            for user in cur.users:
                if user in seen:
                    continue
                seen.add(user)
                adds = user.op == "call_function" and user.target in (operator.add, operator.iadd, torch.add)
                adds |= user.op == "call_method" and user.target in ("add", "add_", "__add__", "__radd__")
                if adds:
                    out.add(str(node.target))
                elif (user.op == "call_function" and user.target is operator.getitem) or (user.op == "call_method" and user.target in passes):
                    if user.args and user.args[0] is cur:
                        frontier.append(user)
    return out


def output_layer(model: nn.Module, graph: fx.Graph) -> Optional[str]:
    """The layer that produces the model's output: the last conv or linear layer the forward
    pass runs, where its result reaches the output through no other such layer (the head that
    Muon's recipes leave to AdamW); None where the last one does not (a model that ends in a
    norm, or returns features)."""
    modules = dict(model.named_modules())
    producers = [n for n in graph.nodes if n.op == "call_module" and is_producer(modules.get(str(n.target), nn.Identity()))]
    if not producers:
        return None
    last = producers[-1]
    frontier, seen = [last], set()
    while frontier:
        for user in frontier.pop().users:
            if user.op == "output":
                return str(last.target)
            if user in seen:
                continue
            seen.add(user)
            frontier.append(user)
    return None
