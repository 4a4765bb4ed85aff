"""``normwd.torch.decay_control``: corrected (AdamC / SGDC) and cautious decay on torch's own
optimizers, each step against the rule written out by hand, and ``Monitor`` predicting with the
decay that acts."""

import json
import math

import normwd.torch as nwd
import pytest
import torch
from torch import nn


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def step(model: nn.Module, opt: torch.optim.Optimizer, seed: int, before_step=None) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    if before_step is not None:
        before_step()
    opt.step()


def test_corrected_decay_follows_the_schedule_on_scale_invariant_groups_only():
    """AdamW under a linear schedule: the scale-invariant weight decays by lr_t^2/lr_max*wd per
    step, every other decayed tensor by lr_t*wd (the reference: torch's AdamW without decay plus
    the decay written out, AdamW's order)."""
    lr, wd = 1e-2, 0.5
    ours, ref = net(), net()
    opt = torch.optim.AdamW(nwd.param_groups(ours, weight_decay=wd, policy="all"), lr=lr)
    nwd.decay_control(opt, corrected=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / 10)
    ref_groups = nwd.param_groups(ref, weight_decay=wd, policy="all")
    for g in ref_groups:
        g["weight_decay"] = 0.0
    ref_opt = torch.optim.AdamW(ref_groups, lr=lr)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda t: 1 - t / 10)
    names = [g["name"] for g in opt.param_groups]
    assert any(n.startswith("scale-invariant") for n in names)
    for t in range(5):
        f = 1 - t / 10

        def decay() -> None:
            with torch.no_grad():
                for g, name in zip(ref_opt.param_groups, names):
                    c = lr * f * wd * (f if name.startswith("scale-invariant") else 1.0)
                    for p in g["params"]:
                        p.mul_(1 - c)

        step(ours, opt, t)
        step(ref, ref_opt, t, before_step=decay)
        sched.step()
        ref_sched.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def test_cautious_decay_decays_where_direction_and_weight_agree():
    """Plain SGD (no momentum), one step: w' = w - lr*g - lr*wd*1[g*w >= 0]*w."""
    lr, wd = 0.1, 0.3
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    nwd.decay_control(opt, cautious=True)
    before = [p.detach().clone() for p in model.parameters()]
    step(model, opt, 0)
    agreed = 0
    for p, w in zip(model.parameters(), before):
        g = p.grad
        mask = (g * w >= 0).float()
        agreed += int(mask.sum())
        assert torch.allclose(p, w - lr * g - lr * wd * mask * w, atol=1e-7)
    n = sum(w.numel() for w in before)
    assert 0 < agreed < n, "the step must see both kinds of coordinates"


def test_remove_gives_the_decay_back_and_bad_uses_are_named():
    model = net()
    opt = torch.optim.AdamW(nwd.param_groups(model, weight_decay=0.1), lr=1e-3)
    ctl = nwd.decay_control(opt, cautious=True)
    with pytest.raises(ValueError, match="already under a decay_control"):
        nwd.decay_control(opt)
    ctl.remove()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.1, 0.0]
    assert all("normwd_weight_decay" not in g for g in opt.param_groups)
    plain = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)
    with pytest.raises(ValueError, match="corrected=True: no group holds scale-invariant weights"):
        nwd.decay_control(plain, corrected=True)
    bad = torch.optim.SGD(model.parameters(), lr=0.1)
    bad.param_groups[0]["weight_decay"] = math.nan
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['weight_decay'\]=nan"):
        nwd.decay_control(bad)


def test_monitor_predicts_with_the_decay_that_acts(tmp_path):
    """Under corrected decay at half the peak lr, Monitor's predicted angle is F8 at lr/2 and
    wd/2; under cautious decay, F8 at wd/2 (F16); and Defazio's ratio is recorded for SGD."""
    model = net()
    lr, wd = 1e-2, 0.5
    opt = torch.optim.AdamW(nwd.param_groups(model, weight_decay=wd), lr=lr)
    nwd.decay_control(opt, corrected=True, cautious=True)
    for g in opt.param_groups:
        g["initial_lr"] = lr
        g["lr"] = lr / 2
    with nwd.Monitor(model, opt, out=str(tmp_path / "run"), every=1) as mon:
        step(model, opt, 0)
    si = [r for r in mon.records if r["scale_invariant"]]
    assert si
    expected = math.sqrt(2 * (lr / 2) * (wd / 2 / 2) * 0.1 / 1.9)
    assert abs(si[0]["pred_angle"] / expected - 1) < 1e-9, (si[0]["pred_angle"], expected)
    model = net()
    opt = torch.optim.SGD(nwd.param_groups(model, weight_decay=1e-2), lr=0.1, momentum=0.9)
    with nwd.Monitor(model, opt, out=str(tmp_path / "sgd"), every=1) as mon:
        step(model, opt, 0)
    r = [r for r in mon.records if r["scale_invariant"]][0]
    assert abs(r["pred_ratio"] - math.sqrt(1e-2 * 0.1 * (2 / 0.1 - 1e-2 / 1.9))) < 1e-12
    line = [json.loads(x) for x in open(tmp_path / "sgd" / "metrics.jsonl") if '"probe"' in x][0]
    assert line["pred_ratio"] == r["pred_ratio"]


def test_taking_over_l2_under_momentum_says_what_it_changes():
    """SGD's L2 under momentum 0.9 acts 10x stronger than the same coefficient decoupled:
    decay_control says so, with the coefficient that keeps the strength; AdamW's own decoupled
    decay and SGD without momentum need no word."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    with pytest.warns(UserWarning, match=r"param_groups\[0\]'s weight_decay=0.0001 was L2 in the gradient .* acts 10x stronger .* set weight_decay=0.001"):
        nwd.decay_control(opt)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nwd.decay_control(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1))
        nwd.decay_control(torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4))
