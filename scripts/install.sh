#!/usr/bin/env bash
# Creates ./.venv and installs optimum-depth with every extra needed by the tests and benchmarks.
# torch is installed first, on its own, so that no dependency pulls a multi-GB CUDA build:
# set TORCH_SPEC to choose another build (default: the CPU wheel torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[dev]"
