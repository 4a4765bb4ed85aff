#!/usr/bin/env python3
"""normwd's Python package in a PyTorch training of your own: audit the model and the optimizer
most tutorials build, rebuild the groups with normwd.torch.param_groups, audit again, and train
a few hundred steps with a Monitor writing the per-layer dynamics beside the theory's prediction.

Run from the repository root (scripts/python-env.sh installs torch and the package into bench/.venv):
    bench/.venv/bin/python examples/pytorch/audit_groups_monitor.py --out runs/pytorch-monitor
"""
import argparse
import gzip
import os

import torch
from torch import nn

import normwd.torch as nwd

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def data():
    with gzip.open(os.path.join(ROOT, "data", "embedded", "train-images-idx3-ubyte.gz")) as f:
        x = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)[16:].reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(ROOT, "data", "embedded", "train-labels-idx1-ubyte.gz")) as f:
        y = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)[8:]
    return (x.float() / 255 - 0.286) / 0.353, y.long()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/pytorch-monitor")
    p.add_argument("--steps", type=int, default=600)
    a = p.parse_args()
    torch.manual_seed(0)
    x, y = data()
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )
    # The optimizer most tutorials build: every parameter decayed.
    naive = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)
    print(nwd.audit(net, naive, example_inputs=x[:8]), end="\n\n")
    # normwd's groups: decay on the weights only, the scale-invariant convs in a group of their own.
    opt = torch.optim.SGD(nwd.param_groups(net, weight_decay=5e-3), lr=0.1, momentum=0.9)
    print(f"after param_groups: {len(nwd.audit(net, opt).mistakes)} mistakes")
    gen = torch.Generator().manual_seed(1)
    with nwd.Monitor(net, opt, out=a.out, every=10) as mon:
        for step in range(a.steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
    late = [r for r in mon.records if r["step"] > a.steps // 2 and r["pred_angle"] is not None]
    for path in sorted({r["path"] for r in late}):
        rs = [r for r in late if r["path"] == path]
        measured = sum(r["angle"] for r in rs) / len(rs)
        print(f"{path}: angle per step {measured:.4f}, F7 predicts {rs[-1]['pred_angle']:.4f} ({100 * (measured / rs[-1]['pred_angle'] - 1):+.0f}%)")
    print(f"loss {loss.item():.3f}; probes in {a.out}/metrics.jsonl")


if __name__ == "__main__":
    main()
