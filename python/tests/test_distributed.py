"""Monitor under two processes on gloo (CPU): FSDP2's sharded parameters, where every rank must
take part in each probe step's sums, and DistributedDataParallel with a zero-initialised scale,
where rank 0 alone measures. Each worker is python/tests/dist_worker.py; a hang is a failure
after 120 s."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def two_ranks(mode: str, out: str) -> None:
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "dist_worker.py"), mode, out], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=120)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{mode}: the two ranks did not finish in 120 s (a hang)")
    for rank, (p, text) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"{mode} rank {rank} failed:\n{text[-3000:]}"


def test_fsdp2_every_rank_measures_its_shard_and_the_records_hold_the_full_tensors(tmp_path):
    pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) is in torch >= 2.6")
    out = str(tmp_path / "fsdp2")
    two_ranks("fsdp2", out)
    with open(os.path.join(out, "expected.json")) as f:
        data = json.load(f)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    expected = {(e["step"], e["path"]): e for e in data["expected"]}
    assert set(data["tracked"]) == {"0.weight", "1.weight", "3.weight"}
    assert sorted({r["step"] for r in records}) == [1, 2, 3] and len(records) == 3 * 3
    for r in records:
        e = expected[(r["step"], r["path"])]
        assert r["norm"] == pytest.approx(e["norm"], rel=1e-6), r
        assert r["grad_norm"] == pytest.approx(e["grad_norm"], rel=1e-5), r
        assert r["angle"] == pytest.approx(math.acos(min(1.0, e["cos"])), rel=1e-3), r
        if r["path"] == "0.weight":
            # Scale-invariant (it feeds the LayerNorm alone): its 32 rows, 16 on each rank,
            # in their places.
            assert r["scale_invariant"] and r["channel_norm"] == pytest.approx(e["rows"], rel=1e-6)


def test_ddp_with_two_ranks_and_a_zero_initialised_scale(tmp_path):
    out = str(tmp_path / "ddp")
    two_ranks("ddp", out)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert sorted({r["step"] for r in records}) == [1, 2, 3]
    zero = [r for r in records if r["path"] == "1.weight"]
    # The zero scale's effective lr is undefined (null), and nothing broke.
    assert zero and zero[0]["norm"] == 0.0 and zero[0]["eff_lr"] is None


def test_fsdp2_a_failure_on_one_rank_hangs_no_rank(tmp_path):
    """Rank 1's sums fail at step 2: it still takes part in the all-reduce (with NaN), so no
    rank waits forever; rank 0 leaves step 2 out and goes on."""
    pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) is in torch >= 2.6")
    out = str(tmp_path / "fsdp2-fail")
    two_ranks("fsdp2-fail", out)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert sorted({r["step"] for r in records}) == [1, 3]
