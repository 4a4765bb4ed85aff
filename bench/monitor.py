#!/usr/bin/env python3
"""The cost of normwd.torch.Monitor per training step, in the same script as the run without it:
bench/pytorch_ref.py's ResNet-20 (3x32x32, batch 128, SGD with momentum, normwd.torch.param_groups)
trained alternately without a Monitor, with every=10 and with every=1; prints the median step
time of each and the overhead against the plain run. CPU with 2 threads by default; --device cuda
on a GPU.

Run: bench/.venv/bin/python bench/monitor.py   (scripts/python-env.sh installs the package)
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
from pytorch_ref import build  # noqa: E402

import normwd.torch as nwd  # noqa: E402


def steps(model, opt, x, y, n, sync):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t)
    return times


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet20")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, shape = build(a.model)
    model = model.to(a.device)
    opt = torch.optim.SGD(nwd.param_groups(model, weight_decay=5e-4), lr=0.1, momentum=0.9)
    x = torch.randn(128, *shape, device=a.device)
    y = torch.randint(0, 10, (128,), device=a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    steps(model, opt, x, y, 5, sync)
    times = {"none": [], "every=10": [], "every=1": []}
    for _ in range(a.rounds):
        for mode in times:
            if mode == "none":
                times[mode] += steps(model, opt, x, y, a.steps, sync)
                continue
            # A run folder each: a Monitor refuses one that already holds a run.
            with nwd.Monitor(model, opt, out=tempfile.mkdtemp(), every=int(mode.split("=")[1])):
                times[mode] += steps(model, opt, x, y, a.steps, sync)
    base = statistics.median(times["none"])
    print(f"{a.model} on {a.device} ({a.threads} threads), batch 128, median step over {a.rounds}x{a.steps} steps:")
    for mode, t in times.items():
        # every=10 probes one step in ten: its cost per step is the mean, not the median.
        per = statistics.mean(t) if mode == "every=10" else statistics.median(t)
        ref = statistics.mean(times["none"]) if mode == "every=10" else base
        print(f"  {mode:9s} {1000 * per:7.1f} ms/step  overhead {100 * (per / ref - 1):+5.1f}%")


if __name__ == "__main__":
    main()
