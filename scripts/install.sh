#!/usr/bin/env bash
# Creates the three environments the checks run in (CI runs exactly `bash scripts/install.sh && bash scripts/test.sh`):
#   .venv         optimum-depth with every extra needed by the tests and benchmarks, at the newest releases pip
#                 resolves today (what a new user gets);
#   .venv-lowest  the same, with every dependency at the lowest release pyproject.toml admits
#                 (ci/lowest-constraints.txt); scripts/test.sh runs the tests that touch transformers / peft /
#                 accelerate internals there;
#   .venv-export  optimum-onnx with onnxruntime (transformers 4.x, a major release behind): the ONNX export round trip
#                 of a pruned checkpoint runs there. Skip the last two with OPTIMUM_DEPTH_MAIN_ENV_ONLY=1.
# torch is installed first, on its own, so that no dependency pulls a multi-GB CUDA build:
# set TORCH_SPEC to choose another build (default: the CPU wheel torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

make_env() {  # make_env <folder>: a venv with an up-to-date pip and torch
  if [ ! -x "$1/bin/python" ]; then
    "$PYTHON" -m venv "$1"
  fi
  "$1/bin/python" -m pip install -q --upgrade pip
  "$1/bin/python" -m pip install -q "$TORCH_SPEC"
}

make_env .venv
.venv/bin/python -m pip install -q -e ".[dev]"
if [ "${OPTIMUM_DEPTH_MAIN_ENV_ONLY:-0}" != "1" ]; then
  make_env .venv-lowest
  .venv-lowest/bin/python -m pip install -q -c ci/lowest-constraints.txt -e ".[dev]"
  make_env .venv-export
  .venv-export/bin/python -m pip install -q -c ci/export-constraints.txt "optimum-onnx[onnxruntime]"
fi
