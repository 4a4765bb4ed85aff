#!/usr/bin/env python3
"""The cost of ``normwd.torch.audit`` with example inputs on the models people train at their
real sizes, against the model's own forward and backward pass in the same script: timm's
ResNet-50, ViT-S/16, EfficientNet-B0, ConvNeXt-T (batch 2, 224 px) and a 125M-parameter
Qwen3-shaped Hugging Face config (2x64 tokens). Each measurement runs in a fresh process so its
peak resident memory is its own. ``--verdicts FILE`` writes every weight's verdict
(scale-invariant, granularity, with bias) so two versions can be compared (``--compare A B``).

Run: bench/.venv/bin/python bench/audit.py [--models resnet50,qwen3] [--verdicts out.json]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODELS = ["resnet50", "vit_small_patch16_224", "efficientnet_b0", "convnext_tiny", "qwen3"]


def build(name):
    import torch

    torch.manual_seed(0)
    if name == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        cfg = Qwen3Config(
            vocab_size=32000,
            hidden_size=768,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=12,
            num_key_value_heads=4,
            head_dim=64,
            tie_word_embeddings=False,
        )
        model = Qwen3ForCausalLM(cfg)
        ids = torch.randint(0, cfg.vocab_size, (2, 64))
        return model, {"input_ids": ids, "labels": ids}
    import timm

    return timm.create_model(name, pretrained=False), torch.randn(2, 3, 224, 224)


def one(name, what):
    """Runs in its own process: prints one JSON line."""
    import torch

    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    model, inputs = build(name)
    if what == "audit":
        import normwd.torch  # noqa: F401  (its import is not the audit's memory)
    params = sum(p.numel() for p in model.parameters())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out = {"model": name, "params": params}
    if what == "own":
        y = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        loss = y.loss if hasattr(y, "loss") else y.float().square().mean()
        loss.backward()
    else:
        import normwd.torch as nwd

        report = nwd.audit(model, example_inputs=inputs)
        out["verdicts"] = {p.name: [p.scale_invariant, p.granularity, p.with_bias] for p in report.params if p.role == "weight" and len(p.shape) >= 2}
        out["invariant"] = sum(v[0] for v in out["verdicts"].values())
    out["seconds"] = time.perf_counter() - t
    # ru_maxrss is in KiB on Linux.
    out["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps(out))


def compare(a, b):
    va, vb = json.load(open(a)), json.load(open(b))
    differ = 0
    for model in sorted(set(va) & set(vb)):
        for name in sorted(set(va[model]) | set(vb[model])):
            x, y = va[model].get(name), vb[model].get(name)
            if x != y:
                differ += 1
                print(f"{model} {name}: {x} -> {y}")
    print(f"{differ} verdicts differ")
    return differ


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--verdicts", help="write every weight's verdict here (JSON)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two --verdicts files")
    p.add_argument("--skip-own", action="store_true", help="time the audit only")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        return one(*a.one)
    if a.compare:
        sys.exit(1 if compare(*a.compare) else 0)
    verdicts = {}
    print(f"{'model':<24}{'params':>8}{'own s':>8}{'own MB':>8}{'audit s':>9}{'audit MB':>10}{'mem ratio':>11}{'invariant':>11}")
    for name in a.models.split(","):
        runs = {}
        for what in ["audit"] if a.skip_own else ["own", "audit"]:
            r = subprocess.run([sys.executable, __file__, "--one", name, what], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{name} {what} failed:\n{r.stderr[-3000:]}")
            runs[what] = json.loads(r.stdout.strip().splitlines()[-1])
        au, own = runs["audit"], runs.get("own", {})
        verdicts[name] = au["verdicts"]
        ratio = au["peak_mb"] / own["peak_mb"] if own.get("peak_mb") else float("nan")
        print(
            f"{name:<24}{au['params'] / 1e6:>7.1f}M{own.get('seconds', float('nan')):>8.2f}{own.get('peak_mb', float('nan')):>8.0f}"
            f"{au['seconds']:>9.2f}{au['peak_mb']:>10.0f}{ratio:>11.2f}{au['invariant']:>11}",
            flush=True,
        )
    if a.verdicts:
        tmp = a.verdicts + ".tmp"
        with open(tmp, "w") as f:
            json.dump(verdicts, f, indent=1, sort_keys=True)
        os.replace(tmp, a.verdicts)


if __name__ == "__main__":
    main()
