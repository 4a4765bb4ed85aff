"""The core's bindings: the decay decision, the mistakes and the closed forms, and their errors."""

import math

import normwd
import pytest
from normwd import _core, theory


def test_the_decision_is_the_policy_table():
    # (role, scale-invariant) -> decayed, for each policy (core/src/roles.rs).
    cases = [("weight", True), ("weight", False), ("norm-scale", False), ("bias", False), ("embedding", False), ("token", False), ("buffer", False)]
    expected = {
        "all": [True, True, True, True, True, True, False],
        "exclude-norm-bias": [True, True, False, False, False, False, False],
        "scale-invariant-only": [True, False, False, False, False, False, False],
        "none-on-scale-invariant": [False, True, False, False, False, False, False],
    }
    for policy, want in expected.items():
        got = [_core.decide(role, si, policy)[0] for role, si in cases]
        assert got == want, policy
    assert _core.decide("weight", True, "all")[1] == "scale-invariant"
    assert _core.decide("weight", False, "all")[1] == "default"
    assert set(normwd.policies()) == set(expected)


def test_bad_names_and_values_name_the_argument():
    with pytest.raises(ValueError, match=r'policy="none": expected one of all, exclude-norm-bias'):
        _core.decide("weight", True, "none")
    with pytest.raises(ValueError, match=r'role="conv": expected one of weight, bias'):
        _core.decide("conv", True, "all")
    with pytest.raises(ValueError, match=r"lr=NaN: expected a finite number > 0"):
        theory.equilibrium("sgd", float("nan"), 5e-4)
    with pytest.raises(ValueError, match=r"weight_decay=-1: expected a finite number >= 0"):
        theory.equilibrium("adamw", 1e-3, -1.0)
    with pytest.raises(ValueError, match=r"momentum=1: expected a number in \[0, 1\)"):
        theory.equilibrium("sgd", 0.1, 5e-4, momentum=1.0)
    with pytest.raises(ValueError, match=r'optimizer="rmsprop": expected one of sgd, adam, adamw, lion'):
        theory.gap_angle("rmsprop", 0.1, 5e-4, 10)
    with pytest.raises(ValueError, match=r"norm=0: expected a finite number > 0"):
        theory.effective_lr("sgd", 0.1, 0.0)


def test_closed_forms_are_theory_md():
    lr, wd, mu, b1 = 0.1, 5e-4, 0.9, 0.9
    # F7 (SGD with momentum, L2): sqrt(2*lr*wd/(1+mu)); relaxation 1/(lr*wd/(1-mu)) steps.
    angle, steps = theory.equilibrium("sgd", lr, wd, momentum=mu)
    assert angle == pytest.approx(math.sqrt(2 * lr * wd / (1 + mu)), rel=1e-12)
    assert steps == pytest.approx((1 - mu) / (lr * wd), rel=1e-12)
    # F8 (AdamW): sqrt(2*lr*wd*(1-b1)/(1+b1)); relaxation 1/(lr*wd).
    angle, steps = theory.equilibrium("adamw", 1e-3, 0.1, betas=(b1, 0.999))
    assert angle == pytest.approx(math.sqrt(2 * 1e-3 * 0.1 * (1 - b1) / (1 + b1)), rel=1e-12)
    assert steps == pytest.approx(1 / (1e-3 * 0.1), rel=1e-12)
    # L2 in Adam's gradient has no closed form; neither has no decay.
    assert theory.equilibrium("adam", 1e-3, 0.1)[0] is None
    assert theory.equilibrium("sgd", 0.1, 0.0)[0] is None
    # F17 at one step is the angle per step, and grows slower than linearly with the gap.
    one = theory.gap_angle("sgd", lr, wd, 1, momentum=mu)
    assert one == pytest.approx(theory.equilibrium("sgd", lr, wd, momentum=mu)[0], rel=1e-3)
    assert theory.gap_angle("sgd", lr, wd, 1000, momentum=mu) < 1000 * one
    assert theory.effective_lr("sgd", 0.1, 2.0) == pytest.approx(0.025)
    assert theory.effective_lr("adamw", 0.1, 2.0) == pytest.approx(0.05)


def test_mistakes_come_from_the_core():
    codes = lambda role, si, *a, **k: [c for c, _, _ in _core.Hyper(*a, **k).mistakes(role, si)]  # noqa: E731
    assert codes("norm-scale", False, "sgd", 0.1, 5e-4) == ["norm-decayed"]
    assert codes("embedding", False, "adamw", 1e-3, 0.1) == ["embedding-decayed"]
    assert codes("weight", True, "adam", 1e-3, 0.1) == ["adam-l2-on-scale-invariant"]
    assert codes("weight", True, "adam", 1e-3, 0.1, decoupled=True) == []
    assert codes("weight", True, "sgd", 0.1, 0.0) == ["scale-invariant-undecayed"]
    code, severity, why = _core.mistake("no-group")
    assert (code, severity) == ("no-group", "error") and "never updated" in why


def test_an_optimizer_without_a_closed_form_is_told_so():
    """Adafactor gets no prediction, and the audit and the Monitor say why instead of predicting
    another optimizer's equilibrium."""
    import json
    import tempfile

    import normwd.torch as nwd
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 8, bias=False), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.Adafactor(net.parameters(), lr=1e-3, weight_decay=1e-4)
    why = "no prediction for Adafactor: normwd has no closed-form equilibrium for it (it has one for SGD, AdamW, Lion, Muon, and Adam, NAdam, RAdam, Adamax, RMSprop with decoupled decay)"
    assert why in nwd.audit(net, opt).notes
    out = tempfile.mkdtemp()
    with nwd.Monitor(net, opt, out=out, every=1) as mon:
        opt.zero_grad()
        net(torch.randn(16, 4)).square().mean().backward()
        opt.step()
    assert all(r["pred_angle"] is None and r["eff_lr"] is None for r in mon.records)
    assert json.load(open(f"{out}/monitor.json"))["groups"][0]["no_prediction"] == why
