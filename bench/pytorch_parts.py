#!/usr/bin/env python3
"""PyTorch twin of examples/step_parts.rs: median forward (loss read back), backward and
optimizer-step times of bench/pytorch_ref.py's models on one fixed batch, 2 threads.
Run: OMP_NUM_THREADS=2 bench/.venv/bin/python bench/pytorch_parts.py mlp|convnet|resnet20"""

import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_ref as R

torch.set_num_threads(2)
model, shape = R.build(sys.argv[1])
model.train()
decay = [p for n, p in model.named_parameters() if p.ndim > 1]
rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}], lr=0.1, momentum=0.9)
x = torch.randn((128, *shape))
y = torch.randint(0, 10, (128,))
T = [[], [], [], []]
n = 15 if sys.argv[1] == "resnet20" else 100
for i in range(n):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.item()
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    if i >= 5:
        for j, v in enumerate([t1 - t0, t2 - t1, t3 - t2, t3 - t0]):
            T[j].append(v)
for name, v in zip(["forward", "backward", "optim", "total"], T):
    v.sort()
    print(f"{name:9} {v[len(v) // 2] * 1e3:.3f} ms")
