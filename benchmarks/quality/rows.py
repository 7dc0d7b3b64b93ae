"""The rows of the quality table: what each computes, and how every model is evaluated.

A row is one results file ``benchmarks/results/<table>/<run_id>.json`` (``quality/`` for SmolLM2,
``quality/gemma3-270m/`` for Gemma) in the paper-run format (:mod:`benchmarks.paper_tables.results_format`), with
the validation perplexity under ``details`` (what choices are made on) and the test metrics under ``metrics`` (what
is reported). Zero-shot rows also keep every document's outcome (``details.zero_shot_documents``), so that the
report compares dense and pruned with a paired test on the same documents (``optimum_depth.evaluation.paired``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_depth.architectures import count_parameters
from optimum_depth.evaluation import ZeroShotSettings, evaluate_perplexity
from optimum_depth.evaluation.zero_shot import evaluate_zero_shot_documents

from ..paper_tables.results_format import read_run, run_path
from ..paper_tables.runner import EvalSettings, finite_or_none, measure_speedup, new_record
from .models import QualityModel
from .protocol import SEQ_LEN, TEST_WINDOWS, validation_perplexity, validation_score
from .recovery import RECIPES, train_for_budget, training_data
from .training_free import (
    COMPENSATIONS,
    aware_plan,
    build_model,
    cli_defaults,
    default_recipe_model,
    dense_validation,
    plain_selection,
)

ZERO_SHOT_DOCUMENTS = 200
ZERO_SHOT_VARIANTS = ("plain", "linear_ls", "aware", "default")
"""Training-free rows with zero-shot figures (20% only: 7 x 200 documents cost about 17 CPU-minutes a model here, so
the 35% rows, linear_cosine, reconstruct and the 10-minute recovery rows report perplexity only)."""


@dataclass
class QualityContext:
    """What every row reads: the model spec, the dense model, its tokenizer, the shared record parts and the options."""

    spec: QualityModel
    dense: Any
    tokenizer: Any
    base: dict[str, Any]
    results_dir: Path
    self_sequences: int = 512


def evaluate_zero_shot_into(record: dict[str, Any], model, context: QualityContext) -> None:
    """Zero-shot accuracy (first 200 documents of each task) with every document's outcome, into ``record``."""
    start = time.perf_counter()
    scores, settings, documents = evaluate_zero_shot_documents(
        model, context.tokenizer, ZeroShotSettings(limit=ZERO_SHOT_DOCUMENTS)
    )
    record["metrics"]["zero_shot"] = finite_or_none(scores)
    record["details"]["zero_shot_settings"] = settings
    record["details"]["zero_shot_documents"] = documents
    record["timings"]["zero_shot_s"] = time.perf_counter() - start


def evaluate_row(record: dict[str, Any], model, context: QualityContext, zero_shot: bool, latency: bool) -> None:
    """Fills ``record`` with the validation perplexity (details) and the test metrics (metrics)."""
    start = time.perf_counter()
    batch_size = context.spec.ppl_batch_size
    record["details"]["validation_perplexity"] = validation_perplexity(model, context.tokenizer, batch_size)
    perplexity, ppl_settings = evaluate_perplexity(
        model,
        context.tokenizer,
        ("wikitext2", "ptb"),
        seq_len=SEQ_LEN,
        max_windows=TEST_WINDOWS,
        source="local",
        batch_size=batch_size,
        bos="auto",
    )
    record["metrics"] = {"num_parameters": count_parameters(model), "perplexity": perplexity}
    record["details"]["perplexity_settings"] = ppl_settings
    record["timings"]["perplexity_s"] = time.perf_counter() - start
    if zero_shot:
        evaluate_zero_shot_into(record, model, context)
    if latency:
        metrics, settings, seconds = measure_speedup(context.dense, model, context.tokenizer, EvalSettings())
        record["metrics"]["latency"] = metrics
        record["details"]["latency_settings"] = settings
        record["timings"]["latency_s"] = seconds
    print(f"  test {perplexity}, validation {record['details']['validation_perplexity']}", flush=True)


def _record(context: QualityContext, run_id: str, method: dict[str, Any]) -> dict[str, Any]:
    record = new_record(context.spec.table, run_id, context.base["model"], method, context.base["settings"])
    record["details"] = {}
    return record


def dense_row(context: QualityContext) -> dict[str, Any]:
    """The dense model."""
    record = _record(context, "dense", {"name": "dense", "num_blocks_kept": context.dense.config.num_hidden_layers})
    evaluate_row(record, context.dense, context, zero_shot=True, latency=False)
    return record


def default_row(context: QualityContext, size: str) -> dict[str, Any]:
    """The default recipe of ``optimum-depth prune`` (``criterion="auto"`` + its default compensation)."""
    num_blocks = context.spec.block_targets[size]
    model, plan, config, cpu_s = default_recipe_model(context.dense, context.tokenizer, num_blocks)
    choice = (plan.get("reason") or {}).get("auto") or {}
    method = {
        "name": "default",
        "criterion": f"auto: {choice.get('chosen')}",
        "num_blocks_removed": num_blocks,
        "num_blocks_kept": int(model.config.num_hidden_layers),
        "removed_blocks": sorted(plan["removed_blocks"]),
        "plan": plan,
        "compensation": config["compensation"]["method"],
        "config": config,
        "cli_defaults": cli_defaults(),
        "recovery": "none",
    }
    record = _record(context, f"default-{size}", method)
    record["details"]["compensation"] = model.config.pruning.get("compensation")
    record["details"]["auto"] = choice
    record["timings"]["pruning_cpu_s"] = cpu_s
    evaluate_row(record, model, context, zero_shot=size == context.spec.small, latency=True)
    dense = dense_validation(context.dense, context.tokenizer, context.results_dir, context.spec)
    record["details"]["validation_score"] = validation_score(record["details"]["validation_perplexity"], dense)
    return record


def training_free_row(context: QualityContext, size: str, variant: str) -> dict[str, Any]:
    """``variant`` is ``"plain"``, a compensation method (on the plain plan), ``"aware"`` or ``"default"``."""
    if variant == "default":
        return default_row(context, size)
    if variant == "aware":
        selection = aware_plan(context.dense, context.tokenizer, context.spec, size, context.results_dir)
        plan, criterion, compensation = selection["plan"], "sleb (compensation-aware)", "linear_ls"
    else:
        selection = plain_selection(context.dense, context.tokenizer, context.spec, size, context.results_dir)
        criterion = selection["chosen"]
        plan, compensation = selection["criteria"][criterion]["plan"], None if variant == "plain" else variant
    model, fit, fit_cpu_s = build_model(context.dense, plan, compensation, context.tokenizer)
    method = {
        "name": variant,
        "criterion": criterion,
        "num_blocks_removed": context.spec.block_targets[size],
        "num_blocks_kept": int(model.config.num_hidden_layers),
        "removed_blocks": sorted(plan["removed_blocks"]),
        "plan": plan,
        "compensation": compensation,
        "recovery": "none",
    }
    record = _record(context, f"{variant}-{size}", method)
    record["details"]["compensation"] = fit
    record["timings"]["compensation_cpu_s"] = fit_cpu_s
    zero_shot = variant in ZERO_SHOT_VARIANTS and size == context.spec.small
    evaluate_row(record, model, context, zero_shot=zero_shot, latency=True)
    dense = dense_validation(context.dense, context.tokenizer, context.results_dir, context.spec)
    record["details"]["validation_score"] = validation_score(record["details"]["validation_perplexity"], dense)
    return record


def best_training_free(context: QualityContext, size: str) -> dict[str, Any]:
    """The training-free row of ``size`` with the lowest validation score, among those computed.

    The plain row must exist; the compensated ones (``linear_ls``, ``linear_cosine``, ``aware``) count when computed
    (on a family without compensation the plain row is the start). The recovery record names the start row.
    """
    candidates = []
    for variant in ("plain", *COMPENSATIONS, "aware"):
        path = run_path(context.results_dir, context.spec.table, f"{variant}-{size}")
        if path.exists():
            candidates.append(read_run(path))
        elif variant == "plain":
            raise FileNotFoundError(f"Recovery starts from the best training-free row; {path} is not computed yet.")
    return min(candidates, key=lambda run: run["details"]["validation_score"])


LR_CHECK = {"lm-full-c4-lrval": ("lm-full-c4", "lm-full-c4-lr3e-4", "lm-full-c4-lr3e-5")}
"""``-lrval`` recipes: the recipe among these whose 10-minute row (20% size) has the best validation score."""


def resolve_recipe(context: QualityContext, recipe_name: str) -> tuple[str, dict[str, Any] | None]:
    """The recipe a row trains with: ``recipe_name`` itself, or for ``-lrval`` the one chosen on validation.

    Returns:
        ``(recipe name, choice record or None)``.

    Raises:
        FileNotFoundError: If no 10-minute learning-rate row of the 20% size is computed yet.
    """
    if recipe_name not in LR_CHECK:
        return recipe_name, None
    candidates = {}
    for name in LR_CHECK[recipe_name]:
        path = run_path(context.results_dir, context.spec.table, f"{name}-{context.spec.small}-10m")
        if path.exists():
            dense = dense_validation(context.dense, context.tokenizer, context.results_dir, context.spec)
            candidates[name] = validation_score(read_run(path)["details"]["validation_perplexity"], dense)
    if len(candidates) < 2:
        raise FileNotFoundError(f"{recipe_name} needs at least two 10-minute learning-rate rows; found {candidates}.")
    chosen = min(candidates, key=lambda name: candidates[name])
    return chosen, {"chosen": chosen, "validation_scores_at_10_minutes": candidates}


def recovery_row(context: QualityContext, size: str, recipe_name: str, minutes: int) -> dict[str, Any]:
    """``recipe_name`` trained for ``minutes`` CPU-minutes from the best training-free model of ``size``."""
    start_row = best_training_free(context, size)
    method = start_row["method"]
    model, _, _ = build_model(context.dense, method["plan"], method["compensation"], context.tokenizer)
    resolved, lr_choice = resolve_recipe(context, recipe_name)
    recipe = RECIPES[resolved]
    train, data = training_data(recipe, context.tokenizer, context.dense, context.self_sequences)
    print(f"  from {start_row['run_id']}: {recipe_name} for {minutes} CPU-min on {data}", flush=True)
    trained, training = train_for_budget(model, context.tokenizer, context.dense, recipe, train, minutes * 60.0)
    record = _record(
        context,
        f"{recipe_name}-{size}-{minutes}m",
        {
            "name": recipe_name,
            "start": start_row["run_id"],
            "start_chosen_among": sorted(
                p.stem for p in (context.results_dir / context.spec.table).glob(f"*-{size}.json")
            ),
            "criterion": method["criterion"],
            "num_blocks_removed": method["num_blocks_removed"],
            "num_blocks_kept": int(trained.config.num_hidden_layers),
            "removed_blocks": method["removed_blocks"],
            "compensation": method["compensation"],
            "recovery": {**training, "data": data},
            "learning_rate_choice": lr_choice,
        },
    )
    record["timings"]["train_cpu_s"] = training["train_cpu_s"]
    evaluate_row(record, trained, context, zero_shot=minutes >= 30, latency=False)
    record["details"]["validation_score"] = validation_score(
        record["details"]["validation_perplexity"],
        dense_validation(context.dense, context.tokenizer, context.results_dir, context.spec),
    )
    return record


def bos_protocol_row(context: QualityContext) -> dict[str, Any]:
    """The dense model's test perplexity fed the other way (BOS once vs BOS on every window), beside the dense row.

    The dense row is evaluated with ``bos="auto"`` (the mode the model needs); this row measures the other of
    ``"first"`` / ``"every"`` on the same corpora and windows, which is what justifies the protocol per model.
    """
    dense_path = run_path(context.results_dir, context.spec.table, "dense")
    if not dense_path.exists():
        raise FileNotFoundError(f"The BOS protocol row compares with the dense row; {dense_path} is not computed yet.")
    dense = read_run(dense_path)
    own = dense["details"]["perplexity_settings"]["bos"]
    other = "first" if own == "every" else "every"
    record = _record(
        context, "bos-protocol", {"name": "bos-protocol", "num_blocks_kept": dense["model"]["num_blocks"]}
    )
    start = time.perf_counter()
    perplexity, settings = evaluate_perplexity(
        context.dense,
        context.tokenizer,
        ("wikitext2", "ptb"),
        seq_len=SEQ_LEN,
        max_windows=TEST_WINDOWS,
        source="local",
        batch_size=context.spec.ppl_batch_size,
        bos=other,
    )
    record["metrics"] = {
        "perplexity_by_bos": {own: dense["metrics"]["perplexity"], other: perplexity},
        "ratio_other_to_own": {name: perplexity[name] / dense["metrics"]["perplexity"][name] for name in perplexity},
    }
    record["details"] = {"own_mode": own, "other_mode": other, "perplexity_settings": settings}
    record["timings"]["perplexity_s"] = time.perf_counter() - start
    print(f"  dense with bos={other}: {perplexity} (bos={own}: {dense['metrics']['perplexity']})", flush=True)
    return record
