#!/usr/bin/env bash
# normwd beside PyTorch on the same models, threads and batches: training images/s, the ratio
# normwd/PyTorch, and each process's peak RSS. One process per model and framework (so peak
# RSS is that model's), alternating normwd and PyTorch for ROUNDS rounds; the best median of
# each is kept (the least disturbed by anything else the machine does). With --compile PyTorch
# also runs torch.compile'd (inductor; its compile warm-up reported apart) and the ratio is
# against the faster mode. The table gives normwd's FLOP rate and its share of the host's FMA
# peak, measured first with `normwd bench --peak` (bench/table.py says how both are reckoned).
#
#   bench/compare.sh [--models mlp,convnet,resnet20,gpt,gpt-muon] [--steps 20] [--rounds 2] [--threads 2] [--compile]
#
# gpt-muon: the gpt with Muon on its hidden matrices beside AdamW (PyTorch: torch.optim.Muon + AdamW).
#
# Batches: 128 images; 32 windows of 64 tokens for gpt (nanoGPT's CPU scale).
#
# PyTorch: $NORMWD_TORCH_PYTHON if set, else a venv in bench/.venv (created with
# `pip install torch numpy` on first use, about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
models=mlp,convnet,resnet20 steps=20 rounds=2 threads=2 warmup=5 compile=
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --compile) compile=1; shift ;;
    *) echo "unknown flag $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

py="${NORMWD_TORCH_PYTHON:-bench/.venv/bin/python}"
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "installing PyTorch into bench/.venv ..." >&2
  python3 -m venv bench/.venv
  # numpy too: without it every PyTorch process warns that it could not load it, burying the
  # progress lines (the benchmark itself does not use it).
  bench/.venv/bin/pip install -q torch numpy
  py=bench/.venv/bin/python
fi
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/normwd"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# The FMA rate this machine sustains with the same threads: the peak the shares are taken against.
RAYON_NUM_THREADS=$threads "$bin" bench --peak --json | sed 's/^/peak /' >> "$out" || true
for m in ${models//,/ }; do
  for r in $(seq "$rounds"); do
    echo "  $m round $r/$rounds" >&2
    batch=128 model=$m nopt=adamw popt=default
    [ "$m" = gpt ] && batch=32
    [ "$m" = gpt-muon ] && batch=32 model=gpt nopt=muon popt=muon
    RAYON_NUM_THREADS=$threads "$bin" bench --train --json --models "$model" --optimizer "$nopt" --steps "$steps" --warmup "$warmup" --batch-size "$batch" | sed 's/^/normwd /' >> "$out"
    OMP_NUM_THREADS=$threads "$py" bench/pytorch_ref.py --model "$model" --optimizer "$popt" --steps "$steps" --warmup "$warmup" --threads "$threads" --batch-size "$batch" | sed 's/^/pytorch /' >> "$out"
    if [ -n "$compile" ]; then
      OMP_NUM_THREADS=$threads "$py" bench/pytorch_ref.py --compile --model "$model" --optimizer "$popt" --steps "$steps" --warmup "$warmup" --threads "$threads" --batch-size "$batch" | sed 's/^/compiled /' >> "$out"
    fi
  done
done
"$py" bench/table.py "$out"
