#!/usr/bin/env bash
# Every test of the repo: the Rust workspace's (cargo test --release, arguments passed on), then
# the Python package's, built from this checkout into the repo's venv (scripts/python-env.sh
# installs torch and the rest there when missing), with its docstring examples.
set -euo pipefail
cd "$(dirname "$0")/.."
# The convolutions time their algorithm choices the first time they see a layer; under the load
# of tests running side by side those timings mean little, so they go to a scratch cache, not
# the user's ~/.cache/normwd (README, "Install").
export NORMWD_CACHE_DIR="${NORMWD_CACHE_DIR:-$(mktemp -d)}"
cargo test --release "$@"
# The convolution kernels again with AVX-512 left out (the AVX2 tiles and the scalar layout
# loops) and with no SIMD at all (the GEMM forms), which this CPU would otherwise never run.
if [ $# -eq 0 ]; then
    NORMWD_CONV_DIRECT=avx2 cargo test --release --lib kernels::conv
    NORMWD_CONV_DIRECT=off cargo test --release --lib kernels::conv
fi
py=$(scripts/python-env.sh)
# The Python code's format and lint (ruff, configured in python/pyproject.toml).
"$py" -m ruff format --config python/pyproject.toml --check python bench
"$py" -m ruff check --config python/pyproject.toml python bench
(cd python/tests && "$py" -m pytest -q -p no:cacheprovider .)
# The docstrings' examples, against the installed package (the checkout has no built extension).
(cd "$(mktemp -d)" && "$py" -m pytest -q -p no:cacheprovider --doctest-modules --pyargs normwd)
