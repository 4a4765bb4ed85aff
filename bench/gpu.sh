#!/usr/bin/env bash
# The GPU benchmark, one prepared command for a machine with an NVIDIA card: normwd with
# --device wgpu (Vulkan) beside PyTorch CUDA eager on the same card, images/s and the ratio for
# mlp, convnet and resnet20 at batch 128, then a short train run on the GPU compared with the CPU.
#
#   bench/gpu.sh [NORMWD_BINARY] [STEPS]
#
# NORMWD_BINARY defaults to target-gpu/release/normwd, built by
# `CARGO_TARGET_DIR=target-gpu cargo build --release --features wgpu` (offline), else the packed
# gpu-libs/normwd.gz. The Vulkan loader is taken from gpu-libs/ when present (scripts/gpu-carry.sh
# packs both there), for GPU machines that have the NVIDIA Vulkan driver but no loader.
# PyTorch: `python3` with torch (or $NORMWD_TORCH_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target-gpu/release/normwd}"
steps="${2:-30}"
if [ -d gpu-libs ]; then
  export LD_LIBRARY_PATH="$PWD/gpu-libs:${LD_LIBRARY_PATH:-}"
  if [ ! -x "$bin" ] && [ -e gpu-libs/normwd.gz ]; then
    gunzip -c gpu-libs/normwd.gz > gpu-libs/normwd && chmod +x gpu-libs/normwd
    bin=gpu-libs/normwd
  fi
fi
py="${NORMWD_TORCH_PYTHON:-python3}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for m in mlp convnet resnet20; do
  "$bin" bench --train --json --device wgpu --models "$m" --steps "$steps" --warmup 10 | sed 's/^/normwd /' >> "$out"
  "$py" bench/pytorch_ref.py --model "$m" --device cuda --steps "$steps" --warmup 10 | sed 's/^/pytorch /' >> "$out"
done
"$py" bench/table.py "$out"
echo
# Same seed on GPU and CPU: the loss curves must agree to float tolerance.
d=$(mktemp -d)
for dev in cpu wgpu; do
  "$bin" train --model convnet --norm bn --train-subset 1024 --test-subset 256 --epochs 1 --device "$dev" --out "$d/$dev" > /dev/null
done
"$py" - "$d" <<'PY'
import json, sys
def losses(dev):
    recs = [json.loads(l) for l in open(f"{sys.argv[1]}/{dev}/metrics.jsonl")]
    return [r for r in recs if r["kind"] == "epoch"][-1]
c, g = losses("cpu"), losses("wgpu")
print(f"convnet 1 epoch, same seed: train loss cpu {c['train_loss']:.5f} gpu {g['train_loss']:.5f}; test acc cpu {c['test_acc']:.4f} gpu {g['test_acc']:.4f}")
PY
