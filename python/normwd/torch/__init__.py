"""normwd inside a PyTorch training: ``audit`` a model and optimizer, build ``param_groups``
under normwd's decay policies (``muon_param_groups``: Muon's and AdamW's), make the decay follow the schedule or cautious
(``decay_control``), ``Monitor`` the per-layer dynamics beside the theory.

Example:
    >>> import torch
    >>> import normwd.torch as nwd
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8))
    >>> opt = torch.optim.SGD(nwd.param_groups(net, weight_decay=5e-4), lr=0.1, momentum=0.9)
    >>> nwd.audit(net, opt).mistakes
    []
"""

from ._audit import Audit, Mistake, ParamAudit, audit
from ._decay import DecayControl, decay_control
from ._groups import muon_param_groups, param_groups
from ._monitor import Monitor
from ._roles import is_norm, roles, unwrap

__all__ = ["Audit", "DecayControl", "Mistake", "Monitor", "ParamAudit", "audit", "decay_control", "is_norm", "muon_param_groups", "param_groups", "roles", "unwrap"]
