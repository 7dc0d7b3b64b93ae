"""Markdown tables of evaluation results (used by ``EvaluationResults.to_markdown`` and the model cards).

Only measured values are rendered; a missing section or value reads "not measured", never a number.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import ComparisonResults, EvaluationResults

NOT_MEASURED = "not measured"

# lm-eval metric names shown in tables, in order.
ZERO_SHOT_METRICS = ("acc", "acc_norm")


def format_number(value: float | None, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    """``value * scale`` with ``digits`` decimals and ``suffix``, or "not measured" for ``None``/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_MEASURED
    return f"{value * scale:.{digits}f}{suffix}"


def _params(results: EvaluationResults) -> str:
    return f"{results.num_parameters:,}" if results.num_parameters is not None else NOT_MEASURED


def perplexity_table(results: EvaluationResults) -> str:
    """Perplexity per corpus, or a "not measured" line."""
    if not results.perplexity:
        return f"Perplexity: {NOT_MEASURED}.\n"
    seq_len = results.perplexity_settings.get("seq_len")
    rows = [f"| dataset | PPL{f' (seq_len {seq_len})' if seq_len else ''} |", "|---|---:|"]
    rows += [f"| {name} | {format_number(value)} |" for name, value in results.perplexity.items()]
    return "\n".join(rows) + "\n"


def zero_shot_table(results: EvaluationResults) -> str:
    """Zero-shot accuracies in percent (``-`` where a task has no such metric), or a "not measured" line."""
    if not results.zero_shot:
        return f"Zero-shot accuracy: {NOT_MEASURED}.\n"
    rows = ["| task | acc (%) | acc_norm (%) |", "|---|---:|---:|"]
    for task, metrics in results.zero_shot.items():
        cells = [format_number(metrics[m], scale=100) if m in metrics else "-" for m in ZERO_SHOT_METRICS]
        rows.append(f"| {task} | {' | '.join(cells)} |")
    rows.append(f"| **average** | {format_number(results.zero_shot_average('acc'), scale=100)} | |")
    return "\n".join(rows) + "\n"


def latency_table(results: EvaluationResults) -> str:
    """Latency per grid point, or a "not measured" line."""
    if not results.latency:
        return f"Latency: {NOT_MEASURED}.\n"
    rows = [
        "| batch | prompt len | new tokens | latency (s) | tokens/s | peak memory (MiB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.latency:
        rows.append(
            f"| {r.batch_size} | {r.prompt_len} | {r.new_tokens} | {format_number(r.latency_s, 3)} | "
            f"{format_number(r.tokens_per_s, 1)} | {format_number(r.peak_memory_mb, 0)} |"
        )
    return "\n".join(rows) + "\n"


def evaluation_markdown(results: EvaluationResults) -> str:
    """All sections of one model's results."""
    return "\n".join(
        [
            f"### Evaluation of `{results.model_name}`\n\nParameters: {_params(results)}\n",
            "#### Perplexity\n\n" + perplexity_table(results),
            "#### Zero-shot\n\n" + zero_shot_table(results),
            "#### Latency\n\n" + latency_table(results),
        ]
    )


def comparison_perplexity_table(comparison: ComparisonResults) -> str:
    """Dense vs pruned perplexity with the ratio, or a "not measured" line."""
    dense, pruned = comparison.dense, comparison.pruned
    names = list(dict.fromkeys([*dense.perplexity, *pruned.perplexity]))
    if not names:
        return f"Perplexity: {NOT_MEASURED}.\n"
    ratios = comparison.perplexity_ratios()
    rows = ["| dataset | dense PPL | pruned PPL | pruned / dense |", "|---|---:|---:|---:|"]
    for name in names:
        rows.append(
            f"| {name} | {format_number(dense.perplexity.get(name))} | {format_number(pruned.perplexity.get(name))} "
            f"| {format_number(ratios.get(name), 3)} |"
        )
    return "\n".join(rows) + "\n"


def _zero_shot_cell(results: EvaluationResults, task: str, metric: str) -> str:
    if task not in results.zero_shot:
        return NOT_MEASURED
    value = results.zero_shot[task].get(metric)
    return "-" if value is None else format_number(value, scale=100)


def paired_cell(difference) -> str:
    """``"-1.5 ± 0.8 (=)"``: a paired difference in points with its standard error and verdict, or "not measured"."""
    if difference is None:
        return NOT_MEASURED
    return f"{100 * difference.difference:+.1f} ± {100 * difference.stderr:.1f} ({difference.verdict})"


def comparison_zero_shot_table(comparison: ComparisonResults) -> str:
    """Dense vs pruned zero-shot accuracies in percent with the paired difference of acc, or a "not measured" line.

    The difference column is the paired test on the same documents (:mod:`.paired`): "=" means no difference within
    two paired standard errors. Results without per-document outcomes read "not measured" there.
    """
    both = (comparison.dense, comparison.pruned)
    tasks = list(dict.fromkeys([*both[0].zero_shot, *both[1].zero_shot]))
    if not tasks:
        return f"Zero-shot accuracy: {NOT_MEASURED}.\n"
    paired = comparison.zero_shot_differences()
    rows = [
        "| task | dense acc (%) | pruned acc (%) | dense acc_norm (%) | pruned acc_norm (%) | acc pruned − dense, "
        "paired (points) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for task in tasks:
        cells = [_zero_shot_cell(r, task, m) for m in ZERO_SHOT_METRICS for r in both]
        rows.append(f"| {task} | {' | '.join(cells)} | {paired_cell(paired.get(task))} |")
    averages = [format_number(r.zero_shot_average("acc"), scale=100) for r in both]
    rows.append(f"| **average** | {averages[0]} | {averages[1]} | | | {paired_cell(paired.get('mean'))} |")
    return "\n".join(rows) + "\n"


def comparison_latency_table(comparison: ComparisonResults) -> str:
    """Dense vs pruned latency with speed-ups (median ratio and paired) and their fraction of the ideal."""
    speedups = comparison.speedups()
    if not speedups:
        return f"Latency: {NOT_MEASURED}.\n"
    rows = [
        "| batch | prompt len | new tokens | dense (s) | pruned (s) | speed-up | of ideal | paired speed-up | of ideal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in speedups:
        rows.append(
            f"| {s['batch_size']} | {s['prompt_len']} | {s['new_tokens']} | {format_number(s['dense_latency_s'], 3)} "
            f"| {format_number(s['pruned_latency_s'], 3)} | {format_number(s['speedup'], 3, suffix='x')} "
            f"| {format_number(s['fraction_of_ideal'], 1, scale=100, suffix='%')} "
            f"| {format_number(s['paired_speedup'], 3, suffix='x')} "
            f"| {format_number(s['paired_fraction_of_ideal'], 1, scale=100, suffix='%')} |"
        )
    return "\n".join(rows) + "\n"


def comparison_markdown(comparison: ComparisonResults) -> str:
    """All sections of a dense vs pruned comparison."""
    dense, pruned = comparison.dense, comparison.pruned
    header = (
        f"### Dense `{dense.model_name}` vs pruned `{pruned.model_name}`\n\n"
        f"Parameters: {_params(dense)} (dense) vs {_params(pruned)} (pruned); "
        f"ideal speed-up (parameter ratio): {format_number(comparison.ideal_speedup, 3, suffix='x')}\n"
    )
    return "\n".join(
        [
            header,
            "#### Perplexity\n\n" + comparison_perplexity_table(comparison),
            "#### Zero-shot\n\n" + comparison_zero_shot_table(comparison),
            "#### Latency\n\n" + comparison_latency_table(comparison),
        ]
    )
