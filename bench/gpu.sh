#!/usr/bin/env bash
# The GPU benchmark, one prepared command for a machine with an NVIDIA card: normwd with
# --device wgpu (Vulkan) beside PyTorch CUDA eager on the same card, images/s and the ratio for
# mlp, convnet and resnet20 at batch 128; a short train run on the GPU compared with the CPU; a
# small sweep on the GPU; the fused multi-config probe on the card.
#
#   bench/gpu.sh [NORMWD_BINARY] [STEPS]
#
# NORMWD_BINARY defaults to target-gpu/release/normwd, built by
# `CARGO_TARGET_DIR=target-gpu cargo build --release --features vulkan` (offline), else the packed
# gpu-libs/normwd.gz. The Vulkan loader is taken from gpu-libs/ when present (scripts/gpu-carry.sh
# packs both there), for GPU machines that have the NVIDIA Vulkan driver but no loader.
# PyTorch: `python3` with torch (or $NORMWD_TORCH_PYTHON). The first run autotunes the kernels
# (measured on an H100: 50-100 s per model), so allow it about 7 minutes.
# Each part reports its own failure and the next part still runs; the exit status is that of
# the worst part.
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target-gpu/release/normwd}"
steps="${2:-30}"
py="${NORMWD_TORCH_PYTHON:-python3}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. bench/part.sh

unpack() { # unpack NAME: gpu-libs/NAME.gz to an executable in $work
  gunzip -c "gpu-libs/$1.gz" > "$work/$1" && chmod +x "$work/$1" && echo "$work/$1"
}
if [ -d gpu-libs ]; then
  export LD_LIBRARY_PATH="$PWD/gpu-libs:${LD_LIBRARY_PATH:-}"
  if [ ! -x "$bin" ] && [ -e gpu-libs/normwd.gz ]; then bin=$(unpack normwd); fi
fi
probe="target-gpu/release/examples/fused_probe"
if [ ! -x "$probe" ] && [ -e gpu-libs/fused_probe.gz ]; then probe=$(unpack fused_probe); fi

# Headless machines: the ICD file NVIDIA installs names libGLX_nvidia.so.0, whose Vulkan entry
# points answer only with an X display ("Could not get 'vkCreateInstance'"); the same driver in
# libEGL_nvidia.so.0 works without one.
if [ -z "${VK_ICD_FILENAMES:-}" ] && [ -z "${DISPLAY:-}" ] && ldconfig -p 2>/dev/null | grep libEGL_nvidia.so.0 >/dev/null; then
  printf '{"file_format_version":"1.0.1","ICD":{"library_path":"libEGL_nvidia.so.0","api_version":"1.3.0"}}\n' > "$work/nvidia_icd.json"
  export VK_ICD_FILENAMES="$work/nvidia_icd.json"
  echo "headless: Vulkan through libEGL_nvidia.so.0 ($VK_ICD_FILENAMES)"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

lines="$work/lines"
bench_pair() { # bench_pair MODEL: one normwd and one PyTorch measurement
  "$bin" bench --train --json --device wgpu --models "$1" --steps "$steps" --warmup 10 > "$work/n" &&
    "$py" bench/pytorch_ref.py --model "$1" --device cuda --steps "$steps" --warmup 10 > "$work/p" &&
    sed 's/^/normwd /' "$work/n" >> "$lines" && sed 's/^/pytorch /' "$work/p" >> "$lines" && cat "$work/n" "$work/p" | cut -c1-200
}
for m in mlp convnet resnet20; do part "throughput $m" bench_pair "$m"; done
[ -s "$lines" ] && part "table" "$py" bench/table.py "$lines"
echo

# Same seed on GPU and CPU: the loss curves must agree to float tolerance.
agree() {
  for dev in cpu wgpu; do
    "$bin" train --model convnet --norm bn --train-subset 1024 --test-subset 256 --epochs 1 --device "$dev" --out "$work/$dev" > /dev/null || return 1
  done
  "$py" - "$work" <<'PY'
import json, sys
def last(dev):
    recs = [json.loads(l) for l in open(f"{sys.argv[1]}/{dev}/metrics.jsonl")]
    return [r for r in recs if r["kind"] == "epoch"][-1]
c, g = last("cpu"), last("wgpu")
print(f"convnet 1 epoch, same seed: train loss cpu {c['train_loss']:.5f} gpu {g['train_loss']:.5f}; test acc cpu {c['test_acc']:.4f} gpu {g['test_acc']:.4f}")
PY
}
part "cpu/gpu agreement" agree

sweep() {
  cat > "$work/grid.toml" <<'TOML'
[base]
model = "convnet"
data = "embedded"
train_subset = 2048
test_subset = 500
epochs = 2
batch_size = 128
optimizer = "sgd"
momentum = 0.9
norm = "bn"
decay_policy = "exclude-norm-bias"
seed = 0

[grid]
lr = [0.05, 0.2]
weight_decay = [0.0005, 0.005]
TOML
  "$bin" sweep --config "$work/grid.toml" --out "$work/sweep" --device wgpu > /dev/null && cat "$work/sweep/results.csv"
}
part "sweep on the GPU (4 points)" sweep
[ -x "$probe" ] && part "fused probe on the GPU" "$probe" wgpu
exit $status
