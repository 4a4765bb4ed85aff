"""Muon beside AdamW: F18 against PyTorch's own Muon, one Monitor over both optimizers on a
real training, the split of a model between them, and the mistakes people make with it."""

import gzip
import json
import math
import subprocess
from pathlib import Path

import normwd.torch as nwd
import pytest
import torch
from normwd import _core
from torch import nn

Muon = getattr(torch.optim, "Muon", None)
DATA = Path(__file__).resolve().parents[2] / "data" / "embedded"
pytestmark = pytest.mark.skipif(Muon is None, reason="torch.optim.Muon needs PyTorch 2.9 or later")


def _simulate(rows: int, cols: int, lr: float, wd: float, steps: int, adjust_lr_fn=None) -> float:
    """torch.optim.Muon on a scale-invariant matrix (gradients Gaussian, orthogonal to it, of
    norm 1/||W||): the mean angle per step over the last half."""
    g = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(rows, cols, generator=g))
    opt = Muon([w], lr=lr, weight_decay=wd, adjust_lr_fn=adjust_lr_fn)
    angles = []
    for t in range(steps):
        z = torch.randn(rows, cols, generator=g)
        with torch.no_grad():
            n = w.norm()
            u = w / n
            w.grad = (z - (z * u).sum() * u) / n
            before = w.detach().clone()
        opt.step()
        if t >= steps // 2:
            with torch.no_grad():
                c = float((before * w).sum() / (before.norm() * w.norm()))
            angles.append(math.acos(min(1.0, c)))
    return sum(angles) / len(angles)


@pytest.mark.parametrize("shape,adjust", [((48, 48), None), ((96, 24), "match_rms_adamw")])
def test_f18_against_torch_muon(shape, adjust):
    """F18 (the core's, through the binding) against PyTorch's Muon in bfloat16: within 5%
    (measured: within 2%), whatever adjust_lr_fn (it moves the norm, not the angle)."""
    lr, wd = 0.02, 0.5
    measured = _simulate(*shape, lr, wd, 2400, adjust)
    predicted, relax = _core.Hyper("muon", lr, wd, momentum=0.95).equilibrium(shape)
    assert relax == pytest.approx(1 / (lr * wd))
    assert predicted == pytest.approx(measured, rel=0.05), (predicted, measured)


class _Net(nn.Module):
    """784-256-LN-256-LN-10 (THEORY.md's), bias-free hidden layers: the two hidden matrices are
    exactly scale-invariant (each feeds a LayerNorm)."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, width, bias=False)
        self.ln1 = nn.LayerNorm(width)
        self.fc2 = nn.Linear(width, width, bias=False)
        self.ln2 = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.ln1(self.fc1(x)))
        x = torch.relu(self.ln2(self.fc2(x)))
        return self.head(x)


def _idx(path: Path) -> torch.Tensor:
    """An IDX file (gzip): Fashion-MNIST's format."""
    b = gzip.open(path).read()
    dims = b[3]
    shape = [int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(b[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


def test_monitor_over_muon_and_adamw(tmp_path):
    """One Monitor over torch.optim.Muon (the hidden matrices, from muon_param_groups) and AdamW
    (the rest) on the repository's embedded Fashion-MNIST images: the Muon matrices' measured
    equilibrium angle within 15% of F18 (measured: 10% and 3% below it; real gradients are of
    lower rank than F18's model), AdamW's head predicted by F8, one run written."""
    x = _idx(DATA / "train-images-idx3-ubyte.gz").float().reshape(-1, 784)
    y = _idx(DATA / "train-labels-idx1-ubyte.gz").long()
    x = (x - x.mean()) / x.std()
    torch.manual_seed(0)
    net = _Net()
    hidden, rest = nwd.muon_param_groups(net, weight_decay=0.5)
    assert {id(p) for g in hidden for p in g["params"]} == {id(net.fc1.weight), id(net.fc2.weight)}
    opts = [Muon(hidden, lr=0.02), torch.optim.AdamW(rest, lr=1e-3, weight_decay=0.1)]
    out = tmp_path / "run"
    mon = nwd.Monitor(net, opts, out=str(out), every=2, tensors_per_step=None)
    # lr*wd = 0.01: the norms relax in 100 steps; the second half is 3 relaxation times in.
    steps = 600
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        i = torch.randint(0, x.shape[0], (128,), generator=g)
        for o in opts:
            o.zero_grad()
        nn.functional.cross_entropy(net(x[i]), y[i]).backward()
        # Muon second here: the Monitor counts a step when both have stepped, in any order.
        opts[1].step()
        opts[0].step()
    mon.close()
    assert mon.steps == steps
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for name in ("fc1.weight", "fc2.weight"):
        late = [r for r in lines if r["path"] == name and r["step"] > steps // 2]
        assert late and all(r["pred_basis"] == "scale-invariant" for r in late)
        measured = sum(r["angle"] for r in late) / len(late)
        predicted = sum(r["pred_angle"] for r in late) / len(late)
        assert abs(measured / predicted - 1) < 0.15, (name, measured, predicted)
    head = [r for r in lines if r["path"] == "head.weight"]
    # The split gives both lists weight_decay=0.5: the head decays at 0.5 under AdamW.
    expected = _core.Hyper("adamw", 1e-3, 0.5, betas=(0.9, 0.999)).equilibrium()[0]
    assert head[-1]["pred_angle"] == pytest.approx(expected) and head[-1]["pred_basis"] == "approximate"
    info = json.loads((out / "monitor.json").read_text())
    assert info["optimizer"] == "Muon+AdamW"
    config = (out / "config.toml").read_text()
    assert "Muon+AdamW" in config and "muon_lr = 0.02" in config and "muon_weight_decay = 0.5" in config


class _Lm(nn.Module):
    """A tiny language model: embedding, one block with RMS norm, untied head."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(50, 32)
        self.norm = nn.RMSNorm(32)
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 32)
        self.lm_head = nn.Linear(32, 50, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.wte(ids)
        h = h + self.down(torch.relu(self.up(self.norm(h))))
        return self.lm_head(h)


def test_muon_split_and_planted_mistakes():
    """The split gives the embedding and the head to AdamW; audit flags the embedding and the
    head given to Muon, an undecayed scale-invariant matrix under it, a parameter in neither
    optimizer and one in both."""
    lm = _Lm()
    hidden, rest = nwd.muon_param_groups(lm, weight_decay=0.1)
    muon_ids = {id(p) for g in hidden for p in g["params"]}
    assert muon_ids == {id(lm.up.weight), id(lm.down.weight)}
    rest_ids = {id(p) for g in rest for p in g["params"]}
    assert id(lm.wte.weight) in rest_ids and id(lm.lm_head.weight) in rest_ids
    assert len(muon_ids | rest_ids) == len(list(lm.parameters())) and not muon_ids & rest_ids
    clean = nwd.audit(lm, [Muon(hidden, lr=0.02), torch.optim.AdamW(rest, lr=1e-3)])
    assert not [m for m in clean.mistakes if m.code.startswith("muon")]
    assert clean["lm_head.weight"].output and not clean["up.weight"].output
    # Planted: the embedding and the head in Muon; up's bias in no optimizer; down's bias in both.
    planted = [
        Muon([lm.wte.weight, lm.lm_head.weight, lm.up.weight], lr=0.02, weight_decay=0.1),
        torch.optim.AdamW([lm.norm.weight, lm.down.weight, lm.down.bias], lr=1e-3, weight_decay=0.0),
        torch.optim.SGD([lm.down.bias], lr=0.1),
    ]
    codes = {(m.param, m.code) for m in nwd.audit(lm, planted).mistakes}
    assert ("wte.weight", "muon-on-embedding") in codes
    assert ("lm_head.weight", "muon-on-head") in codes
    assert ("up.bias", "no-group") in codes
    assert ("down.bias", "two-groups") in codes
    # A matrix that feeds a norm, under Muon without decay.
    net = _Net()
    undecayed = [Muon([net.fc1.weight, net.fc2.weight], lr=0.02, weight_decay=0.0), torch.optim.AdamW([p for n, p in net.named_parameters() if not n.startswith("fc")])]
    codes = {(m.param, m.code) for m in nwd.audit(net, undecayed).mistakes}
    assert ("fc1.weight", "scale-invariant-undecayed") in codes


def test_bad_optimizer_lists():
    """An empty list, or a list holding something other than an optimizer, is refused naming it."""
    net = _Net()
    with pytest.raises(ValueError, match="empty list"):
        nwd.audit(net, [])
    with pytest.raises(ValueError, match=r"optimizer\[1\]"):
        nwd.audit(net, [torch.optim.SGD(net.parameters(), lr=0.1), "adamw"])


def test_inspect_reads_muon_checkpoints(tmp_path):
    """`normwd inspect` on torch.save training dicts holding Muon's and AdamW's state: each
    tensor's group and settings come from the saved param_groups (Muon's told from SGD's by its
    Newton-Schulz keys), and the Muon matrices get F18 for their shape, equal to the Monitor's."""
    from test_monitor import normwd_binary

    torch.manual_seed(0)
    net = _Net(width=32)
    hidden, rest = nwd.muon_param_groups(net, weight_decay=0.5)
    opts = [Muon(hidden, lr=0.02), torch.optim.AdamW(rest, lr=1e-3)]
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    mon = nwd.Monitor(net, opts, out=str(tmp_path / "run"), every=1, tensors_per_step=None)
    for step in range(1, 7):
        for o in opts:
            o.zero_grad()
        net(torch.randn(32, 784)).square().mean().backward()
        for o in opts:
            o.step()
        if step % 2 == 0:
            torch.save({"model": net.state_dict(), "optimizers": [o.state_dict() for o in opts], "step": step}, ckpts / f"ckpt_{step}.pt")
    mon.close()
    r = subprocess.run([normwd_binary(), "inspect", str(ckpts), "--json", "--out", str(tmp_path / "inspect")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    inspected = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
    monitored = {rec["path"]: rec for rec in mon.records}
    for name in ("fc1.weight", "fc2.weight", "head.weight"):
        assert inspected[name]["pred_angle"] == pytest.approx(monitored[name]["pred_angle"], rel=1e-9), name
    assert inspected["fc1.weight"]["pred_angle"] != pytest.approx(inspected["head.weight"]["pred_angle"], rel=0.01)


def test_timm_muon_groups():
    """timm's Muon: its Muon groups read as Muon (Nesterov off, timm's default), a group marked
    for its AdamW fallback as AdamW at lr * fallback_lr_scale, AdaMuon as no closed form."""
    timm_optim = pytest.importorskip("timm.optim")
    from normwd.torch._optimizer import settings

    net = _Net(width=16)
    hidden = [net.fc1.weight, net.fc2.weight]
    rest = [p for n, p in net.named_parameters() if not n.startswith("fc")]
    opt = timm_optim.Muon([{"params": hidden}, {"params": rest, "use_fallback": True}], lr=0.02, weight_decay=0.1, fallback_lr_scale=0.05)
    muon, fallback = settings(opt)
    assert (muon.optimizer, muon.nesterov, muon.momentum) == ("muon", False, 0.95)
    assert (fallback.optimizer, fallback.decoupled) == ("adamw", True) and fallback.lr == pytest.approx(0.001)
    assert settings(timm_optim.Muon(hidden, lr=6e-4, algo="adamuon"))[0].optimizer is None


def test_split_of_models_fx_cannot_trace():
    """A Hugging Face Llama (no graph without example inputs): its head comes from
    get_output_embeddings(), so lm_head and the embedding go to AdamW, the seven block matrices
    to Muon; a timm ResNet's conv kernels go to AdamW unless conv=True (torch's Muon takes 2-D
    tensors only), its classifier (get_classifier()) never to Muon."""
    transformers = pytest.importorskip("transformers")
    timm = pytest.importorskip("timm")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    lm = transformers.LlamaForCausalLM(cfg)
    names = {id(p): n for n, p in lm.named_parameters()}
    hidden, rest = nwd.muon_param_groups(lm, weight_decay=0.1)
    assert len([p for g in hidden for p in g["params"]]) == 7
    assert {names[id(p)] for g in rest for p in g["params"] if p.ndim == 2} == {"lm_head.weight", "model.embed_tokens.weight"}
    net = timm.create_model("resnet18", num_classes=10)
    names = {id(p): n for n, p in net.named_parameters()}
    hidden, _ = nwd.muon_param_groups(net, weight_decay=0.1)
    assert not hidden
    hidden, rest = nwd.muon_param_groups(net, weight_decay=0.1, conv=True)
    assert len([p for g in hidden for p in g["params"]]) == 20 and "fc.weight" in {names[id(p)] for g in rest for p in g["params"]}
