"""``normwd.torch.Monitor`` inside a PyTorch training of a BN ConvNet on the embedded
Fashion-MNIST subset: its angles are the ones ``normwd inspect`` measures on the same run's
checkpoints, and at equilibrium they match the theory (F7)."""

import gzip
import json
import os
import subprocess

import models
import normwd.torch as nwd
import pytest
import torch
from torch import nn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def fashion_mnist(n: int):
    with gzip.open(os.path.join(ROOT, "data", "embedded", "train-images-idx3-ubyte.gz")) as f:
        x = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)[16:].reshape(-1, 1, 28, 28)[:n]
    with gzip.open(os.path.join(ROOT, "data", "embedded", "train-labels-idx1-ubyte.gz")) as f:
        y = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)[8:][:n]
    return (x.float() / 255 - 0.286) / 0.353, y.long()


def convnet() -> nn.Module:
    return models.convnet((16, 32))


def train(steps, every, lr, wd, out, save=None, **monitor):
    torch.manual_seed(0)
    x, y = fashion_mnist(4096)
    net = convnet()
    opt = torch.optim.SGD(nwd.param_groups(net, weight_decay=wd), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    with nwd.Monitor(net, opt, out=out, every=every, **monitor) as mon:
        for step in range(steps):
            if save is not None:
                torch.save(net.state_dict(), os.path.join(save, f"ckpt_{step:06d}.pt"))
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        if save is not None:
            torch.save(net.state_dict(), os.path.join(save, f"ckpt_{steps:06d}.pt"))
    return mon


def normwd_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "normwd")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not built (scripts/test.sh builds it with cargo test first)")
    return path


def test_angles_are_the_ones_inspect_measures_on_the_checkpoints(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    mon = train(6, 1, 0.1, 5e-4, str(tmp_path / "run"), save=str(ckpts), channels="full")
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert lines and all(r["kind"] == "probe" for r in lines) and mon.steps == 6
    r = subprocess.run(
        [normwd_binary(), "inspect", str(ckpts), "--json", "--lr", "0.1", "--weight-decay", "5e-4", "--out", str(tmp_path / "inspect")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    tensors = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
    compared = 0
    for rec in lines:
        theirs = tensors[rec["path"]]["angles"][rec["step"] - 1]
        assert abs(rec["angle"] - theirs) < 1e-5, (rec["path"], rec["step"], rec["angle"], theirs)
        compared += 1
    assert compared == 6 * 5, "2 convs, 2 BN scales and the fc weight, every step"
    # The scale-invariant convs carry F7's prediction and per-channel norms and angles; the
    # decayed classifier the angle as an approximation; the BN scales nothing.
    basis = {r["path"]: r.get("pred_basis") for r in lines if r["pred_angle"] is not None}
    assert basis == {"0.weight": "scale-invariant", "4.weight": "scale-invariant", "9.weight": "approximate"}, basis
    for rec in lines:
        channels = {"0.weight": 16, "4.weight": 32}.get(rec["path"], 0)
        assert len(rec.get("channel_angle", [])) == len(rec.get("channel_norm", [])) == channels, rec["path"]
        if channels:
            # The channels' squared norms add up to the tensor's.
            assert sum(n * n for n in rec["channel_norm"]) == pytest.approx(rec["norm"] ** 2, rel=1e-9)
    settings = json.load(open(tmp_path / "run" / "monitor.json"))
    si_group = next(g for g in settings["groups"] if g["weight_decay"] > 0)
    assert si_group["relaxation_steps"] == pytest.approx(0.1 / (0.1 * 5e-4))


def test_the_measured_equilibrium_angle_is_f7s(tmp_path):
    # lr*wd/(1-momentum) = 5e-3 per step: 200 steps to relax, 800 steps trained, measured over
    # the last 400 (measured here: both 1% over F7).
    mon = train(800, 10, 0.1, 5e-3, str(tmp_path / "run"))
    for path in ("0.weight", "4.weight"):
        late = [r for r in mon.records if r["path"] == path and r["step"] > 400]
        measured = sum(r["angle"] for r in late) / len(late)
        predicted = late[-1]["pred_angle"]
        assert abs(measured / predicted - 1) < 0.15, (path, measured, predicted)


def test_a_diverging_training_is_named_and_not_stopped(tmp_path):
    net = convnet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = fashion_mnist(64)
    with nwd.Monitor(net, opt, out=str(tmp_path / "run"), every=1) as mon:
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        net[0].weight.grad[0, 0, 0, 0] = float("inf")
        # The training is the user's: a warning, and the step goes on.
        with pytest.warns(RuntimeWarning, match=r"0.weight holds NaN or inf at step 1: the training diverged"):
            opt.step()
    assert mon.steps == 1
    assert {r["path"] for r in mon.records} == {"1.weight", "4.weight", "5.weight", "9.weight"}, "the diverged tensor's records are left out"


def test_zero_initialised_scales_and_failures_inside_hooks_never_break_the_training(tmp_path):
    """timm and torchvision zero-initialise the last BN scale of each residual block: its
    norm is 0, its effective lr undefined (null in the file), and the training goes on."""
    net = convnet()
    nn.init.zeros_(net[1].weight)
    opt = torch.optim.SGD(nwd.param_groups(net, weight_decay=5e-4), lr=0.1, momentum=0.9)
    x, y = fashion_mnist(64)
    with nwd.Monitor(net, opt, out=str(tmp_path / "run"), every=1) as mon:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    first = next(r for r in mon.records if r["path"] == "1.weight" and r["step"] == 1)
    assert first["norm"] == 0.0 and first["eff_lr"] is None
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(lines) == len(mon.records) == 3 * 5
    import normwd

    assert os.path.exists(normwd.report(str(tmp_path / "run")))
    # A writer that fails inside the hook: one warning, monitoring stops, the training goes on.

    class Broken:
        def add_scalar(self, *a):
            raise OSError("disk full")

    with nwd.Monitor(net, opt, out=str(tmp_path / "broken"), every=1, writer=Broken()) as mon:
        with pytest.warns(RuntimeWarning, match=r"stopped monitoring: measuring step 1 failed \(OSError: disk full\)"):
            for _ in range(3):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
    assert mon.steps == 3


def test_bad_arguments(tmp_path):
    net = convnet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"every=0: expected an integer >= 1"):
        nwd.Monitor(net, opt, out="unused", every=0)
    with pytest.raises(TypeError, match=r"every=True: expected an integer >= 1"):
        nwd.Monitor(net, opt, out="unused", every=True)
    with pytest.raises(TypeError, match=r"out=3: expected a folder path"):
        nwd.Monitor(net, opt, out=3)
    with pytest.raises(ValueError, match=r"tensors_per_step=0: expected an integer >= 1 or None"):
        nwd.Monitor(net, opt, out="unused", tensors_per_step=0)
    with pytest.raises(TypeError, match=r"tensors_per_step=2.5: expected an integer >= 1 or None"):
        nwd.Monitor(net, opt, out="unused", tensors_per_step=2.5)
    with pytest.raises(ValueError, match=r"channels='all': expected 'summary'"):
        nwd.Monitor(net, opt, out="unused", channels="all")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"out=.*file/run.*: cannot write the run there"):
        nwd.Monitor(net, opt, out=str(blocker / "run"))
    # A second Monitor into a folder that holds a run would interleave two trainings' steps.
    run = tmp_path / "run"
    with nwd.Monitor(net, opt, out=str(run), every=1):
        opt.zero_grad()
        nn.functional.cross_entropy(net(fashion_mnist(8)[0]), torch.zeros(8, dtype=torch.long)).backward()
        opt.step()
    with pytest.raises(ValueError, match=r"already holds a run"):
        nwd.Monitor(net, opt, out=str(run))


def test_a_monitor_run_is_a_normwd_run_for_report_and_refused_by_resume(tmp_path):
    import normwd

    run_dir = tmp_path / "run"
    train(40, 5, 0.1, 5e-4, str(run_dir))
    path = normwd.report(str(run_dir))
    html = open(path).read()
    assert "Sequential" in html and "0.weight" in html and "No epoch finished" not in html
    # The batch norm scales are known by their recorded role, whatever their names.
    assert os.path.exists(os.path.join(os.path.dirname(path), "plots", "gamma.svg"))
    binary = normwd_binary()
    r = subprocess.run([binary, "report", str(run_dir), "--out", str(tmp_path / "cli")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "SGD on Sequential lr=0.1 wd=0.0005 (exclude-norm-bias, normwd.torch.Monitor)" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([binary, "train", "--resume", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "trained elsewhere" in r.stderr, r.stderr
    with pytest.raises(ValueError, match="run_dirs: expected at least one run folder"):
        normwd.report()
    with pytest.raises(ValueError, match="not a run directory"):
        normwd.report(str(tmp_path))


class TwinMlp(nn.Module):
    """The engine's `--model mlp --norm bn` with its parameter names: bias-free hidden layers
    each followed by batch norm, a linear classifier."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512, bias=False)
        self.norm1 = nn.BatchNorm1d(512)
        self.fc2 = nn.Linear(512, 512, bias=False)
        self.norm2 = nn.BatchNorm1d(512)
        self.fc3 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(self.fc1(x.flatten(1))))
        return self.fc3(torch.relu(self.norm2(self.fc2(h))))


def test_the_engine_inspect_and_monitor_give_the_same_predictions(tmp_path):
    """One builder, three writers: the engine's probes, `normwd inspect` on the engine's own
    checkpoints, and the Monitor on the PyTorch twin give the same prediction fields (which
    tensors, on what basis, which angle) for the same tensors and settings."""
    lr, wd, mu = 0.1, 5e-4, 0.9
    flags = ["--model", "mlp", "--norm", "bn", "--train-subset", "256", "--test-subset", "64", "--batch-size", "64"]
    flags += ["--optimizer", "sgd", "--lr", str(lr), "--momentum", str(mu), "--weight-decay", str(wd), "--schedule", "constant"]
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    # A constant lr: the 2-epoch run's first epoch is the 1-epoch run, so their checkpoints
    # are the same training 4 and 8 steps in.
    for epochs in (1, 2):
        run = tmp_path / f"engine{epochs}"
        r = subprocess.run([normwd_binary(), "train", *flags, "--epochs", str(epochs), "--probe-every", "1", "--out", str(run)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        os.replace(run / "checkpoint.safetensors", ckpts / f"ckpt_{4 * epochs:06d}.safetensors")
    engine = {}
    for line in open(tmp_path / "engine2" / "metrics.jsonl"):
        rec = json.loads(line)
        if rec["kind"] == "probe":
            engine[rec["path"]] = rec
    r = subprocess.run(
        [normwd_binary(), "inspect", str(ckpts), "--json", "--lr", str(lr), "--momentum", str(mu), "--weight-decay", str(wd), "--out", str(tmp_path / "inspect")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    inspected = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
    torch.manual_seed(0)
    net = TwinMlp()
    opt = torch.optim.SGD(nwd.param_groups(net, weight_decay=wd), lr=lr, momentum=mu)
    x, y = fashion_mnist(64)
    with nwd.Monitor(net, opt, out=str(tmp_path / "monitor"), every=1) as mon:
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    monitor = {r["path"]: r for r in mon.records}
    expected = {"fc1.weight": "scale-invariant", "fc2.weight": "scale-invariant", "fc3.weight": "approximate"}
    for name in ["fc1.weight", "fc2.weight", "fc3.weight", "norm1.weight", "norm2.weight"]:
        e, i, m = engine[name], inspected[name], monitor[name]
        assert e.get("pred_basis") == i["pred_basis"] == m.get("pred_basis") == expected.get(name), name
        assert e["scale_invariant"] == i["scale_invariant"] == m["scale_invariant"], name
        if name in expected:
            assert e["pred_angle"] == pytest.approx(i["pred_angle"], rel=1e-12) and e["pred_angle"] == pytest.approx(m["pred_angle"], rel=1e-12), name
        else:
            assert e["pred_angle"] is None and i["pred_angle"] is None and m["pred_angle"] is None, name


def test_bfloat16_weights_are_measured_as_float64_would(tmp_path):
    """The Monitor keeps one copy of the probed weights in their own dtype and takes its sums
    in float32 with pairwise reductions, a chunk at a time (no float64 copy): its angles and
    norms on a bfloat16 model equal those computed from float64 copies to 1e-6 relative."""
    torch.manual_seed(0)
    net = convnet().to(torch.bfloat16)
    opt = torch.optim.SGD(nwd.param_groups(net, weight_decay=5e-4), lr=0.1, momentum=0.9)
    x, y = fashion_mnist(64)
    x = x.to(torch.bfloat16)
    w = net[0].weight
    with nwd.Monitor(net, opt, out=str(tmp_path / "run"), every=1) as mon:
        for step in range(1, 4):
            before = w.detach().double().clone()
            opt.zero_grad()
            nn.functional.cross_entropy(net(x).float(), y).backward()
            opt.step()
            after = w.detach().double()
            cos = (before * after).sum() / (before.norm() * after.norm())
            expected = float(torch.acos(cos.clamp(-1, 1)))
            got = next(r for r in mon.records if r["path"] == "0.weight" and r["step"] == step)
            assert expected > 1e-4 and got["angle"] == pytest.approx(expected, rel=1e-6), (step, got["angle"], expected)
            assert got["norm"] == pytest.approx(float(before.norm()), rel=1e-6)


def test_a_short_scheduled_run_describes_itself_truly(tmp_path):
    """Under a cosine to 0 the run's config records the peak lr and the range seen (not the last
    lr, 0), and a run far shorter than two relaxation times is reported as not yet at
    equilibrium rather than as the theory's error."""
    import normwd

    torch.manual_seed(0)
    net = convnet()
    opt = torch.optim.SGD(nwd.param_groups(net, weight_decay=5e-4), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12)
    x, y = fashion_mnist(64)
    with nwd.Monitor(net, opt, out=str(tmp_path / "run"), every=1, scheduler=sched):
        for _ in range(12):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            sched.step()
    config = open(tmp_path / "run" / "config.toml").read()
    assert "\nlr = 0.1\n" in config and "lr_range = [" in config and "lr_varies = true" in config, config
    assert 'scheduler = "CosineAnnealingLR"' in config and "lr_initial = 0.1" in config, config
    html = open(normwd.report(str(tmp_path / "run"))).read()
    assert "CosineAnnealingLR" in html
    # (1-0.9)/(0.1*5e-4) = 2000 steps per relaxation time against a 12-step run.
    assert "not yet at equilibrium" in html and "2000 steps each" in html, html[:2000]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_angles_come_from_the_update_itself(tmp_path, dtype, device):
    """An update far smaller than the weight (a fine-tuning's lr, late in a schedule): the
    Monitor takes the angle from the update d = w' - w itself (one rounding of a difference of
    two close values of the weight's dtype, summed pairwise in float32), so its angle matches the
    float64 reference (the update's part orthogonal to w, ``atan(||d_perp|| / (||w|| + <d,
    w>/||w||))``) to 1e-5 relative; the arccosine of even the float64 cosine, which the records
    used before, is off by more than 1% there."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64, bias=False), nn.LayerNorm(64)).to(device, dtype)
    opt = torch.optim.SGD(net.parameters(), lr=1e-9 if dtype == torch.float32 else 1e-3)
    w = net[0].weight
    with nwd.Monitor(net, opt, out=str(tmp_path / "run"), every=1, channels="full") as mon:
        for step in range(1, 3):
            before = w.detach().double().cpu().clone()
            opt.zero_grad()
            (net(torch.randn(16, 64).to(device, dtype)).float() * torch.randn(16, 64, device=device)).sum().backward()
            opt.step()
            after = w.detach().double().cpu()
            d = after - before
            along = (d * before).sum() / before.norm()
            perp = (d - along * before / before.norm()).norm()
            expected = float(torch.atan2(perp, before.norm() + along))
            by_acos = float(torch.acos(((before * after).sum() / (before.norm() * after.norm())).clamp(-1, 1)))
            got = next(r for r in mon.records if r["path"] == "0.weight" and r["step"] == step)
            assert got["angle"] == pytest.approx(expected, rel=1e-5), (step, got["angle"], expected)
            if dtype == torch.float32:
                assert expected < 1e-6 and abs(by_acos - expected) > 1e-2 * expected, (expected, by_acos)
            # Per channel too (the weight is scale-invariant: it feeds the LayerNorm alone).
            rows = torch.atan2((d - ((d * before).sum(1, keepdim=True) / before.norm(dim=1, keepdim=True) ** 2) * before).norm(dim=1), before.norm(dim=1) + (d * before).sum(1) / before.norm(dim=1))
            assert got["channel_angle"] == pytest.approx(rows.tolist(), rel=1e-5)


def test_a_resnet50_probe_step_is_bounded_and_the_rotation_covers_every_tensor(tmp_path):
    """By default a probe step measures 32 of the tracked tensors, the next ones in turn, and
    keeps five quantiles of each per-channel array: a ResNet-50's probe step writes at most
    20 KB (its full arrays were about a megabyte), and every tensor is measured once in
    ceil(tensors / 32) probe steps."""
    timm = pytest.importorskip("timm", reason="timm is installed by scripts/test.sh")
    torch.manual_seed(0)
    net = timm.create_model("resnet50", pretrained=False, num_classes=10)
    opt = torch.optim.SGD(nwd.param_groups(net, weight_decay=5e-5), lr=0.1, momentum=0.9)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    run = tmp_path / "run"
    with nwd.Monitor(net, opt, out=str(run), every=1) as mon:
        n = len(mon._tracked)
        rounds = -(-n // 32)
        for _ in range(rounds):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    assert n > 100
    lines = (run / "metrics.jsonl").read_text().splitlines()
    by_step = {}
    for line in lines:
        by_step.setdefault(json.loads(line)["step"], []).append(line)
    sizes = [sum(len(line) + 1 for line in v) for v in by_step.values()]
    assert len(by_step) == rounds and max(sizes) <= 20_000, sizes
    records = [json.loads(line) for line in lines]
    assert {r["path"] for r in records} == {t[0] for t in mon._tracked}
    si = [r for r in records if r["scale_invariant"] and r["path"].endswith("conv1.weight")]
    assert si and all(len(r["channel_norm_q"]) == 5 and "channel_norm" not in r for r in si)
    for r in si:
        q = r["channel_norm_q"]
        assert q == sorted(q) and q[0] > 0
