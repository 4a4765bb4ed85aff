"""One rank of the two-process tests in test_distributed.py (run by them, not by pytest):
``python dist_worker.py MODE OUT`` with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.

- ``fsdp2``: a Linear-LayerNorm-Linear net under ``fully_shard`` (its parameters DTensors),
  AdamW, a Monitor on every rank at ``every=1``; before and after each step every rank takes
  part in ``full_tensor()`` so rank 0 can write the full tensors' norms and angles to
  ``OUT/expected.json`` beside the Monitor's records.
- ``fsdp2-fail``: as ``fsdp2``, but rank 1's sums fail at step 2: no rank hangs, rank 0
  leaves step 2 out.
- ``ddp``: a net whose batch norm scale is zero-initialised, under DistributedDataParallel,
  SGD, a Monitor at ``every=1`` on every rank (rank 0 writes)."""

import json
import os
import sys

import normwd.torch as nwd
import torch
import torch.distributed as dist
from torch import nn


def main() -> None:
    mode, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1 + rank)
    if mode == "fsdp2-fail" and rank == 1:
        import normwd.torch._monitor as monitor

        real, calls = monitor._step_sums, []

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 4:  # the first of step 2's three tensors
                raise RuntimeError("a failure on rank 1")
            return real(*args, **kwargs)

        monitor._step_sums = failing
    if mode.startswith("fsdp2"):
        from torch.distributed.fsdp import fully_shard

        net = nn.Sequential(nn.Linear(16, 32, bias=False), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 4))
        fully_shard(net)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
        names = [n for n, _ in net.named_parameters()]
        expected = []
        with nwd.Monitor(net, opt, out=out, every=1, channels="full") as mon:
            for step in range(1, 4):
                before = {n: p.full_tensor().double() for n, p in net.named_parameters()}
                opt.zero_grad()
                nn.functional.cross_entropy(net(torch.randn(8, 16, generator=gen)), torch.randint(0, 4, (8,), generator=gen)).backward()
                grads = {n: p.grad.full_tensor().double() for n, p in net.named_parameters()}
                opt.step()
                after = {n: p.full_tensor().double() for n, p in net.named_parameters()}
                for n in names:
                    b, a = before[n], after[n]
                    cos = float((b * a).sum() / (b.norm() * a.norm()))
                    rows = [float(r) for r in b.norm(dim=1)] if b.ndim == 2 else []
                    expected.append({"step": step, "path": n, "norm": float(b.norm()), "grad_norm": float(grads[n].norm()), "cos": cos, "rows": rows})
        if rank == 0:
            with open(os.path.join(out, "expected.json"), "w") as f:
                json.dump({"expected": expected, "tracked": [t[0] for t in mon._tracked]}, f)
    else:
        net = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
        nn.init.zeros_(net[1].weight)
        model = nn.parallel.DistributedDataParallel(net)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        with nwd.Monitor(model, opt, out=out, every=1):
            for _ in range(3):
                opt.zero_grad()
                nn.functional.cross_entropy(model(torch.randn(16, 8, generator=gen)), torch.randint(0, 4, (16,), generator=gen)).backward()
                opt.step()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
