"""``audit``: every tensor of a model with its role, scale-invariance (from the graph and, given
example inputs, measured), the optimizer group holding it, and the mistakes in its setup."""

import dataclasses
import math
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .. import _core
from .._audit import Audit, Mistake, ParamAudit
from . import _numeric, _optimizer, _structure
from ._roles import _named, _role, is_dtensor, is_norm, local_values, unwrap


def _weight_norm_direction(model: nn.Module, name: str) -> bool:
    if name.endswith(".weight_v"):
        return True
    if name.endswith("parametrizations.weight.original1"):
        plist = model.get_submodule(name[: -len(".original1")])
        return type(plist[0]).__name__ == "_WeightNorm"
    return False


def audit(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, example_inputs: Any = None, trace: bool = True, submodule: Optional[str] = None) -> Audit:
    """Audits ``model`` (DDP and ``torch.compile`` wrappers are looked through) and, given
    ``optimizer``, the groups that train it.

    Scale-invariance is read from the model's graph (``torch.fx``'s, or where it cannot trace
    the model, the forward pass on ``example_inputs`` recorded) and, given ``example_inputs``
    (the positional arguments of one forward call or a dict of keyword arguments, a batch of at
    least 2 for batch norm), measured for all weights at once: each one's derivative along
    itself, ``<grad, w>`` per slice, against that along a random direction, from one forward
    and three backward passes; the measurement decides, and a disagreement is said in the
    tensor's note. ``submodule`` names the part of ``model`` that ``example_inputs`` are the
    inputs of, where the training does not call the model itself (a LightningModule whose
    ``training_step`` calls ``self.model(x)``). Mistakes (norm layers, biases or embeddings
    decayed, scale-invariant weights without decay or under L2 in an adaptive optimizer, a
    parameter in no group or in two) are decided by normwd's core.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.LazyLinear(10))
        >>> _ = net(torch.randn(2, 3, 8, 8))
        >>> report = audit(net, torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=5e-4), torch.randn(4, 3, 8, 8))
        >>> report["0.weight"].scale_invariant, report["0.weight"].granularity
        (True, 'channel')
        >>> sorted({m.code for m in report.mistakes})
        ['bias-decayed', 'norm-decayed']
    """
    if not isinstance(model, nn.Module):
        hint = " (the model comes first: audit(model, optimizer))" if isinstance(model, torch.optim.Optimizer) else ""
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}{hint}")
    if optimizer is not None and isinstance(optimizer, nn.Module):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__} (the model comes first: audit(model, optimizer))")
    model = unwrap(model)
    sharded = any(is_dtensor(t) for t in model.parameters())
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        # Under FSDP2 each rank checks its own shard (a DTensor's reduction is a collective).
        t = local_values(t)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"model: {name} holds {bad} NaN/inf values of {t.numel()}: the model has diverged or was loaded from a broken checkpoint")
    target, prefix = model, ""
    if submodule is not None:
        if not isinstance(submodule, str):
            raise TypeError(f"submodule: expected a submodule's name (str), got {type(submodule).__name__}")
        try:
            target = model.get_submodule(submodule)
        except AttributeError as e:
            raise ValueError(f"submodule={submodule!r}: {type(model).__name__} has no such submodule (expected a name from model.named_modules())") from e
        prefix = f"{submodule}." if submodule else ""
    notes: List[str] = []
    graph_verdicts: Dict[str, _structure.Structural] = {}
    head: Optional[str] = None
    traced = False
    added: set = set()
    whole, why_not = _structure.trace(model) if trace else (None, None)
    # Where the inputs are a part's, that part's own graph serves when the model has none.
    part_graph = _structure.trace(target)[0] if trace and whole is None and target is not model else None
    probe = None
    if example_inputs is not None and sharded:
        notes.append("the parameters are sharded (FSDP2 DTensors): scale-invariance is not measured on example_inputs, the graph's verdicts stand")
        example_inputs = None
    if example_inputs is not None:
        # Where torch.fx cannot trace the model, the forward pass the measurement runs is
        # recorded instead; should recording fail, the pass is run again without it.
        record = trace and whole is None and part_graph is None
        for attempt in [True, False] if record else [False]:
            try:
                probe = _numeric.Measurement(target, example_inputs, record=attempt)
                probe.rename(prefix)
                break
            except Exception as e:
                if isinstance(e, ValueError) and str(e).startswith("example_inputs:"):
                    raise
                if attempt:
                    notes.append(f"the forward pass could not be recorded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
                    continue
                raise ValueError(f"example_inputs: the model's forward and backward pass on them raised {type(e).__name__}: {e}") from e
    if whole is not None:
        graph_verdicts = _structure.structural(model, whole.graph)
        added = _structure.added_to_activations(whole.graph)
        head = _structure.output_layer(model, whole.graph)
        traced = True
    elif probe is not None and (probe.graph is not None or part_graph is not None):
        graph = probe.graph if probe.graph is not None else part_graph.graph
        graph_verdicts = _prefixed(_structure.structural(target, graph), prefix)
        added = {prefix + k for k in _structure.added_to_activations(graph)}
        layer = _structure.output_layer(target, graph)
        head = None if layer is None else prefix + layer
        traced = target is model
    elif trace:
        parts, failed = _structure.trace_parts(model)
        for at, part, g in parts:
            graph_verdicts.update(_prefixed(_structure.structural(part, g.graph), at))
            added |= {at + k for k in _structure.added_to_activations(g.graph)}
        where, why = failed[0] if failed else ("the model", why_not or "")
        known = [p.rstrip(".") for p, part, _ in parts if p and any(_structure.is_producer(m) for m in part.modules()) and any(is_norm(m) for m in part.modules())]
        inner = f"; read from the graphs of its parts ({', '.join(known[:4])}{', ...' if len(known) > 4 else ''}), which see only what happens inside each" if known else ""
        rest = "measured" if probe is not None else "not known without example_inputs (give a batch: audit(model, optimizer, example_inputs=batch))"
        notes.append(f"torch.fx cannot trace {where} ({why}){inner}; elsewhere scale-invariance is {rest}")
    if head is None:
        head = _declared_head(model)
    params: List[ParamAudit] = []
    for name, module, local, tensor, is_buffer in _named(model):
        role = "buffer" if is_buffer else _role(module, local, tensor)
        if role == "weight" and name in added:
            # A bare parameter summed into the activations: a position embedding or token.
            role = "token"
        shape = list(tensor.shape)
        entry = ParamAudit(name, shape, role, False, "", "-", "-", output=role == "weight" and head is not None and name == f"{head}.weight")
        if role == "weight" and tensor.ndim >= 2:
            _invariance(model, module, name, entry, graph_verdicts.get(name), traced, probe)
        params.append(entry)
    mistakes: List[Mistake] = []
    if optimizer is not None:
        opt = _optimizer.unwrap_optimizer(optimizer)
        mistakes = _with_optimizer(model, opt, params)
        # An optimizer without a closed form gets no prediction anywhere: said once, with why.
        first = _optimizer.settings(opt)[0] if opt.param_groups else None
        if first is not None and first.optimizer is None:
            notes.append(first.no_prediction() or "")
    return Audit(params, mistakes, notes)


def _declared_head(model: nn.Module) -> Optional[str]:
    """The output layer a model declares through its library's own API, where the graph did not
    tell: Hugging Face's ``get_output_embeddings()``, timm's ``get_classifier()``."""
    for getter in ("get_output_embeddings", "get_classifier"):
        fn = getattr(model, getter, None)
        if not callable(fn):
            continue
        try:
            layer = fn()
        except Exception:  # noqa: BLE001 - a model whose getter fails has no declared head
            continue
        if isinstance(layer, nn.Module):
            for name, m in model.named_modules():
                if m is layer and name:
                    return name
    return None


def _prefixed(verdicts: Dict[str, _structure.Structural], prefix: str) -> Dict[str, _structure.Structural]:
    """A part's verdicts under the whole model's names (the norms they reach too)."""
    return {prefix + k: dataclasses.replace(v, norms=tuple(prefix + n for n in v.norms)) for k, v in verdicts.items()}


def _invariance(model: nn.Module, module: nn.Module, name: str, entry: ParamAudit, graph: Optional[_structure.Structural], traced: bool, probe: Optional[_numeric.Measurement]) -> None:
    if _weight_norm_direction(model, name):
        # Nothing to measure: the parametrization makes it so.
        entry.scale_invariant, entry.granularity, entry.structural = True, "channel", "yes (channel)"
        entry.note = "weight norm's direction: invariant by construction"
        return
    if graph is not None:
        if graph.scale_invariant:
            entry.structural = f"yes ({graph.granularity})" + (" with bias" if graph.with_bias else "")
            entry.with_bias = graph.with_bias
        elif graph.partial:
            entry.structural = f"partial ({graph.granularity})"
        else:
            entry.structural = "no"
        entry.scale_invariant, entry.granularity, entry.note = graph.scale_invariant, graph.granularity, graph.why
    elif traced:
        entry.structural = "no"
        entry.note = "not a conv or linear layer's weight the graph shows feeding a norm"
    if probe is None:
        return
    prefix = name[: -len(".weight")] if name.endswith(".weight") else None
    bias = f"{prefix}.bias" if prefix and f"{prefix}.bias" in probe.sums else None
    sizes = [(1, "channel")]
    slices = None
    if graph is not None and graph.slice_size:
        slices = graph.slice_size
        sizes.insert(0, (slices, graph.granularity))
    elif graph is None:
        # No graph to say where a fused projection splits: try the width of a norm layer
        # that would normalize one slice (QK-norm's head size).
        widths = sorted({_structure.norm_width(m) for m in model.modules() if is_norm(m)} - {None})
        rows = entry.shape[_structure.out_dim(module)]
        slices = next((w for w in widths if w < rows and rows % w == 0 and rows // w <= 64), None)
        if slices:
            sizes.insert(0, (slices, f"head of {slices}"))
    few = [n for n in (graph.norms if graph is not None else ()) if n in probe.degenerate]
    if few:
        entry.numeric = "undefined"
        entry.note += (
            f"; {few[0]} normalizes only {probe.degenerate[few[0]]} value(s) per channel on these inputs, so its output does not depend on"
            " what feeds it and the measurement tells nothing (give a larger batch or larger inputs); the graph's verdict stands"
        )
        return
    m = probe.numeric(name, None, sizes, slices)
    with_bias = False
    if not m.scale_invariant and bias is not None:
        mb = probe.numeric(name, bias, sizes, slices)
        if mb.scale_invariant or mb.rows:
            m, with_bias = mb, True
    if m.scale_invariant:
        entry.numeric = f"yes ({m.granularity})" + (" with bias" if with_bias else "")
    elif m.rows:
        entry.numeric = f"rows {_ranges(m.rows)}" + (" with bias" if with_bias else "")
    elif m.control == 0.0:
        entry.numeric = "no effect"
        entry.note += "; the outputs do not depend on it at these weights, so the measurement tells nothing"
    elif math.isnan(m.control):
        entry.numeric = "undefined"
        entry.note += "; the pass gave no finite gradient for it (a norm over constant values?), so the measurement tells nothing"
    else:
        entry.numeric = f"no ({m.change:.2g})"
    structural_si, structural_with_bias = entry.scale_invariant, entry.with_bias
    entry.scale_invariant, entry.granularity, entry.with_bias = m.scale_invariant, m.granularity, m.scale_invariant and with_bias
    if not m.control or math.isnan(m.control):
        entry.scale_invariant, entry.granularity = structural_si, graph.granularity if graph is not None else ""
        entry.with_bias = structural_with_bias
    elif graph is not None and structural_si != m.scale_invariant:
        if m.scale_invariant:
            entry.note += (
                f"; the graph says no, the measurement yes: the paths that break invariance carry under {_numeric.TOLERANCE:g} of"
                " its effect on the outputs at these weights (a residual branch behind a small layer scale, a zero bias), so it acts"
                " as scale-invariant now and may not later"
            )
        else:
            entry.note += "; the graph says yes, the measurement no (the measurement decides: it ran the model)"
    elif graph is not None and m.scale_invariant and graph.granularity != m.granularity:
        entry.note += f"; the graph says per {graph.granularity}, the measurement per {m.granularity}"


def _ranges(rows: List[Any]) -> str:
    merged: List[List[int]] = []
    for a, b in rows:
        if merged and merged[-1][1] == a:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return ", ".join(f"{a}-{b - 1}" for a, b in merged)


def _with_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, params: List[ParamAudit]) -> List[Mistake]:
    groups = _optimizer.settings(optimizer)
    held = _optimizer.membership(model, optimizer)
    by_name = dict(model.named_parameters())
    out: List[Mistake] = []
    for p in params:
        if p.role == "buffer":
            continue
        tensor = by_name.get(p.name)
        if tensor is None:
            continue
        p.groups = held.get(id(tensor), [])
        if not p.groups:
            if tensor.requires_grad:
                out.append(Mistake(p.name, *_core.mistake("no-group")))
            continue
        if len(p.groups) > 1:
            out.append(Mistake(p.name, *_core.mistake("two-groups")))
        g = groups[p.groups[0]]
        p.lr, p.weight_decay = g.lr, g.weight_decay
        # The mistakes depend on the role, invariance and decay, not on the lr (which may be 0
        # in a group frozen that way): 1.0 stands in for it. An optimizer without a closed form
        # gets the mistakes of roles only, decided by the core.
        settings = _core.StepSettings(g.optimizer, 1.0, g.weight_decay, g.theory_momentum, g.theory_betas, g.decoupled)
        for code, severity, why in settings.mistakes(p.role, p.scale_invariant, p.output):
            out.append(Mistake(p.name, code, severity, why))
    return out
