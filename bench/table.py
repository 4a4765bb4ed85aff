#!/usr/bin/env python3
"""Turns the JSON lines of `normwd bench --train --json` and `pytorch_ref.py` (each prefixed by
`normwd `, `pytorch ` for eager or `compiled ` for torch.compile) into the markdown table
PERFORMANCE.md records. Of repeated rounds the fastest median of each is kept (the one least
disturbed by anything else on the machine). The ratio is against the faster PyTorch mode. FLOP
rates use the FLOPs of one step that PyTorch's counter finds in the twin model (matrix products
and convolutions, forward and backward): the "direct-equivalent" rate. Beside it the "performed"
rate takes off what normwd's Winograd convolutions did not multiply (normwd counts its
convolutions' FLOPs both ways, `conv_flops_equivalent` and `conv_flops_performed`). The FMA peak is the rate `normwd bench --peak` measures
(a `peak ` line: register-only FMA chains on the same threads), printed beside the nominal one,
threads x clock x 2 FMA units x vector lanes x 2, with the lanes from the CPU's flags (AVX-512: 16
f32, but 8 on AMD, whose Zen 4 runs 512-bit operations as two 256-bit halves; AVX2: 8) and the
clock from /proc/cpuinfo. The nominal one misses the boost clock: on a Zen 4 EPYC it said 166
GFLOP/s where 227 were measured. Without a `peak ` line the share is of the nominal peak.

    python3 bench/table.py LINES_FILE
"""

import json
import platform
import sys


def cpu_info():
    """(model name, vendor, flags, MHz) of the first CPU in /proc/cpuinfo."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                info.setdefault(k, v)
    except OSError:
        pass
    return info.get("model name", platform.processor()), info.get("vendor_id", ""), info.get("flags", "").split(), float(info.get("cpu MHz", "0") or 0)


def fma_peak(threads):
    """(peak FLOP/s, how it was reckoned) for `threads` cores of this CPU."""
    _, vendor, flags, mhz = cpu_info()
    if "avx512f" in flags and vendor != "AuthenticAMD":
        lanes, isa = 16, "AVX-512"
    elif "avx512f" in flags:
        lanes, isa = 8, "AVX-512 as 2x256-bit (AMD)"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    else:
        lanes, isa = 4, "SSE (no FMA)"
    peak = threads * mhz * 1e6 * 2 * lanes * 2
    return peak, f"{isa}, {lanes} f32 lanes, 2 FMA units, {mhz:.0f} MHz x {threads} threads = {peak / 1e9:.0f} GFLOP/s"


rows = {}
# The longest compile warm-up of each model: the first round's, before inductor's cache is warm.
cold = {}
measured = None
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    r = json.loads(js)
    if who == "peak":
        measured = r
        continue
    if r.get("compile_s") is not None:
        cold[r["model"]] = max(cold.get(r["model"], 0.0), r["compile_s"])
    best = rows.setdefault(r["model"], {}).get(who)
    if best is None or r["images_per_sec"] > best["images_per_sec"]:
        rows[r["model"]][who] = r

first = next(iter(rows.values()))
n0, p0 = first["normwd"], first["pytorch"]
compiled = any("compiled" in r for r in rows.values())
if p0["device"] == "cpu":
    cpu = cpu_info()[0]
    where = f"{cpu}, {p0['threads']} threads each (normwd rayon {n0['threads']}, PyTorch {p0['threads']})"
    peak, how = fma_peak(p0["threads"])
    if measured:
        how = f"measured {measured['flops'] / 1e9:.0f} GFLOP/s ({measured['isa']} FMA chains on {measured['threads']} threads, the share's base); nominal {how}"
        peak = measured["flops"]
else:
    where = f"{p0['device']} (normwd --device {n0['device']}, PyTorch CUDA eager)"
    peak, how = None, None
flags = [f for f in cpu_info()[2] if f.startswith(("avx", "fma", "amx"))] if p0["device"] == "cpu" else []
if flags:
    print(f"CPU flags: {' '.join(flags)}")
print(
    f"{where}; PyTorch {p0['torch']}; image models +BN, SGD momentum 0.9, wd 5e-4 on weights; gpt AdamW lr 1e-3, wd 0.1 on matrices "
    f"(gpt-muon: Muon lr 0.02, wd 0.1 on them, AdamW on the rest); medians of {n0['steps']} steps"
)
if how:
    print(f"FMA peak: {how}")
print()
head = "| model | input x batch | normwd /s | PyTorch eager /s |"
if compiled:
    head += " PyTorch compiled /s (longest warm-up s) |"
head += " ratio normwd/faster PyTorch | normwd GFLOP/s (% of peak): direct-equivalent / performed | normwd peak RSS MB | PyTorch peak RSS MB |"
print(head)
print("|" + "---|" * head.count(" |"))
for m, r in rows.items():
    n, p = r["normwd"], r["pytorch"]
    c = r.get("compiled")
    # A gpt's examples are windows of shape[2] tokens: its rates are tokens/s.
    per = n["shape"][2] if m.startswith("gpt") else 1
    unit = "tokens" if m.startswith("gpt") else "images"
    shape = "x".join(map(str, n["shape"])) + f" x {n['batch']}"
    fastest = max([p] + ([c] if c else []), key=lambda x: x["images_per_sec"])
    ratio = n["images_per_sec"] / fastest["images_per_sec"]
    flops = p.get("flops_per_step")
    rate = flops * n["images_per_sec"] / n["batch"] if flops else None
    # Winograd convolutions do fewer multiplications than the direct ones PyTorch's counter
    # counts: the rate at that count ("direct-equivalent") beside the rate of what normwd ran.
    saved = n.get("conv_flops_equivalent", 0.0) - n.get("conv_flops_performed", 0.0)
    done = (flops - saved) * n["images_per_sec"] / n["batch"] if flops else None

    def share(r):
        return f"{r / 1e9:.0f} ({100 * r / peak:.0f}%)" if peak else f"{r / 1e9:.0f}"

    frac = f"{share(rate)} / {share(done)}" if rate else "-"
    cells = [m, shape, f"{n['images_per_sec'] * per:.0f} {unit}", f"{p['images_per_sec'] * per:.0f} {unit}"]
    if compiled:
        cells.append(f"{c['images_per_sec'] * per:.0f} {unit} ({cold[m]:.0f} s)" if c else "-")
    rss = f"{p['peak_rss_mb']:.0f}" + (f" / {c['peak_rss_mb']:.0f} compiled" if c else "")
    cells += [f"**{ratio:.2f}** (vs {fastest.get('mode', 'eager')})", frac, f"{n['peak_rss_mb']:.0f}", rss]
    print("| " + " | ".join(cells) + " |")
