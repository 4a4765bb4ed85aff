#!/usr/bin/env python3
"""The cost of normwd.torch.Monitor per training step, in the same script as the run without it:
each model trained alternately without a Monitor, with every=10 and with every=1 (the Monitor's
defaults otherwise: 32 tensors per probe step in turn, channel quantiles); prints the median step
time of each, the overhead against the plain run, the bytes one probe step writes and the
Monitor's copy of the probed weights against the tracked weights' size.

Models: resnet20 (bench/pytorch_ref.py's, 3x32x32, batch 128), timm's resnet18 and resnet50
(3x112x112, batch 16), gpt2-50m (Hugging Face GPT-2, 8 layers of 512, 51M parameters, 8x128
tokens; AdamW). SGD with momentum on normwd.torch.param_groups for the CNNs. CPU with 2 threads by
default; --device cuda on a GPU.

Run: bench/.venv/bin/python bench/monitor.py --model resnet18   (scripts/python-env.sh installs the package)
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import normwd.torch as nwd  # noqa: E402
from pytorch_ref import build  # noqa: E402


def steps(model, opt, batch, loss_fn, n, sync):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t)
    return times


def build_model(name, device):
    """(model, optimizer, batch, loss function)."""
    torch.manual_seed(0)
    if name == "gpt2-50m":
        import transformers

        cfg = transformers.GPT2Config(vocab_size=50257, n_positions=128, n_embd=512, n_layer=8, n_head=8)
        model = transformers.GPT2LMHeadModel(cfg).to(device)
        ids = torch.randint(0, cfg.vocab_size, (8, 128), device=device)
        opt = torch.optim.AdamW(nwd.param_groups(model, weight_decay=0.1), lr=3e-4)
        return model, opt, ids, lambda m, b: m(input_ids=b, labels=b).loss
    if name in ("resnet18", "resnet50"):
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=100).to(device)
        x = torch.randn(16, 3, 112, 112, device=device)
        y = torch.randint(0, 100, (16,), device=device)
    else:
        model, shape = build(name)
        model = model.to(device)
        x = torch.randn(128, *shape, device=device)
        y = torch.randint(0, 10, (128,), device=device)
    opt = torch.optim.SGD(nwd.param_groups(model, weight_decay=5e-4), lr=0.1, momentum=0.9)
    return model, opt, (x, y), lambda m, b: F.cross_entropy(m(b[0]), b[1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet20", help="resnet20, resnet18, resnet50 or gpt2-50m; comma-separated for several")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    for name in a.model.split(","):
        model, opt, batch, loss_fn = build_model(name, a.device)
        steps(model, opt, batch, loss_fn, 3, sync)
        times = {"none": [], "every=10": [], "every=1": []}
        written, copy_mb, tracked_mb = [], 0.0, 0.0
        for _ in range(a.rounds):
            for mode in times:
                if mode == "none":
                    times[mode] += steps(model, opt, batch, loss_fn, a.steps, sync)
                    continue
                # A run folder each: a Monitor refuses one that already holds a run.
                out = tempfile.mkdtemp()
                with nwd.Monitor(model, opt, out=out, every=int(mode.split("=")[1])) as mon:
                    times[mode] += steps(model, opt, batch, loss_fn, a.steps, sync)
                    tracked_mb = sum(p.numel() * p.element_size() for _, p, _, _ in mon._tracked) / 2**20
                    copy_mb = max(copy_mb, sum(p.numel() * p.element_size() for _, p, _, _ in mon._probe) / 2**20)
                if mode == "every=1":
                    written.append(os.path.getsize(os.path.join(out, "metrics.jsonl")) / mon.steps)
        base = statistics.median(times["none"])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name} ({params:.1f}M parameters) on {a.device} ({a.threads} threads), median step over {a.rounds}x{a.steps} steps:")
        for mode, t in times.items():
            # every=10 probes one step in ten: its cost per step is the mean, not the median.
            per = statistics.mean(t) if mode == "every=10" else statistics.median(t)
            ref = statistics.mean(times["none"]) if mode == "every=10" else base
            print(f"  {mode:9s} {1000 * per:8.1f} ms/step  overhead {100 * (per / ref - 1):+5.1f}%")
        print(f"  one probe step writes {statistics.mean(written) / 1024:.1f} KB; the Monitor's copy {copy_mb:.1f} MB of {tracked_mb:.1f} MB tracked", flush=True)
        del model, opt


if __name__ == "__main__":
    main()
