#!/usr/bin/env bash
# Installs what the fixture scripts under tests/fixtures/ need (tests/fixtures/requirements.txt)
# into bench/.venv, the venv bench/compare.sh uses, and prints how to run one:
#   scripts/fixture-venv.sh && bench/.venv/bin/python tests/fixtures/timm/make.py
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
bench/.venv/bin/pip install -q -r tests/fixtures/requirements.txt
echo "ready: bench/.venv/bin/python tests/fixtures/<name>/make.py" >&2
