#!/usr/bin/env python3
"""Turns the JSON lines of `normwd bench --train --json` and `pytorch_ref.py` (each prefixed by
`normwd ` or `pytorch `) into the markdown table PERFORMANCE.md records. Of repeated rounds the
fastest median of each is kept (the one least disturbed by anything else on the machine).

    python3 bench/table.py LINES_FILE
"""
import json
import platform
import sys

rows = {}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    r = json.loads(js)
    best = rows.setdefault(r["model"], {}).get(who)
    if best is None or r["images_per_sec"] > best["images_per_sec"]:
        rows[r["model"]][who] = r

first = next(iter(rows.values()))
n0, p0 = first["normwd"], first["pytorch"]
if p0["device"] == "cpu":
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    where = f"{cpu}, {p0['threads']} threads each (normwd rayon {n0['threads']}, PyTorch {p0['threads']})"
else:
    where = f"{p0['device']} (normwd --device {n0['device']}, PyTorch CUDA eager)"
print(f"{where}; PyTorch {p0['torch']}; image models +BN, SGD momentum 0.9, wd 5e-4 on weights; gpt AdamW lr 1e-3, wd 0.1 on matrices; medians of {n0['steps']} steps")
print()
print("| model | input x batch | normwd /s | PyTorch /s | ratio normwd/PyTorch | normwd peak RSS MB | PyTorch peak RSS MB |")
print("|---|---|---|---|---|---|---|")
for m, r in rows.items():
    n, p = r["normwd"], r["pytorch"]
    # A gpt's examples are windows of shape[2] tokens: its rates are tokens/s.
    per = n["shape"][2] if m == "gpt" else 1
    unit = "tokens" if m == "gpt" else "images"
    shape = "x".join(map(str, n["shape"])) + f" x {n['batch']}"
    ratio = n["images_per_sec"] / p["images_per_sec"]
    print(f"| {m} | {shape} | {n['images_per_sec'] * per:.0f} {unit} | {p['images_per_sec'] * per:.0f} {unit} | {ratio:.2f} | {n['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} |")
