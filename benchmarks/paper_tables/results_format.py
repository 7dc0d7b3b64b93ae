"""The results format of the paper tables: one JSON file per run, validated on load.

A run is one model (dense, or one method at one setting) evaluated once. Its file
``<results dir>/<table>/<run_id>.json`` holds::

    {
      "format": "optimum-depth-paper-run/1",
      "table": "table1",                      # which paper table the run belongs to (see tables.TABLES)
      "run_id": "magnitude-r0.20",            # unique within the table; the table's row key
      "model": {"name": ..., "num_blocks": 30, "dtype": "float32"},
      "method": {"name": "magnitude", ...},   # what was done to the model (criterion, target, recovery, ...)
      "settings": {...},                      # calibration, seeds, evaluation settings, threads
      "metrics": {
        "num_parameters": 106194240,
        "perplexity": {"wikitext2": 70.1, "ptb": 110.2},            # optional
        "zero_shot": {"piqa": {"acc": 0.6, "acc_norm": 0.61}, ...},  # optional; acc in [0, 1], others may be null
        "latency": {"batch_size": 1, "new_tokens": 32, "latency_s": 0.9,
                    "dense_latency_s": 1.1, "speedup": 1.22, "ideal_speedup": 1.27}  # optional
      },
      "timings": {"total_s": 300.0, ...},     # wall seconds per phase
      "versions": {"torch": ..., "transformers": ..., "optimum_depth": ...},
      "command": "python -m benchmarks.paper_tables.table1_block_criteria ...",
      "started_at": "2026-12-01T09:00:00+00:00", "finished_at": "..."
    }

Every figure in a table comes from a ``metrics`` entry; a metric absent from a run renders as "not measured", a
run absent from the results directory as "not run". Malformed files raise :class:`ResultsFormatError` naming the
file and the problem.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

FORMAT = "optimum-depth-paper-run/1"
REQUIRED_KEYS = (
    "format",
    "table",
    "run_id",
    "model",
    "method",
    "settings",
    "metrics",
    "timings",
    "versions",
    "command",
    "started_at",
    "finished_at",
)
LATENCY_KEYS = ("batch_size", "new_tokens", "latency_s", "dense_latency_s", "speedup")


class ResultsFormatError(ValueError):
    """A results file does not follow the paper-run format."""


def _fail(source: str, message: str) -> None:
    raise ResultsFormatError(f"{source}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number_map(source: str, where: str, value: Any, allow_null: bool = False) -> None:
    if not isinstance(value, dict):
        _fail(source, f"`{where}` must be an object, got {type(value).__name__}.")
    for key, number in value.items():
        if not (_is_number(number) or (allow_null and number is None)):
            _fail(source, f"`{where}.{key}` must be a finite number, got {number!r}.")


def _check_metrics(source: str, metrics: Any) -> None:
    if not isinstance(metrics, dict):
        _fail(source, "`metrics` must be an object.")
    params = metrics.get("num_parameters")
    if params is not None and (not isinstance(params, int) or isinstance(params, bool) or params <= 0):
        _fail(source, f"`metrics.num_parameters` must be a positive integer, got {params!r}.")
    if metrics.get("perplexity") is not None:
        _check_number_map(source, "metrics.perplexity", metrics["perplexity"])
    zero_shot = metrics.get("zero_shot")
    if zero_shot is not None:
        if not isinstance(zero_shot, dict):
            _fail(source, "`metrics.zero_shot` must be an object task -> metrics.")
        for task, values in zero_shot.items():
            _check_number_map(source, f"metrics.zero_shot.{task}", values, allow_null=True)
            if values.get("acc") is None:
                _fail(source, f"`metrics.zero_shot.{task}` has no `acc`.")
            if not 0.0 <= values["acc"] <= 1.0:
                _fail(source, f"`metrics.zero_shot.{task}.acc` must be a fraction in [0, 1], got {values['acc']!r}.")
    latency = metrics.get("latency")
    if latency is not None:
        if not isinstance(latency, dict):
            _fail(source, "`metrics.latency` must be an object.")
        missing = [key for key in LATENCY_KEYS if key not in latency]
        if missing:
            _fail(source, f"`metrics.latency` lacks {missing}.")
        for key in LATENCY_KEYS:
            if not _is_number(latency[key]) or latency[key] <= 0:
                _fail(source, f"`metrics.latency.{key}` must be a positive number, got {latency[key]!r}.")


def validate_run(data: Any, source: str = "<results>") -> dict[str, Any]:
    """Checks that ``data`` is one run in the paper-run format.

    Args:
        data: The parsed JSON.
        source: Where it came from, for error messages.

    Returns:
        ``data`` itself.

    Raises:
        ResultsFormatError: On a missing key, a wrong format tag, or a metric of the wrong type.
    """
    if not isinstance(data, dict):
        _fail(source, f"a run must be a JSON object, got {type(data).__name__}.")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        _fail(source, f"missing keys {missing}.")
    if data["format"] != FORMAT:
        _fail(source, f"`format` is {data['format']!r}, expected {FORMAT!r}.")
    for key in ("table", "run_id", "command", "started_at", "finished_at"):
        if not isinstance(data[key], str) or not data[key]:
            _fail(source, f"`{key}` must be a non-empty string, got {data[key]!r}.")
    for key in ("model", "method", "settings", "versions"):
        if not isinstance(data[key], dict):
            _fail(source, f"`{key}` must be an object.")
    if not isinstance(data["method"].get("name"), str):
        _fail(source, "`method.name` must be a string.")
    _check_number_map(source, "timings", data["timings"])
    _check_metrics(source, data["metrics"])
    return data


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates one results file.

    Raises:
        ResultsFormatError: If the file is not valid JSON or not a valid run.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsFormatError(f"{path}: not valid JSON ({err}).") from err
    return validate_run(data, str(path))


def load_runs(
    results_dir: str | os.PathLike, only: Collection[Path] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Reads every ``*.json`` run under ``results_dir`` (recursively).

    Args:
        results_dir: The results directory.
        only: If given, read only these files (resolved paths), e.g. the ones committed to git.

    Returns:
        table -> run_id -> run.

    Raises:
        ResultsFormatError: On a malformed file, or two files with the same table and run id.
    """
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    origin: dict[tuple[str, str], Path] = {}
    for path in sorted(Path(results_dir).rglob("*.json")):
        if only is not None and path.resolve() not in only:
            continue
        run = read_run(path)
        key = (run["table"], run["run_id"])
        if key in origin:
            raise ResultsFormatError(f"{path}: run {key} is also in {origin[key]}.")
        origin[key] = path
        runs.setdefault(run["table"], {})[run["run_id"]] = run
    return runs


def run_path(results_dir: str | os.PathLike, table: str, run_id: str) -> Path:
    """Where the run ``run_id`` of ``table`` is stored."""
    return Path(results_dir) / table / f"{run_id}.json"


def write_run(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Validates ``data`` and writes it atomically (a temporary file, then a rename) to ``path``."""
    path = Path(path)
    validate_run(data, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path
