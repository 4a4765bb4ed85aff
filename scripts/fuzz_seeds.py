#!/usr/bin/env python3
"""Writes small valid seed inputs for the fuzz targets (scripts/fuzz.sh) into CORPUS/<target>/.

The first byte of an input picks the target's mode (see src/fuzzing.rs). Seeds already
present are left alone; the checkpoint header seed is written by the checkpoint target itself.
"""
import gzip
import struct
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
corpus = Path(sys.argv[1] if len(sys.argv) > 1 else root / "fuzz" / "corpus")


def idx(magic, dims, body):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(body)


def put(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    if not p.exists():
        p.write_bytes(data)


images = idx(2051, [3, 4, 4], range(48))
labels = idx(2049, [3], [0, 9, 4])
test_images = idx(2051, [1, 4, 4], range(16))
test_labels = idx(2049, [1], [2])
put("idx", "images", b"\x00" + images)
put("idx", "images-gz", b"\x00" + gzip.compress(images))
put("idx", "labels", b"\x01" + labels)
files = [images, labels, test_images, test_labels]
cuts, at = [], 0
for f in files[:3]:
    at += len(f)
    cuts.append(at)
put("idx", "dataset", b"\x02" + b"".join(struct.pack("<H", c) for c in cuts) + b"".join(files))

record = bytes([3]) + bytes(i % 256 for i in range(3072))
put("cifar", "two-records", record + bytes([9]) + bytes(3072))

run_config = """model = "convnet"
norm = "gn"
data = "tiny"
epochs = 3
batch_size = 8
optimizer = "adamp"
lr = 0.01
weight_decay = 0.0005
decay = "decoupled"
decay_policy = "exclude-norm-bias"
schedule = "step"
milestones = [1, 2]
warmup_steps = 2
fixed_norm_granularity = "channel"
"""
put("config", "run", b"\x00" + run_config.encode())
put("config", "run-rotational", b"\x00" + b'model = "mlp"\nnorm = "bn"\noptimizer = "rv-sgd"\nepochs = 2\n')
for ex in sorted((root / "examples").glob("*.toml")):
    put("config", "sweep-" + ex.stem, b"\x01" + ex.read_bytes())

fixtures = root / "tests" / "fixtures" / "pytorch"
put("onnx", "pytorch-model", (fixtures / "model.onnx").read_bytes())
put("flax", "flax-checkpoint", (root / "tests" / "fixtures" / "flax" / "ckpt_000000.msgpack").read_bytes())
# A small whole file in each float dtype (the tiny run's own header seed comes from the target).
header = (
    b'{"__metadata__":{"state":"{}"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
    b'"h":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]},'
    b'"d":{"dtype":"F64","shape":[1],"data_offsets":[24,32]},"n":{"dtype":"I64","shape":[1],"data_offsets":[32,40]}}'
)
header += b" " * (-len(header) % 8)
put("checkpoint", "small-file", b"\x01" + struct.pack("<Q", len(header)) + header + bytes(range(40)))
print(f"seeds in {corpus}")
