#!/usr/bin/env bash
# Copies normwd's Python package as installed in the repo's venv (scripts/python-env.sh builds
# it) into gpu-libs/py, for bench/monitor_gpu.sh on a GPU machine without internet: pure Python
# and the abi3 extension (any CPython >= 3.9 on x86-64 Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(scripts/python-env.sh)
src=$("$py" -c "import normwd, os; print(os.path.dirname(normwd.__file__))")
rm -rf gpu-libs/py && mkdir -p gpu-libs/py
cp -r "$src" gpu-libs/py/normwd
find gpu-libs/py -name __pycache__ -prune -exec rm -rf {} +
du -sh gpu-libs/py
