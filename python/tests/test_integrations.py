"""Monitor where trainings run: GradScaler (unscaled gradients), DistributedDataParallel (rank 0,
the wrapper looked through), TensorBoard- and W&B-style writers, the PyTorch Lightning callback
and the Hugging Face Trainer callback, each with the real package."""

import json
import socket

import normwd.torch as nwd
import pytest
import torch
from torch import nn


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def batches(n):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 8, generator=g), torch.randint(0, 4, (32,), generator=g)) for _ in range(n)]


def run(model, opt, data, scaler=None, **monitor):
    with nwd.Monitor(model, opt, every=1, **monitor) as mon:
        for x, y in data:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
    return mon


def test_grad_scaler_gradients_are_read_unscaled(tmp_path):
    data = batches(4)
    a, b = net(), net()
    plain = run(a, torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), data, out=str(tmp_path / "a"))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaled = run(b, torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), data, scaler=scaler, out=str(tmp_path / "b"))
    assert len(plain.records) == len(scaled.records) > 0
    for r, s in zip(plain.records, scaled.records):
        assert r["path"] == s["path"]
        assert s["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-5), r["path"]
        assert s["angle"] == pytest.approx(r["angle"], rel=1e-4, abs=1e-9), r["path"]


def test_a_compiled_model_is_measured_as_the_eager_one(tmp_path):
    data = batches(3)
    eager = net()
    plain = run(eager, torch.optim.SGD(eager.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4), data, out=str(tmp_path / "eager"))
    model = net()
    compiled = torch.compile(model)
    measured = run(compiled, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4), data, out=str(tmp_path / "compiled"))
    assert [r["path"] for r in measured.records] == [r["path"] for r in plain.records], "names without _orig_mod."
    for r, c in zip(plain.records, measured.records):
        assert c["angle"] == pytest.approx(r["angle"], rel=1e-3), r["path"]


def test_ddp_is_looked_through_on_rank_0(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(net())
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        mon = run(model, opt, batches(3), out=str(tmp_path / "ddp"))
    finally:
        torch.distributed.destroy_process_group()
    paths = {r["path"] for r in mon.records}
    assert paths == {"0.weight", "1.weight", "3.weight"}, "names without DDP's module. prefix"
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 3


class Board:
    """The part of TensorBoard's SummaryWriter that Monitor uses."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


class Run:
    """The part of a W&B run that Monitor uses."""

    def __init__(self):
        self.logged = []

    def log(self, data, commit=True):
        self.logged.append((dict(data), commit))


def test_writers_receive_the_same_numbers(tmp_path):
    model = net()
    board, wandb = Board(), Run()
    mon = run(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4), batches(2), out=str(tmp_path / "tb"), writer=board)
    first = mon.records[0]
    assert ("normwd/0.weight/angle", first["angle"], 1) in board.scalars
    assert any(tag == "normwd/0.weight/pred_angle" for tag, _, _ in board.scalars)
    model = net()
    run(model, torch.optim.SGD(model.parameters(), lr=0.1), batches(2), out=str(tmp_path / "wb"), writer=wandb)
    assert len(wandb.logged) == 2 and all(commit is False for _, commit in wandb.logged)
    assert "normwd/3.weight/norm" in wandb.logged[0][0]
    with pytest.raises(ValueError, match="writer: expected a TensorBoard SummaryWriter"):
        nwd.Monitor(model, torch.optim.SGD(model.parameters(), lr=0.1), out=str(tmp_path / "x"), writer=object())


def test_lightning_callback(tmp_path):
    L = pytest.importorskip("lightning", reason="lightning is installed by scripts/test.sh")
    from normwd.integrations.lightning import MonitorCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net()

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    data = torch.utils.data.DataLoader([(x[i], y[i]) for x, y in batches(4) for i in range(32)], batch_size=32)
    callback = MonitorCallback(out=str(tmp_path / "pl"), every=2)
    trainer = L.Trainer(max_steps=6, callbacks=[callback], logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
    trainer.fit(Module(), data)
    records = [json.loads(line) for line in (tmp_path / "pl" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records}) == [2, 4, 6]
    assert {r["path"] for r in records} == {"net.0.weight", "net.1.weight", "net.3.weight"}
    assert all(r["pred_angle"] is not None for r in records if r["path"] == "net.0.weight")
    # training_step calls self.net(x), never the module itself: the first batch is caught at
    # self.net and measured there, under the module's names.
    assert callback.monitor.report["net.0.weight"].numeric == "yes (channel)"


def hf_train(transformers, model, vocab, shape, steps, callback, tmp_path):
    """Trains ``model`` with the Trainer's defaults (AdamW, linear schedule) on random tokens of
    ``shape`` (rows, length) as their own labels, batch 8, lr 1e-3, decay 0.1, on the CPU."""
    ids = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        weight_decay=0.1,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()


def test_hugging_face_trainer_callback(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is installed by scripts/test.sh")
    pytest.importorskip("accelerate", reason="accelerate (the Trainer's dependency) is installed by scripts/test.sh")
    from normwd.integrations.hf import MonitorCallback

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    callback = MonitorCallback(out=str(tmp_path / "hf"), every=3)
    hf_train(transformers, model, 64, (32, 16), 6, callback, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "hf" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records}) == [3, 6]
    assert "transformer.h.0.attn.c_attn.weight" in {r["path"] for r in records}
    # The Trainer's AdamW: lr from its schedule at each step, decay 0.1 on the matrices.
    assert all(r["lr"] > 0 for r in records)


def test_hugging_face_callback_finds_qk_norm_on_the_first_batch(tmp_path):
    """A Qwen3-style model under the Trainer, the callback given no arguments: the first batch
    is measured before the first step, q_proj and k_proj are found invariant per head and get
    the scale-invariant prediction; every other decayed matrix gets the approximate one."""
    transformers = pytest.importorskip("transformers", reason="transformers is installed by scripts/test.sh")
    pytest.importorskip("accelerate", reason="accelerate (the Trainer's dependency) is installed by scripts/test.sh")
    from normwd.integrations.hf import MonitorCallback

    torch.manual_seed(0)
    cfg = transformers.Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = transformers.Qwen3ForCausalLM(cfg)
    callback = MonitorCallback(out=str(tmp_path / "hf"), every=1)
    hf_train(transformers, model, 97, (16, 12), 2, callback, tmp_path)
    report = callback.monitor.report
    records = [json.loads(line) for line in (tmp_path / "hf" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records}) == [1, 2]
    for r in records:
        kind = r["path"].split(".")[-2]
        if kind in ("q_proj", "k_proj"):
            assert report[r["path"]].granularity == "head of 16" and r["pred_basis"] == "scale-invariant" and r["pred_angle"] > 0, r
        elif report[r["path"]].role == "weight" and report[r["path"]].weight_decay:
            assert r["pred_basis"] == "approximate" and r["pred_angle"] > 0, r
        else:
            assert r.get("pred_basis") is None, r
    assert {r["path"].split(".")[-2] for r in records if r.get("pred_basis") == "approximate"} >= {"v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # The Trainer's own schedule (linear warmup and decay: a LambdaLR) is recorded by name.
    assert 'scheduler = "LambdaLR"' in (tmp_path / "hf" / "config.toml").read_text()
    info = json.loads((tmp_path / "hf" / "monitor.json").read_text())
    assert {t["name"] for t in info["tensors"] if t["scale_invariant"]} == {f"model.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in ("q_proj", "k_proj")}


def test_lightning_callback_measures_the_first_batch_and_reads_the_closures_gradients(tmp_path):
    """Lightning computes the gradients inside the optimizer's step (a closure): the Monitor reads
    them after the step, so the first step's gradient norm is the one the step used. The module's
    forward is called by training_step, so the first batch is measured."""
    L = pytest.importorskip("lightning", reason="lightning is installed by scripts/test.sh")
    from normwd.integrations.lightning import MonitorCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    data = torch.utils.data.DataLoader([(x[i], y[i]) for x, y in batches(1) for i in range(32)], batch_size=32)
    module = Module()
    x, y = batches(1)[0]
    loss = nn.functional.cross_entropy(module(x), y)
    expected = torch.autograd.grad(loss, module.net[0].weight)[0].norm().item()
    callback = MonitorCallback(out=str(tmp_path / "pl"), every=1)
    trainer = L.Trainer(max_steps=1, callbacks=[callback], logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
    trainer.fit(module, data)
    assert callback.monitor.report["net.0.weight"].numeric == "yes (channel)"
    records = [json.loads(line) for line in (tmp_path / "pl" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["path"] == "net.0.weight")
    assert first["step"] == 1 and first["grad_norm"] == pytest.approx(expected, rel=1e-5)
