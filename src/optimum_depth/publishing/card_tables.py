"""The measured sections of a model card: dense vs pruned tables and ``model-index`` entries, from results objects.

Every value comes from :class:`~optimum_depth.evaluation.EvaluationResults` /
:class:`~optimum_depth.evaluation.ComparisonResults`; a value that is missing renders as "not measured".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from huggingface_hub import EvalResult

from ..evaluation.latency_stats import Spread, check_label
from ..evaluation.markdown import NOT_MEASURED, paired_cell, with_range
from ..evaluation.results import ComparisonResults, EvaluationResults
from ..privacy import public_record

logger = logging.getLogger(__name__)

__all__ = ["KNOWN_DATASETS", "card_eval_results", "format_settings", "measured_sections", "public_value"]

ZERO_SHOT_METRICS = ("acc", "acc_norm")
# How to read the peak memory columns, by the measuring method recorded in the latency settings.
MEMORY_NOTES = {
    "sampled_process_rss": "Peak memory is the sampled resident memory of the whole process (every model loaded in "
    "it), not the pruned model's own footprint.",
    "cuda_max_memory_allocated": "Peak memory is the CUDA allocator's peak during each model's timed calls.",
}


@dataclass(frozen=True)
class HubDataset:
    """How an evaluation dataset is named on the Hub (for ``model-index``)."""

    hub_id: str
    config: str | None
    split: str | None
    pretty_name: str


KNOWN_DATASETS: dict[str, HubDataset] = {
    "wikitext2": HubDataset("wikitext", "wikitext-2-raw-v1", "test", "WikiText-2"),
    "ptb": HubDataset("ptb_text_only", "penn_treebank", "test", "Penn Treebank"),
    "c4": HubDataset("allenai/c4", "en", "validation", "C4"),
    "piqa": HubDataset("ybisk/piqa", None, "validation", "PIQA"),
    "hellaswag": HubDataset("Rowan/hellaswag", None, "validation", "HellaSwag"),
    "winogrande": HubDataset("allenai/winogrande", "winogrande_xl", "validation", "WinoGrande"),
    "arc_easy": HubDataset("allenai/ai2_arc", "ARC-Easy", "test", "ARC-Easy"),
    "arc_challenge": HubDataset("allenai/ai2_arc", "ARC-Challenge", "test", "ARC-Challenge"),
    "boolq": HubDataset("google/boolq", None, "validation", "BoolQ"),
    "openbookqa": HubDataset("allenai/openbookqa", "main", "test", "OpenBookQA"),
}


def dataset_info(name: str) -> HubDataset:
    """Hub naming of an evaluation dataset (unknown names are used as they are)."""
    return KNOWN_DATASETS.get(name, HubDataset(name, None, None, name))


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    """``value`` with ``digits`` decimals and ``suffix``, or "not measured" for ``None``."""
    return NOT_MEASURED if value is None else f"{value:.{digits}f}{suffix}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is zero."""
    return None if numerator is None or not denominator else numerator / denominator


def public_value(value: Any) -> Any:
    """Replaces local paths by their file or folder name (cards are public; local directories are not)."""
    return public_record(value)


def _flat(value: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, dict):
        return all(isinstance(v, scalar) for v in value.values())
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def format_settings(settings: dict[str, Any]) -> str:
    """``key=value, ...`` of the flat measurement settings (local paths reduced to file names).

    Nested details (per-corpus provenance, ...) stay in ``evaluation_results.json``, which the card points to.
    """
    shown = [f"{k}={v}" for k, v in public_value(settings).items() if _flat(v)]
    if len(shown) < len(settings):
        shown.append("details in `evaluation_results.json`")
    return ", ".join(shown) or "not recorded"


def split_results(results) -> tuple[EvaluationResults | None, EvaluationResults | None, ComparisonResults | None]:
    """``(dense, pruned, comparison)`` of ``results`` (a comparison, one model's results, or ``None``)."""
    if results is None:
        return None, None, None
    if isinstance(results, ComparisonResults):
        return results.dense, results.pruned, results
    if isinstance(results, EvaluationResults):
        return None, results, None
    raise TypeError(f"`results` must be EvaluationResults or ComparisonResults, got {type(results).__name__}.")


def _spread_cell(median: float | None, spread: Spread | None, digits: int) -> str:
    """``median (min-max)`` of the repeats, the median alone when fewer than two were recorded, or "not measured"."""
    if spread is None or not spread.judged:
        return with_range(median, None, None, digits)
    return with_range(median, spread.minimum, spread.maximum, digits)


def _latency_rows(dense: EvaluationResults | None, pruned: EvaluationResults | None, comparison) -> list[dict]:
    if pruned is None:
        return []
    speedups = (
        {(s["batch_size"], s["new_tokens"], s["prompt_len"]): s for s in comparison.speedups()} if comparison else {}
    )
    rows = []
    for record in pruned.latency:
        base = dense.latency_record(record.batch_size, record.new_tokens, record.prompt_len) if dense else None
        speed = speedups.get(record.key, {})
        fraction = speed.get("fraction_of_ideal")
        rows.append(
            {
                "batch_size": record.batch_size,
                "prompt_len": record.prompt_len,
                "new_tokens": record.new_tokens,
                "dense_latency": _spread_cell(base.latency_s if base else None, base.spread if base else None, 3),
                "pruned_latency": _spread_cell(record.latency_s, record.spread, 3),
                "dense_tps": fmt(base.tokens_per_s if base else None, 1),
                "pruned_tps": fmt(record.tokens_per_s, 1),
                "speedup": with_range(
                    speed.get("speedup"), speed.get("paired_speedup_min"), speed.get("paired_speedup_max"), 2, "x"
                ),
                "of_ideal": fmt(None if fraction is None else 100 * fraction, 0, "%"),
                "check": check_label(speed) if speed else NOT_MEASURED,
                "dense_memory": fmt(base.peak_memory_mb if base else None, 0),
                "pruned_memory": fmt(record.peak_memory_mb, 0),
            }
        )
    return rows


def _latency_cautions(pruned: EvaluationResults | None, comparison: ComparisonResults | None) -> list[str]:
    """The cautions printed under the card's speed table (see :mod:`optimum_depth.evaluation.latency_stats`)."""
    if comparison is not None:
        return comparison.latency_cautions()
    return pruned.latency_cautions() if pruned is not None else []


def _perplexity_rows(dense: EvaluationResults | None, pruned: EvaluationResults | None) -> list[dict]:
    if pruned is None:
        return []
    names = list(dict.fromkeys([*(dense.perplexity if dense else {}), *pruned.perplexity]))
    rows = []
    for name in names:
        before = dense.perplexity.get(name) if dense else None
        after = pruned.perplexity.get(name)
        rows.append(
            {
                "dataset": dataset_info(name).pretty_name,
                "dense": fmt(before),
                "pruned": fmt(after),
                "ratio": fmt(ratio(after, before), 3),
            }
        )
    return rows


def _zero_shot_rows(dense: EvaluationResults | None, pruned: EvaluationResults | None) -> list[dict]:
    if pruned is None:
        return []

    def cell(metrics: dict[str, float] | None, metric: str) -> str:
        if not metrics or metric not in metrics:
            return NOT_MEASURED
        stderr = metrics.get(f"{metric}_stderr")
        return fmt(100 * metrics[metric]) + (f" ± {100 * stderr:.2f}" if stderr is not None else "")

    rows = []
    dense_tasks = dense.zero_shot if dense else {}
    # The paired test on the same documents (evaluation.paired), when both models kept per-document outcomes.
    comparison = ComparisonResults(dense, pruned) if dense is not None else None
    paired = {m: comparison.zero_shot_differences(m) if comparison else {} for m in ZERO_SHOT_METRICS}
    for task in dict.fromkeys([*dense_tasks, *pruned.zero_shot]):
        before, after = dense_tasks.get(task), pruned.zero_shot.get(task)
        for metric in ZERO_SHOT_METRICS:
            if metric in (before or {}) or metric in (after or {}):
                retention = ratio((after or {}).get(metric), (before or {}).get(metric))
                rows.append(
                    {
                        "task": dataset_info(task).pretty_name,
                        "metric": metric,
                        "dense": cell(before, metric),
                        "pruned": cell(after, metric),
                        "retention": fmt(None if retention is None else 100 * retention, 1, "%"),
                        "difference": paired_cell(paired[metric].get(task)),
                    }
                )
    if rows:
        before_avg, after_avg = (dense.zero_shot_average("acc") if dense else None), pruned.zero_shot_average("acc")
        retention = ratio(after_avg, before_avg)
        rows.append(
            {
                "task": "**average**",
                "metric": "acc",
                "dense": fmt(None if before_avg is None else 100 * before_avg),
                "pruned": fmt(None if after_avg is None else 100 * after_avg),
                "retention": fmt(None if retention is None else 100 * retention, 1, "%"),
                "difference": paired_cell(paired["acc"].get("mean")),
            }
        )
    return rows


def perplexity_coverage(settings: dict[str, Any], name: str) -> dict[str, Any]:
    """How much of corpus ``name`` a perplexity was measured on, from the recorded settings.

    Args:
        settings: ``EvaluationResults.perplexity_settings``.
        name: The corpus.

    Returns:
        ``{"seq_len", "windows", "tokens", "full_windows", "subset", "description"}`` (what is recorded); empty when
        nothing is.
    """
    corpus = (settings.get("datasets") or {}).get(name) or {}
    seq_len, windows = settings.get("seq_len"), corpus.get("num_windows")
    if not seq_len or windows is None:
        return {}
    coverage: dict[str, Any] = {"seq_len": seq_len, "windows": windows, "tokens": corpus.get("num_predicted_tokens")}
    total = corpus.get("corpus_tokens")
    if total:
        coverage["full_windows"] = total // seq_len
        coverage["subset"] = windows < coverage["full_windows"]
    tokens = f", {coverage['tokens']:,} predicted tokens" if coverage["tokens"] is not None else ""
    coverage["description"] = (
        f"first {windows} of {coverage.get('full_windows', '?')} windows of {seq_len} tokens{tokens}"
    )
    return coverage


def card_eval_results(results: EvaluationResults) -> list[EvalResult]:
    """``model-index`` entries of one model's results: perplexity per dataset, then each zero-shot metric (%).

    Args:
        results: The measured results of the model the card describes.

    Returns:
        The :class:`~huggingface_hub.EvalResult` list (empty when nothing was measured).
    """
    entries = []
    seq_len = results.perplexity_settings.get("seq_len")
    for name, value in results.perplexity.items():
        data = dataset_info(name)
        coverage = perplexity_coverage(results.perplexity_settings, name)
        subset = coverage.get("subset", False)
        entries.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text Generation",
                dataset_type=data.hub_id,
                dataset_name=f"{data.pretty_name} ({coverage['description']})" if subset else data.pretty_name,
                dataset_config=data.config,
                dataset_split=f"{data.split} (subset)" if subset and data.split else data.split,
                dataset_args={k: v for k, v in coverage.items() if k != "description"} or None,
                metric_type="perplexity",
                metric_value=round(float(value), 4),
                metric_name=f"perplexity (seq_len {seq_len})" if seq_len else "perplexity",
            )
        )
    settings = results.zero_shot_settings
    args: dict[str, Any] = {"num_few_shot": int(settings.get("num_fewshot", 0) or 0)}
    if settings.get("limit") is not None:
        args["limit"] = settings["limit"]
    evaluated = settings.get("evaluated_documents") or {}
    for task, metrics in results.zero_shot.items():
        data = dataset_info(task)
        limited = settings.get("limit") is not None
        shown = f"{data.pretty_name} (first {evaluated.get(task, settings.get('limit'))} documents)"
        name = shown if limited else data.pretty_name
        for metric in ZERO_SHOT_METRICS:
            if metric in metrics:
                entries.append(
                    EvalResult(
                        task_type="text-generation",
                        task_name="Text Generation",
                        dataset_type=data.hub_id,
                        dataset_name=name,
                        dataset_config=data.config,
                        dataset_split=f"{data.split} (subset)" if limited and data.split else data.split,
                        dataset_args=dict(args),
                        metric_type=metric,
                        metric_value=round(100 * float(metrics[metric]), 4),
                        metric_name=f"{metric} (%)",
                    )
                )
    return entries


def measured_sections(results, num_parameters: int, dense_parameters: int | None, num_blocks: int, source_blocks: int):
    """Template values of the card's measured sections: parameters, latency, perplexity and zero-shot.

    Args:
        results: :class:`ComparisonResults`, the pruned model's :class:`EvaluationResults`, or ``None``.
        num_parameters: Parameters of the pruned model, counted on it.
        dense_parameters: Parameters of the dense model when known from elsewhere (the scores), else ``None``.
        num_blocks: Decoder blocks of the pruned model.
        source_blocks: Decoder blocks of the dense model.

    Returns:
        Keyword arguments for the card template.
    """
    dense, pruned, comparison = split_results(results)
    if pruned is not None and pruned.num_parameters is not None and pruned.num_parameters != num_parameters:
        logger.warning(
            "The results were measured on a model with %d parameters; this one has %d. Are they its results?",
            pruned.num_parameters,
            num_parameters,
        )
    if dense is not None and dense.num_parameters is not None:
        dense_parameters = dense.num_parameters
    kept = ratio(num_parameters, dense_parameters)
    return {
        "params": {
            "dense": f"{dense_parameters:,}" if dense_parameters else NOT_MEASURED,
            "pruned": f"{num_parameters:,}",
            "ratio": fmt(kept, 3),
            "share": fmt(None if kept is None else 100 * kept, 1, "%"),
            "dense_blocks": source_blocks,
            "pruned_blocks": num_blocks,
        },
        "latency_rows": _latency_rows(dense, pruned, comparison),
        "ideal_speedup": fmt(comparison.ideal_speedup if comparison is not None else None, 2, "x"),
        "latency_settings": format_settings(pruned.latency_settings) if pruned else "",
        "latency_note": MEMORY_NOTES.get(str(pruned.latency_settings.get("memory"))) if pruned else None,
        "latency_cautions": _latency_cautions(pruned, comparison),
        "perplexity_rows": _perplexity_rows(dense, pruned),
        "perplexity_settings": format_settings(pruned.perplexity_settings) if pruned else "",
        "zero_shot_rows": _zero_shot_rows(dense, pruned),
        "zero_shot_settings": format_settings(pruned.zero_shot_settings) if pruned else "",
    }
