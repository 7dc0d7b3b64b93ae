"""Adding per-document zero-shot outcomes to rows computed before they were kept (the paired test needs them).

Only the zero-shot part is re-run, on the same model: the dense model, or a training-free model rebuilt exactly from
its recorded plan and compensation (deterministic). The re-run's accuracies are compared with the stored ones; if
they differ, the new ones replace them and the old ones stay under ``details.zero_shot_first_run``. Recovery rows
cannot be rebuilt (their training stopped on a CPU-time budget, so a re-run would be another model): they keep the
independent-binomials comparison and the report says so.
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

from ..paper_tables.results_format import read_run, run_path, write_run
from ..paper_tables.runner import utc_now
from .protocol import portable
from .rows import QualityContext, evaluate_zero_shot_into
from .training_free import build_model


def _model_of(record: dict[str, Any], context: QualityContext):
    method = record["method"]
    if record["run_id"] == "dense":
        return context.dense
    if method.get("recovery") == "none" and "plan" in method:
        model, _, _ = build_model(context.dense, method["plan"], method.get("compensation"), context.tokenizer)
        return model
    return None


def add_missing_zero_shot_documents(context: QualityContext, patterns: list[str], command: str) -> list[str]:
    """Re-runs the zero-shot part of every row (matching ``patterns``) that has accuracies but no documents.

    Returns:
        The run ids updated.
    """
    folder = context.results_dir / context.spec.table
    updated = []
    for path in sorted(folder.glob("*.json")):
        record = read_run(path)
        run_id = record["run_id"]
        if not any(fnmatch.fnmatch(run_id, p) for p in patterns):
            continue
        if not record["metrics"].get("zero_shot") or record["details"].get("zero_shot_documents"):
            continue
        model = _model_of(record, context)
        if model is None:
            print(f"  {run_id}: a recovery row cannot be rebuilt; it keeps the independent test", flush=True)
            continue
        print(f"  {run_id}: re-running zero-shot for per-document outcomes", flush=True)
        before = record["metrics"]["zero_shot"]
        start = time.process_time()
        evaluate_zero_shot_into(record, model, context)
        after = record["metrics"]["zero_shot"]
        changed = {
            t: (before[t]["acc"], after[t]["acc"]) for t in after if before.get(t, {}).get("acc") != after[t]["acc"]
        }
        if changed:
            record["details"]["zero_shot_first_run"] = before
        record["details"]["zero_shot_rerun"] = {
            "why": "per-document outcomes for the paired test against dense",
            "command": command,
            "finished_at": utc_now(),
            "cpu_s": time.process_time() - start,
            "accuracy_changed": changed,
        }
        write_run(run_path(context.results_dir, context.spec.table, run_id), portable(record))
        print(f"  {run_id}: done, accuracy changes {changed or 'none'}", flush=True)
        updated.append(run_id)
    return updated
