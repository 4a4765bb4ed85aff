"""The audit's records, shared by ``normwd.torch.audit`` and ``normwd.jax.audit``: every tensor
with its role, scale-invariance and optimizer settings, and the mistakes in its setup."""

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class ParamAudit:
    """One tensor of the model."""

    name: str
    shape: List[int]
    #: The core's role name (``weight``, ``bias``, ``norm-scale``, ``norm-shift``, ``gain``,
    #: ``embedding``, ``token``, ``dynamics``, ``buffer``).
    role: str
    #: The verdict: the measurement where there is one, else the graph's.
    scale_invariant: bool
    #: ``channel``, ``group of N``, ``head of N``, ``tensor``, or empty.
    granularity: str
    #: What the graph says (``yes (channel)``, ``no``, ``partial (head of 64)``, ``-`` untraced).
    structural: str
    #: What the measurement said (``yes (channel)``, ``no (0.31)``: the derivative along the weight over a
    #: random direction's, ``-`` without inputs).
    numeric: str
    #: Why, and any disagreement between the two.
    note: str = ""
    #: The optimizer groups holding it (empty without an optimizer, or in none).
    groups: List[int] = field(default_factory=list)
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    #: Invariant only together with its layer's bias (rescaled with it): the two are one unit
    #: for decay (``param_groups`` keeps them together).
    with_bias: bool = False
    #: The output layer's weight (the head that produces the logits: Muon leaves it to AdamW),
    #: found from the graph, or declared by the model (``get_output_embeddings()``,
    #: ``get_classifier()``).
    output: bool = False


@dataclass
class Mistake:
    """A mistake in how a tensor is trained."""

    param: str
    #: The core's code: ``norm-decayed``, ``bias-decayed``, ``embedding-decayed``, ``dynamics-decayed``,
    #: ``adam-l2-on-scale-invariant``, ``scale-invariant-undecayed``, ``no-group``, ``two-groups``,
    #: ``muon-on-embedding``, ``muon-on-head``.
    code: str
    #: ``error`` or ``warning``.
    severity: str
    why: str


@dataclass
class Audit:
    """The audit of a model (and optimizer): ``print(audit)`` for a table, ``.mistakes`` and
    ``.to_json()`` for programs."""

    params: List[ParamAudit]
    mistakes: List[Mistake]
    #: What could not be done, said (an untraceable model, no example inputs).
    notes: List[str]

    def __getitem__(self, name: str) -> ParamAudit:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{name!r} is not a tensor of the audited model")

    def to_dict(self) -> Dict[str, Any]:
        """The audit as plain data."""
        return {"params": [asdict(p) for p in self.params], "mistakes": [asdict(m) for m in self.mistakes], "notes": self.notes}

    def to_json(self) -> str:
        """The audit as JSON."""
        return json.dumps(self.to_dict(), indent=1)

    def __str__(self) -> str:
        head = ["tensor", "shape", "role", "scale-invariant", "graph", "measured", "group", "lr", "weight decay"]
        rows = []
        for p in self.params:
            if p.role == "buffer":
                continue
            si = f"yes ({p.granularity})" if p.scale_invariant else ("partial" if "partial" in p.structural or "rows" in p.numeric else "no")
            group = ",".join(map(str, p.groups)) if p.groups else "-"
            rows.append([p.name, "x".join(map(str, p.shape)) or "scalar", p.role, si, p.structural, p.numeric, group, _fmt(p.lr), _fmt(p.weight_decay)])
        widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
        line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
        for n in self.notes:
            out.append(f"note: {n}")
        # The notes that explain something: a disagreement, a partial verdict; the weights the
        # outputs did not depend on (a zero-initialised scale after them) in one line.
        silent = [p.name for p in self.params if p.numeric == "no effect"]
        for p in self.params:
            if p.numeric == "no effect":
                continue
            if p.role != "buffer" and ("; " in p.note or p.structural.startswith("partial") or p.note.startswith("weight norm")):
                out.append(f"{p.name}: {p.note}")
        if silent:
            who = ", ".join(silent) if len(silent) <= 3 else f"{', '.join(silent[:2])} and {len(silent) - 2} more"
            out.append(
                f"{who}: the outputs do not depend on {'it' if len(silent) == 1 else 'them'} at these weights (a zero-initialised scale"
                " after them, as timm's last norm of a residual block), so the measurement tells nothing there; the graph's verdict stands"
            )
        shown = {}
        for m in self.mistakes:
            shown.setdefault((m.severity, m.code, m.why), []).append(m.param)
        for (severity, code, why), names in shown.items():
            who = ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:2])} and {len(names) - 2} more"
            out.append(f"{severity.upper()} {code}: {who}: {why}")
        return "\n".join(out)


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:g}"
