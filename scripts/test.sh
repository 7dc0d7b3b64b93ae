#!/usr/bin/env bash
# The project's checks, exactly as CI runs them: lint, format and types; the whole test suite (slow tests included)
# in .venv, at the newest dependency releases; then the tests that touch transformers / peft / accelerate internals
# in .venv-lowest, at the lowest releases pyproject.toml admits. Both runs set OPTIMUM_DEPTH_REQUIRE_DATA=1, which
# turns every skip (missing ../shared data or model, missing optional package, missing exporter environment) into a
# failure. Extra arguments go to the first pytest run (e.g. `-m "not slow"` locally); OPTIMUM_DEPTH_SKIP_LOWEST=1
# skips the second run. pytest's exit code, 5 ("no tests collected") included, is the script's.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/mypy
export OPTIMUM_DEPTH_REQUIRE_DATA=1
export OPTIMUM_DEPTH_EXPORT_PYTHON="$PWD/.venv-export/bin/python"
.venv/bin/python -m pytest tests "$@"
if [ "${OPTIMUM_DEPTH_SKIP_LOWEST:-0}" != "1" ]; then
  echo "== lowest dependency releases (ci/lowest-constraints.txt)"
  .venv-lowest/bin/python -m pytest -p no:cacheprovider $(cat ci/lowest-tests.txt)
fi
