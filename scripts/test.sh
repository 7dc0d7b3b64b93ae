#!/usr/bin/env bash
# The project's checks, exactly as CI runs them: lint, format and types, then the whole test suite (slow tests
# included) with OPTIMUM_DEPTH_REQUIRE_DATA=1, which turns every skip (missing ../shared data or model, missing optional
# package) into a failure. Extra arguments go to pytest (e.g. `-m "not slow"` locally). pytest's exit code, 5 ("no
# tests collected") included, is the script's.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/mypy
OPTIMUM_DEPTH_REQUIRE_DATA=1 .venv/bin/python -m pytest tests "$@"
