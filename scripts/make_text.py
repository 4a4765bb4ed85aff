#!/usr/bin/env python3
"""Regenerate the embedded text compiled into normwd: the first whole verses of the King James
Bible (public domain) up to 1,000,000 bytes, one verse per line without its reference, from the
`bible` program of Debian's package `bible-kjv` (this script installs it when missing).

Writes data/embedded/kjv.txt.gz with a zero mtime, so the bytes and the sha256 it records in
data/embedded/SHA256SUMS are reproducible.

Usage: python3 scripts/make_text.py [OUT_DIR]
"""
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "data", "embedded")
NAME = "kjv.txt.gz"
LIMIT = 1_000_000


def main():
    if shutil.which("bible") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "bible-kjv"], check=True)
    # -f turns pretty-printing off: one verse per line, after its reference ("Ge1:1 In the ...").
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    verses = [re.sub(r"^\S+\d+:\d+ ", "", line) for line in out.splitlines() if line.strip()]
    assert len(verses) == 31102, f"{len(verses)} verses: expected the whole King James Bible (31,102)"
    text, size = [], 0
    for v in verses:
        if size + len(v.encode()) + 1 > LIMIT:
            break
        text.append(v)
        size += len(v.encode()) + 1
    data = ("\n".join(text) + "\n").encode()
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, NAME)
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(data)
    with open(path, "rb") as f:
        line = f"{hashlib.sha256(f.read()).hexdigest()}  {NAME}"
    sums = os.path.join(OUT, "SHA256SUMS")
    kept = [l for l in open(sums).read().splitlines() if not l.endswith(f"  {NAME}")] if os.path.exists(sums) else []
    with open(sums, "w") as f:
        f.write("\n".join(kept + [line]) + "\n")
    print(f"{len(text)} verses, {len(data)} bytes ({text[-1][:40]}...)\n{line}")


if __name__ == "__main__":
    main()
