"""The rows of the quality table: what each computes, and how every model is evaluated.

A row is one results file ``benchmarks/results/quality/<run_id>.json`` in the paper-run format
(:mod:`benchmarks.paper_tables.results_format`), with the validation perplexity under ``details`` (what choices are
made on) and the test metrics under ``metrics`` (what is reported).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_depth.architectures import count_parameters
from optimum_depth.evaluation import ZeroShotSettings, evaluate_perplexity, evaluate_zero_shot

from ..paper_tables.results_format import read_run, run_path
from ..paper_tables.runner import EvalSettings, finite_or_none, measure_speedup, new_record
from .protocol import BLOCK_TARGETS, SEQ_LEN, TABLE, TEST_WINDOWS, validation_perplexity, validation_score
from .recovery import RECIPES, train_for_budget, training_data
from .training_free import COMPENSATIONS, aware_plan, build_model, dense_validation, plain_selection

ZERO_SHOT_DOCUMENTS = 200
ZERO_SHOT_VARIANTS = ("plain", "linear_ls", "aware")
"""Training-free rows with zero-shot figures (20% only: 7 x 200 documents cost about 17 CPU-minutes a model here, so
the 35% rows, linear_cosine and the 10-minute recovery rows report perplexity only)."""


@dataclass
class QualityContext:
    """What every row reads: the dense model, its tokenizer, the shared record parts and the options."""

    dense: Any
    tokenizer: Any
    base: dict[str, Any]
    results_dir: Path
    self_sequences: int = 512


def evaluate_row(record: dict[str, Any], model, context: QualityContext, zero_shot: bool, latency: bool) -> None:
    """Fills ``record`` with the validation perplexity (details) and the test metrics (metrics)."""
    start = time.perf_counter()
    record["details"]["validation_perplexity"] = validation_perplexity(model, context.tokenizer)
    perplexity, ppl_settings = evaluate_perplexity(
        model, context.tokenizer, ("wikitext2", "ptb"), seq_len=SEQ_LEN, max_windows=TEST_WINDOWS, source="local"
    )
    record["metrics"] = {"num_parameters": count_parameters(model), "perplexity": perplexity}
    record["details"]["perplexity_settings"] = ppl_settings
    record["timings"]["perplexity_s"] = time.perf_counter() - start
    if zero_shot:
        start = time.perf_counter()
        scores, zs_settings = evaluate_zero_shot(model, context.tokenizer, ZeroShotSettings(limit=ZERO_SHOT_DOCUMENTS))
        record["metrics"]["zero_shot"] = finite_or_none(scores)
        record["details"]["zero_shot_settings"] = zs_settings
        record["timings"]["zero_shot_s"] = time.perf_counter() - start
    if latency:
        metrics, settings, seconds = measure_speedup(context.dense, model, context.tokenizer, EvalSettings())
        record["metrics"]["latency"] = metrics
        record["details"]["latency_settings"] = settings
        record["timings"]["latency_s"] = seconds
    print(f"  test {perplexity}, validation {record['details']['validation_perplexity']}", flush=True)


def _record(context: QualityContext, run_id: str, method: dict[str, Any]) -> dict[str, Any]:
    record = new_record(TABLE, run_id, context.base["model"], method, context.base["settings"])
    record["details"] = {}
    return record


def dense_row(context: QualityContext) -> dict[str, Any]:
    """The dense model."""
    record = _record(context, "dense", {"name": "dense", "num_blocks_kept": context.dense.config.num_hidden_layers})
    evaluate_row(record, context.dense, context, zero_shot=True, latency=False)
    return record


def training_free_row(context: QualityContext, size: str, variant: str) -> dict[str, Any]:
    """``variant`` is ``"plain"``, a compensation method (on the plain plan) or ``"aware"``."""
    if variant == "aware":
        selection = aware_plan(context.dense, context.tokenizer, size, context.results_dir)
        plan, criterion, compensation = selection["plan"], "sleb (compensation-aware)", "linear_ls"
    else:
        selection = plain_selection(context.dense, context.tokenizer, size, context.results_dir)
        criterion = selection["chosen"]
        plan, compensation = selection["criteria"][criterion]["plan"], None if variant == "plain" else variant
    model, fit, fit_cpu_s = build_model(context.dense, plan, compensation, context.tokenizer)
    method = {
        "name": variant,
        "criterion": criterion,
        "num_blocks_removed": BLOCK_TARGETS[size],
        "num_blocks_kept": int(model.config.num_hidden_layers),
        "removed_blocks": sorted(plan["removed_blocks"]),
        "plan": plan,
        "compensation": compensation,
        "recovery": "none",
    }
    record = _record(context, f"{variant}-{size}", method)
    record["details"]["compensation"] = fit
    record["timings"]["compensation_cpu_s"] = fit_cpu_s
    evaluate_row(record, model, context, zero_shot=variant in ZERO_SHOT_VARIANTS and size == "b06", latency=True)
    dense = dense_validation(context.dense, context.tokenizer, context.results_dir)
    record["details"]["validation_score"] = validation_score(record["details"]["validation_perplexity"], dense)
    return record


def best_training_free(context: QualityContext, size: str) -> dict[str, Any]:
    """The compensated training-free row of ``size`` with the lowest validation score (all must be computed)."""
    candidates = []
    for variant in (*COMPENSATIONS, "aware"):
        path = run_path(context.results_dir, TABLE, f"{variant}-{size}")
        if not path.exists():
            raise FileNotFoundError(f"Recovery starts from the best training-free row; {path} is not computed yet.")
        candidates.append(read_run(path))
    return min(candidates, key=lambda run: run["details"]["validation_score"])


def recovery_row(context: QualityContext, size: str, recipe_name: str, minutes: int) -> dict[str, Any]:
    """``recipe_name`` trained for ``minutes`` CPU-minutes from the best training-free model of ``size``."""
    start_row = best_training_free(context, size)
    method = start_row["method"]
    model, _, _ = build_model(context.dense, method["plan"], method["compensation"], context.tokenizer)
    recipe = RECIPES[recipe_name]
    train, data = training_data(recipe, context.tokenizer, context.dense, context.self_sequences)
    print(f"  from {start_row['run_id']}: {recipe_name} for {minutes} CPU-min on {data}", flush=True)
    trained, training = train_for_budget(model, context.tokenizer, context.dense, recipe, train, minutes * 60.0)
    record = _record(
        context,
        f"{recipe_name}-{size}-{minutes}m",
        {
            "name": recipe_name,
            "start": start_row["run_id"],
            "criterion": method["criterion"],
            "num_blocks_removed": method["num_blocks_removed"],
            "num_blocks_kept": int(trained.config.num_hidden_layers),
            "removed_blocks": method["removed_blocks"],
            "compensation": method["compensation"],
            "recovery": {**training, "data": data},
        },
    )
    record["timings"]["train_cpu_s"] = training["train_cpu_s"]
    evaluate_row(record, trained, context, zero_shot=minutes >= 30, latency=False)
    return record
