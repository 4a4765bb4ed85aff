#!/usr/bin/env bash
# Makes the repo's Python venv (bench/.venv, or $NORMWD_VENV) hold what the Python package's
# tests need (python/requirements-test.txt), installing only what is missing, then installs the
# package from this checkout (pip install ./python: maturin builds the Rust extension).
# Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NORMWD_VENV:-bench/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
if ! "$py" -c "import torch, numpy, pytest, timm, transformers, lightning, accelerate, ruff, jax, flax, optax" 2>/dev/null; then
  echo "installing the Python test packages into $venv (PyTorch: a few minutes) ..." >&2
  "$py" -m pip install -q -r python/requirements-test.txt
fi
"$py" -m pip install -q ./python >&2
echo "$(cd "$venv" && pwd)/bin/python"
