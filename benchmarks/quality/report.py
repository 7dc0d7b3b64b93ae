"""The quality tables, written from the results files (nothing is recomputed).

Perplexity is shown with its ratio to the dense model on the same windows. Zero-shot accuracy is the mean of the
seven tasks with its standard error (``sqrt(sum se_i^2) / 7``, lm-eval's per-task standard errors); a difference to
dense smaller than twice the combined standard error is marked "no difference" (=), larger ones "lower" (-) or
"higher" (+).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..paper_tables.results_format import read_run
from .protocol import TABLE, validation_score

TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def load_rows(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every row of the quality table, by run id."""
    return {path.stem: read_run(path) for path in sorted((results_dir / TABLE).glob("*.json"))}


def mean_accuracy(run: dict[str, Any]) -> tuple[float, float] | None:
    """The mean zero-shot accuracy over the seven tasks and its standard error, if measured."""
    scores = run["metrics"].get("zero_shot")
    if not scores or any(task not in scores for task in TASKS):
        return None
    accuracies = [scores[task]["acc"] for task in TASKS]
    errors = [scores[task].get("acc_stderr") or 0.0 for task in TASKS]
    return sum(accuracies) / len(TASKS), math.sqrt(sum(e * e for e in errors)) / len(TASKS)


def _accuracy_cell(run: dict[str, Any], dense: dict[str, Any] | None) -> str:
    mine = mean_accuracy(run)
    if mine is None:
        return "not measured"
    cell = f"{100 * mine[0]:.1f} ± {100 * mine[1]:.1f}"
    reference = mean_accuracy(dense) if dense is not None and dense is not run else None
    if reference is not None:
        difference, limit = mine[0] - reference[0], 2 * math.hypot(mine[1], reference[1])
        cell += " (=)" if abs(difference) <= limit else (" (+)" if difference > 0 else " (-)")
    return cell


def _ppl_cell(run: dict[str, Any], dense: dict[str, Any] | None, corpus: str) -> str:
    value = run["metrics"].get("perplexity", {}).get(corpus)
    if value is None:
        return "—"
    if dense is None or run is dense:
        return f"{value:.2f}"
    return f"{value:.1f} ({value / dense['metrics']['perplexity'][corpus]:.2f}×)"


def training_free_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of the training-free table."""
    dense = rows.get("dense")
    lines = [
        "| blocks removed | row | criterion | WikiText-2 PPL (× dense) | PTB PPL (× dense) | validation (× dense) "
        "| zero-shot mean acc % | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if dense is not None:
        lines.append(
            f"| 0 | dense | — | {_ppl_cell(dense, None, 'wikitext2')} | {_ppl_cell(dense, None, 'ptb')} | 1.00 "
            f"| {_accuracy_cell(dense, None)} | 1.00 |"
        )
    for size in ("b06", "b11"):
        for variant in ("plain", "linear_ls", "linear_cosine", "aware"):
            run = rows.get(f"{variant}-{size}")
            if run is None:
                continue
            speedup = run["metrics"].get("latency", {}).get("speedup")
            lines.append(
                f"| {run['method']['num_blocks_removed']} | {variant} | {run['method']['criterion']} "
                f"| {_ppl_cell(run, dense, 'wikitext2')} | {_ppl_cell(run, dense, 'ptb')} "
                f"| {run['details'].get('validation_score', float('nan')):.3f} | {_accuracy_cell(run, dense)} "
                f"| {'—' if speedup is None else f'{speedup:.2f}'} |"
            )
    return lines


def _validation_cell(run: dict[str, Any], dense: dict[str, Any] | None) -> str:
    """The validation score (geometric mean of the validation perplexity ratios to dense) of a row."""
    if dense is None or "validation_perplexity" not in run["details"]:
        return "—"
    return (
        f"{validation_score(run['details']['validation_perplexity'], dense['details']['validation_perplexity']):.3f}"
    )


def recovery_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of the recovery table."""
    dense = rows.get("dense")
    lines = [
        "| blocks removed | recipe | CPU-min | steps (tokens) | starts from | WikiText-2 PPL (× dense) "
        "| PTB PPL (× dense) | validation (× dense) | zero-shot mean acc % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    recovered = [run for run in rows.values() if isinstance(run["method"].get("recovery"), dict)]
    recovered.sort(key=lambda r: (r["method"]["num_blocks_removed"], r["method"]["recovery"]["budget_cpu_s"]))
    for run in recovered:
        training = run["method"]["recovery"]
        lines.append(
            f"| {run['method']['num_blocks_removed']} | {run['method']['name']} "
            f"| {training['budget_cpu_s'] / 60:.0f} | {training['steps']} ({training['tokens']:,}) "
            f"| {run['method']['start']} | {_ppl_cell(run, dense, 'wikitext2')} | {_ppl_cell(run, dense, 'ptb')} "
            f"| {_validation_cell(run, dense)} | {_accuracy_cell(run, dense)} |"
        )
    return lines


def zero_shot_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of the per-task zero-shot table (accuracy ± standard error, %)."""
    lines = ["| row | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for run_id, run in rows.items():
        scores = run["metrics"].get("zero_shot")
        if not scores:
            continue
        cells = [
            f"{100 * scores[t]['acc']:.1f} ± {100 * (scores[t].get('acc_stderr') or 0):.1f}" if t in scores else "—"
            for t in TASKS
        ]
        lines.append(f"| {run_id} | " + " | ".join(cells) + " |")
    return lines


def write_report(results_dir: Path) -> str:
    """Writes ``<results_dir>/quality/README.md`` and returns its text."""
    rows = load_rows(results_dir)
    text = "\n".join(
        [
            "# Quality benchmark results",
            "",
            "Written by `python -m benchmarks.bench_quality --report` from the JSON files beside it; protocol in "
            "`benchmarks/quality/protocol.py`. Test perplexity: first 256 windows of 128 tokens of WikiText-2 test "
            "and PTB test; zero-shot: first 200 documents of each task, mean of seven tasks ± standard error; "
            "validation: held-out C4 and PTB valid (what every choice is made on).",
            "",
            "## Training-free",
            "",
            *training_free_table(rows),
            "",
            "## Recovery at equal CPU budgets (one thread)",
            "",
            *recovery_table(rows),
            "",
            "## Zero-shot per task",
            "",
            *zero_shot_table(rows),
            "",
        ]
    )
    path = results_dir / TABLE / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text
