#!/usr/bin/env bash
# The Monitor on a CUDA card, one prepared command for a machine with an NVIDIA GPU and PyTorch
# (python3 with torch, or $NORMWD_TORCH_PYTHON) but no internet: the agreement tests (the angle
# from the update against a float64 reference, bfloat16 weights against float64, on the card
# where `torch.cuda.is_available()`), then bench/monitor.py's overhead and record size for
# ResNet-18, ResNet-50 (timm) and a 50M GPT-2 (transformers) on the card, each model skipped
# with a line where its library is missing there.
#
#   bench/monitor_gpu.sh            # on the GPU machine, from the repository root
#
# normwd's Python package is taken from gpu-libs/py (scripts/monitor-carry.sh copies it there
# from this machine's venv: pure Python plus the abi3 extension, any CPython >= 3.9), else from
# the machine's own installation. Allow about 5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
py="${NORMWD_TORCH_PYTHON:-python3}"
[ -d gpu-libs/py ] && export PYTHONPATH="$PWD/gpu-libs/py:$PWD/python/tests:${PYTHONPATH:-}"
. bench/part.sh
"$py" -c "import torch, normwd.torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 2
if "$py" -c "import pytest" 2>/dev/null; then
  part "agreement tests (cpu and cuda)" "$py" -m pytest -q -p no:cacheprovider python/tests/test_monitor.py -k "tiny_angles or as_float64_would"
else
  echo "== agreement tests: pytest is not installed here, skipped"
fi
models=resnet20
"$py" -c "import timm" 2>/dev/null && models="$models,resnet18,resnet50" || echo "== timm is not installed here: ResNet-18/50 skipped"
"$py" -c "import transformers" 2>/dev/null && models="$models,gpt2-50m" || echo "== transformers is not installed here: GPT-2 skipped"
part "monitor overhead on cuda ($models)" "$py" bench/monitor.py --device cuda --model "$models" --steps 30
exit $status
