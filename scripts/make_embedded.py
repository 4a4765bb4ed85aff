#!/usr/bin/env python3
"""Regenerate the embedded Fashion-MNIST subset compiled into normwd.

Takes the first N images of each class (in file order) from the Debian package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/) so the subset is
class-balanced and deterministic, and writes gzip'd IDX files with a zero mtime
so the bytes (and the sha256 recorded in data/embedded/SHA256SUMS) are reproducible.

Usage: python3 scripts/make_embedded.py [SRC_DIR] [OUT_DIR]
"""
import gzip
import hashlib
import os
import struct
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "data", "embedded")
PER_CLASS = {"train": 1000, "t10k": 200}  # 10,000 train + 2,000 test images


def read_idx(path, magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    m, n = struct.unpack(">II", data[:8])
    assert m == magic, f"{path}: magic {m}, expected {magic}"
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        return n, (rows, cols), data[16:]
    return n, (), data[8:]


def write_idx(path, magic, n, dims, payload):
    header = struct.pack(">II", magic, n) + b"".join(struct.pack(">I", d) for d in dims)
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(header + payload)


def main():
    os.makedirs(OUT, exist_ok=True)
    sums = []
    for split, per_class in PER_CLASS.items():
        n, (rows, cols), images = read_idx(os.path.join(SRC, f"{split}-images-idx3-ubyte.gz"), 2051)
        m, _, labels = read_idx(os.path.join(SRC, f"{split}-labels-idx1-ubyte.gz"), 2049)
        assert n == m
        size = rows * cols
        taken = {c: 0 for c in range(10)}
        keep = []
        for i in range(n):
            c = labels[i]
            if taken[c] < per_class:
                taken[c] += 1
                keep.append(i)
        assert all(v == per_class for v in taken.values())
        img = b"".join(images[i * size:(i + 1) * size] for i in keep)
        lab = bytes(labels[i] for i in keep)
        for kind, magic, dims, payload in (
            ("images", 2051, (rows, cols), img),
            ("labels", 2049, (), lab),
        ):
            name = f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            path = os.path.join(OUT, name)
            write_idx(path, magic, len(keep), dims, payload)
            with open(path, "rb") as f:
                sums.append(f"{hashlib.sha256(f.read()).hexdigest()}  {name}")
    # Other embedded files (the text of scripts/make_text.py) keep their lines.
    path = os.path.join(OUT, "SHA256SUMS")
    names = {s.split("  ")[1] for s in sums}
    kept = [l for l in open(path).read().splitlines() if l.split("  ")[-1] not in names] if os.path.exists(path) else []
    with open(path, "w") as f:
        f.write("\n".join(sums + kept) + "\n")
    print("\n".join(sums))


if __name__ == "__main__":
    main()
