"""Markdown tables of evaluation results: :func:`results_markdown` renders a record (the CLI prints it; the model
cards reuse the cell formatting).

The records (:mod:`.results`) do not know how they are drawn: rendering takes the record. Only measured values are
rendered; a missing section or value reads "not measured", never a number.
"""

from __future__ import annotations

import math

from .latency_stats import check_label
from .results import ComparisonResults, EvaluationResults

__all__ = ["NOT_MEASURED", "comparison_markdown", "evaluation_markdown", "format_number", "results_markdown"]

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


def with_range(median: float | None, low: float | None, high: float | None, digits: int = 3, suffix: str = "") -> str:
    """``median (low-high)``, the median alone when no range was recorded, or "not measured"."""
    if median is None:
        return NOT_MEASURED
    text = format_number(median, digits, suffix=suffix)
    if low is None or high is None:
        return text
    return f"{text} ({format_number(low, digits)}-{format_number(high, digits, suffix=suffix)})"


def cautions_list(cautions: list[str]) -> str:
    """The cautions under a latency table, or nothing when every figure holds."""
    if not cautions:
        return ""
    return "\n**Caution: these latency figures are not reliable as they stand.**\n\n" + "".join(
        f"- {caution}\n" for caution in cautions
    )


def latency_table(results: EvaluationResults) -> str:
    """Latency per grid point, median (min-max) of the repeats, with cautions; or a "not measured" line."""
    if not results.latency:
        return f"Latency: {NOT_MEASURED}.\n"
    rows = [
        "| batch | prompt len | new tokens | latency (s), median (min-max) | repeats | tokens/s | peak memory (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.latency:
        spread = r.spread
        low, high = (spread.minimum, spread.maximum) if spread and spread.judged else (None, None)
        rows.append(
            f"| {r.batch_size} | {r.prompt_len} | {r.new_tokens} | {with_range(r.latency_s, low, high)} | "
            f"{len(r.latencies_s) or NOT_MEASURED} | {format_number(r.tokens_per_s, 1)} | "
            f"{format_number(r.peak_memory_mb, 0)} |"
        )
    return "\n".join(rows) + "\n" + cautions_list(results.latency_cautions())


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


def _latency_cell(row: dict, model: str) -> str:
    spread = row[f"{model}_spread"]
    low, high = (spread["minimum"], spread["maximum"]) if spread and spread["count"] >= 2 else (None, None)
    return with_range(row[f"{model}_latency_s"], low, high)


def comparison_latency_table(comparison: ComparisonResults) -> str:
    """Dense vs pruned latency, median (min-max) of the interleaved repeats, speed-ups (median ratio and paired, with
    the range of the per-round ratios) and their fraction of the ideal; cautions under the table."""
    speedups = comparison.speedups()
    if not speedups:
        return f"Latency: {NOT_MEASURED}.\n"
    rows = [
        "| batch | prompt len | new tokens | dense (s), median (min-max) | pruned (s), median (min-max) | speed-up "
        "| of ideal | paired speed-up (min-max) | of ideal | check |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in speedups:
        paired = with_range(s["paired_speedup"], s["paired_speedup_min"], s["paired_speedup_max"], suffix="x")
        rows.append(
            f"| {s['batch_size']} | {s['prompt_len']} | {s['new_tokens']} | {_latency_cell(s, 'dense')} "
            f"| {_latency_cell(s, 'pruned')} | {format_number(s['speedup'], 3, suffix='x')} "
            f"| {format_number(s['fraction_of_ideal'], 1, scale=100, suffix='%')} | {paired} "
            f"| {format_number(s['paired_fraction_of_ideal'], 1, scale=100, suffix='%')} | {check_label(s)} |"
        )
    return "\n".join(rows) + "\n" + cautions_list(comparison.latency_cautions())


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


def results_markdown(results: EvaluationResults | ComparisonResults) -> str:
    """Renders evaluation results as markdown tables (sections that were not measured say so).

    Args:
        results: One model's :class:`~.results.EvaluationResults`, or a dense vs pruned
            :class:`~.results.ComparisonResults`.

    Returns:
        The markdown: parameters, perplexity, zero-shot and latency sections (with ratios for a comparison).

    Raises:
        TypeError: If ``results`` is neither kind of record.
    """
    if isinstance(results, ComparisonResults):
        return comparison_markdown(results)
    if isinstance(results, EvaluationResults):
        return evaluation_markdown(results)
    raise TypeError(f"`results` must be EvaluationResults or ComparisonResults, got {type(results).__name__}.")
