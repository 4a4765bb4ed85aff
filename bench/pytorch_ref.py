#!/usr/bin/env python3
"""PyTorch twin of `normwd bench --train`: the same models (mlp, convnet on 1x28x28, resnet20
on 3x32x32, each with batch norm), PyTorch's default init (U(+-1/sqrt(fan_in)), as normwd's),
SGD lr 0.1 / momentum 0.9 / weight decay 5e-4 on weights only (norm parameters and biases
excluded), cross-entropy, standard-normal batches prepared before the clock starts.
`gpt`: normwd's GPT (nanoGPT's layout with separate q/k/v projections, 4 layers, 4 heads, width
128, block 64, layer norm, tied embeddings, 62 tokens, PyTorch's fused causal attention),
AdamW lr 1e-3, betas 0.9/0.95, decay 0.1 on the linear layers' weights, uniform token windows;
with --optimizer muon, torch.optim.Muon (lr 0.02, decay 0.1, its defaults otherwise) on the
blocks' 2-D matrices and that AdamW on the rest (embeddings, norms), reported as gpt-muon.

Prints one JSON object: images/s from the median step time, peak RSS (VmHWM), and the FLOPs of
one training step (forward and backward, counted by torch.utils.flop_counter on the eager model:
matrix products and convolutions, the ops that set the FMA-bound rate). With --compile the model
is torch.compile'd (inductor) and the time of its first steps, where it compiles, is reported
apart (compile_s) and left out of the median.
Used by bench/compare.sh; run alone: python bench/pytorch_ref.py --model convnet [--compile]
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Mlp(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.fc1 = nn.Linear(features, 512, bias=False)
        self.norm1 = nn.BatchNorm1d(512)
        self.fc2 = nn.Linear(512, 512, bias=False)
        self.norm2 = nn.BatchNorm1d(512)
        self.fc3 = nn.Linear(512, 10)

    def forward(self, x):
        x = F.relu(self.norm1(self.fc1(x.flatten(1))))
        x = F.relu(self.norm2(self.fc2(x)))
        return self.fc3(x)


class ConvNet(nn.Module):
    def __init__(self, shape):
        super().__init__()
        layers, c_in = [], shape[0]
        for c in (32, 64, 128):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(128 * (shape[1] // 8) * (shape[2] // 8), 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c)
        self.stride, self.pad = stride, c - c_in

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        short = x
        if self.stride != 1 or self.pad:
            # Option A: subsample, zero channels (as normwd's resnet20).
            short = x[:, :, :: self.stride, :: self.stride]
            half = self.pad // 2
            short = F.pad(short, (0, 0, 0, 0, half, self.pad - half))
        return F.relu(out + short)


class ResNet20(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.conv1 = nn.Conv2d(shape[0], 16, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for c, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(c_in, c, stride if i == 0 else 1))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.norm1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Block(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(c)
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.c_proj = nn.Linear(c, c, bias=False)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c, bias=False)
        self.mlp_proj = nn.Linear(4 * c, c, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        h = self.ln_1(x)
        q, k, v = (p(h).view(b, t, self.heads, c // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class Gpt(nn.Module):
    def __init__(self, vocab=62, block=64, c=128, heads=4, layers=4):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(block, c)
        self.h = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        for n, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / (2 * layers) ** 0.5 if n.endswith("c_proj.weight") or n.endswith("mlp_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for b in self.h:
            x = b(x)
        return self.ln_f(x) @ self.wte.weight.t()


SHAPES = {"mlp": (1, 28, 28), "convnet": (1, 28, 28), "resnet20": (3, 32, 32), "gpt": (1, 1, 64)}
VOCAB = 62


def build(name):
    shape = SHAPES[name]
    if name == "mlp":
        return Mlp(shape[0] * shape[1] * shape[2]), shape
    if name == "convnet":
        return ConvNet(shape), shape
    if name == "gpt":
        return Gpt(VOCAB, shape[2]), shape
    return ResNet20(shape), shape


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def step_flops(model, shape, batch, gpt, dev):
    """FLOPs of one forward and backward pass at this batch (multiply-adds counted as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    if gpt:
        x = torch.zeros((batch, shape[2]), dtype=torch.long, device=dev)
        y = torch.zeros((batch * shape[2],), dtype=torch.long, device=dev)
    else:
        x = torch.zeros((batch, *shape), device=dev)
        y = torch.zeros((batch,), dtype=torch.long, device=dev)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        F.cross_entropy(out.reshape(y.shape[0], -1), y).backward()
    model.zero_grad(set_to_none=True)
    # The counting pass moved batch-norm running statistics: put them back.
    model.load_state_dict(state)
    return counter.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(SHAPES), required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    ap.add_argument("--optimizer", choices=["default", "muon"], default="default", help="gpt: Muon + AdamW")
    a = ap.parse_args()
    if a.optimizer == "muon" and a.model != "gpt":
        ap.error("--optimizer muon: gpt only")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model, shape = build(a.model)
    model = model.to(dev).train()
    gpt = a.model == "gpt"
    # Decayed: the weights of conv and linear layers (not norms, biases or embeddings).
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.startswith(("wte", "wpe"))]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.startswith(("wte", "wpe")))]
    groups = [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
    muon = None
    if a.optimizer == "muon":
        # The blocks' matrices to Muon (the tied embedding is the head: AdamW's).
        muon = torch.optim.Muon(decay, lr=0.02, weight_decay=0.1)
        opt = torch.optim.AdamW([{"params": rest, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    elif gpt:
        opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    else:
        opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(7)
    flops = step_flops(model, shape, a.batch_size, gpt, dev)
    step_model = torch.compile(model) if a.compile else model
    times, losses, warm = [], [], []
    for i in range(a.warmup + a.steps):
        if gpt:
            ids = torch.randint(0, VOCAB, (a.batch_size, shape[2] + 1), generator=gen).to(dev)
            x, y = ids[:, :-1], ids[:, 1:].reshape(-1)
        else:
            x = torch.randn((a.batch_size, *shape), generator=gen).to(dev)
            y = torch.randint(0, 10, (a.batch_size,), generator=gen).to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if muon is not None:
            muon.zero_grad(set_to_none=True)
        logits = step_model(x)
        loss = F.cross_entropy(logits.reshape(y.shape[0], -1), y)
        loss.backward()
        opt.step()
        if muon is not None:
            muon.step()
        lv = loss.item()
        s = time.perf_counter() - t
        losses.append(lv)
        if i >= a.warmup:
            times.append(s)
        else:
            warm.append(s)
    times.sort()
    step = times[len(times) // 2]
    out = {
        "model": a.model + ("-muon" if muon is not None else ""),
        "shape": list(shape),
        "batch": a.batch_size,
        "step_s": step,
        "images_per_sec": a.batch_size / step,
        "steps": a.steps,
        "losses": losses,
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "mode": "compile" if a.compile else "eager",
        "compile_s": sum(warm) if a.compile else None,
        "flops_per_step": flops,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
