"""The quality tables of both models, written from the results files (nothing is recomputed).

Perplexity is shown with its ratio to the dense model on the same windows. Zero-shot accuracy is the mean of the
seven tasks with its standard error (``sqrt(sum se_i^2) / 7``, lm-eval's per-task standard errors). Whether a row
differs from dense is a **paired** test on the same documents (``optimum_depth.evaluation.paired``): the difference
of the mean accuracies with its paired standard error, "=" when within two of them, else "-" (lower) or "+". Rows
computed before per-document outcomes were kept (and not re-run) fall back to two independent binomials, marked
"indep.".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from optimum_depth.evaluation.paired import paired_zero_shot

from ..paper_tables.results_format import read_run
from .models import MODELS, QualityModel
from .protocol import SCORING_CALIBRATION, TABLE, read_json, validation_score

TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
TITLES = {"smollm2-135m": "SmolLM2-135M-Instruct (30 blocks)", "gemma3-270m": "Gemma-3-270M (18 blocks)"}
TRAINING_FREE_VARIANTS = ("plain", "linear_ls", "linear_cosine", "reconstruct", "aware", "default")


def load_rows(results_dir: Path, spec: QualityModel | None = None) -> dict[str, dict[str, Any]]:
    """Every row of one model's table, by run id (default: SmolLM2's)."""
    table = spec.table if spec is not None else TABLE
    return {path.stem: read_run(path) for path in sorted((results_dir / table).glob("*.json"))}


def mean_accuracy(run: dict[str, Any]) -> tuple[float, float] | None:
    """The mean zero-shot accuracy over the seven tasks and its standard error, if measured."""
    scores = run["metrics"].get("zero_shot")
    if not scores or any(task not in scores for task in TASKS):
        return None
    accuracies = [scores[task]["acc"] for task in TASKS]
    errors = [scores[task].get("acc_stderr") or 0.0 for task in TASKS]
    return sum(accuracies) / len(TASKS), math.sqrt(sum(e * e for e in errors)) / len(TASKS)


def paired_mean(run: dict[str, Any], dense: dict[str, Any] | None):
    """The paired difference of the mean accuracy to dense (``None`` without per-document outcomes on both)."""
    if dense is None or run is dense:
        return None
    mine, reference = run["details"].get("zero_shot_documents"), dense["details"].get("zero_shot_documents")
    if not mine or not reference:
        return None
    return paired_zero_shot(reference, mine).get("mean")


def _accuracy_cell(run: dict[str, Any], dense: dict[str, Any] | None) -> str:
    mine = mean_accuracy(run)
    if mine is None:
        return "not measured"
    cell = f"{100 * mine[0]:.1f} ± {100 * mine[1]:.1f}"
    if dense is None or dense is run:
        return cell
    paired = paired_mean(run, dense)
    if paired is not None:
        return cell + f" ({paired.verdict})"
    reference = mean_accuracy(dense)
    if reference is None:
        return cell
    difference, limit = mine[0] - reference[0], 2 * math.hypot(mine[1], reference[1])
    return cell + (" (= indep.)" if abs(difference) <= limit else (" (+ indep.)" if difference > 0 else " (- indep.)"))


def _difference_cell(run: dict[str, Any], dense: dict[str, Any] | None) -> str:
    if mean_accuracy(run) is None or dense is None or run is dense:
        return "—"
    paired = paired_mean(run, dense)
    if paired is None:
        return "not paired (no per-document outcomes)"
    return f"{100 * paired.difference:+.1f} ± {100 * paired.stderr:.1f}"


def _ppl_cell(run: dict[str, Any], dense: dict[str, Any] | None, corpus: str) -> str:
    value = run["metrics"].get("perplexity", {}).get(corpus)
    if value is None:
        return "—"
    if dense is None or run is dense:
        return f"{value:.2f}"
    return f"{value:.1f} ({value / dense['metrics']['perplexity'][corpus]:.2f}×)"


def _validation_cell(run: dict[str, Any], dense: dict[str, Any] | None) -> str:
    """The validation score (geometric mean of the validation perplexity ratios to dense) of a row."""
    if dense is None or "validation_perplexity" not in run["details"]:
        return "—"
    return (
        f"{validation_score(run['details']['validation_perplexity'], dense['details']['validation_perplexity']):.3f}"
    )


def calibration_cell(run: dict[str, Any]) -> str:
    """How many calibration sequences (of 128 tokens) a training-free row used to choose blocks and to fit maps."""
    compensation = run["details"].get("compensation") or {}
    fit = (compensation.get("settings") or {}).get("num_samples")
    if run["method"]["name"] == "aware":
        select = (compensation.get("settings") or {}).get("selection_samples")
        return f"{select} select + {fit} fit"
    auto = run["details"].get("auto")
    if auto:
        return f"{auto.get('fit_samples')} auto fit + {auto.get('heldout_samples')} held out + {fit} fit"
    scoring = SCORING_CALIBRATION["num_samples"]
    return f"{scoring} score" + (f" + {fit} fit" if fit else "")


def pruning_cpu_seconds(run: dict[str, Any], selection_dir: Path) -> float | None:
    """CPU seconds a training-free row's pruning cost: scoring / selection of its plan plus the compensation fit.

    The scoring of the plain criteria that were tried and not chosen, and the validation that chose among them, are
    not counted (they are the benchmark's search, not the recipe).
    """
    if "pruning_cpu_s" in run["timings"]:  # measured whole (the default recipe)
        return run["timings"]["pruning_cpu_s"]
    size = run["run_id"].rsplit("-", 1)[-1]
    name = run["method"]["name"]
    path = selection_dir / (f"aware-{size}.json" if name == "aware" else f"plain-{size}.json")
    if not path.exists():
        return None
    selection = read_json(path)
    if name == "aware":
        scoring = selection.get("scoring_cpu_s")
    else:
        scoring = selection.get("criteria", {}).get(run["method"]["criterion"], {}).get("scoring_cpu_s")
    if scoring is None:
        return None
    return scoring + (run["timings"].get("compensation_cpu_s") or 0.0)


def training_free_table(rows: dict[str, dict[str, Any]], spec: QualityModel, results_dir: Path) -> list[str]:
    """Markdown lines of one model's training-free table."""
    dense = rows.get("dense")
    lines = [
        "| blocks removed | row | criterion | calibration sequences | WikiText-2 PPL (× dense) | PTB PPL (× dense) "
        "| validation (× dense) | zero-shot mean acc % | vs dense, paired (points) | pruning CPU-min | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if dense is not None:
        lines.append(
            f"| 0 | dense | — | — | {_ppl_cell(dense, None, 'wikitext2')} | {_ppl_cell(dense, None, 'ptb')} | 1.00 "
            f"| {_accuracy_cell(dense, None)} | — | — | 1.00 |"
        )
    for size in spec.sizes:
        for variant in TRAINING_FREE_VARIANTS:
            run = rows.get(f"{variant}-{size}")
            if run is None:
                continue
            speedup = run["metrics"].get("latency", {}).get("speedup")
            cpu = pruning_cpu_seconds(run, results_dir / spec.table / "selection")
            lines.append(
                f"| {run['method']['num_blocks_removed']} | {variant} | {run['method']['criterion']} "
                f"| {calibration_cell(run)} | {_ppl_cell(run, dense, 'wikitext2')} | {_ppl_cell(run, dense, 'ptb')} "
                f"| {_validation_cell(run, dense)} | {_accuracy_cell(run, dense)} | {_difference_cell(run, dense)} "
                f"| {'—' if cpu is None else f'{cpu / 60:.1f}'} | {'—' if speedup is None else f'{speedup:.2f}'} |"
            )
    return lines


def recovery_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of one model's recovery table."""
    dense = rows.get("dense")
    lines = [
        "| blocks removed | recipe | CPU-min | steps (tokens) | starts from | WikiText-2 PPL (× dense) "
        "| PTB PPL (× dense) | validation (× dense) | zero-shot mean acc % | vs dense, paired (points) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    recovered = [run for run in rows.values() if isinstance(run["method"].get("recovery"), dict)]
    recovered.sort(key=lambda r: (r["method"]["num_blocks_removed"], r["method"]["recovery"]["budget_cpu_s"]))
    for run in recovered:
        training = run["method"]["recovery"]
        name = run["method"]["name"]
        choice = run["method"].get("learning_rate_choice")
        if choice:
            name += f" (lr {training['recipe']['learning_rate']:g}, chosen on validation)"
        lines.append(
            f"| {run['method']['num_blocks_removed']} | {name} "
            f"| {training['budget_cpu_s'] / 60:.0f} | {training['steps']} ({training['tokens']:,}) "
            f"| {run['method']['start']} | {_ppl_cell(run, dense, 'wikitext2')} | {_ppl_cell(run, dense, 'ptb')} "
            f"| {_validation_cell(run, dense)} | {_accuracy_cell(run, dense)} | {_difference_cell(run, dense)} |"
        )
    return lines


def zero_shot_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of the per-task zero-shot table (accuracy ± standard error, %; paired verdict vs dense)."""
    dense = rows.get("dense")
    reference = (dense or {}).get("details", {}).get("zero_shot_documents") if dense else None
    lines = ["| row | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for run_id, run in rows.items():
        scores = run["metrics"].get("zero_shot")
        if not scores:
            continue
        documents = run["details"].get("zero_shot_documents")
        paired = paired_zero_shot(reference, documents) if reference and documents and run is not dense else {}
        cells = []
        for task in TASKS:
            if task not in scores:
                cells.append("—")
                continue
            cell = f"{100 * scores[task]['acc']:.1f} ± {100 * (scores[task].get('acc_stderr') or 0):.1f}"
            cells.append(cell + (f" ({paired[task].verdict})" if task in paired else ""))
        lines.append(f"| {run_id} | " + " | ".join(cells) + " |")
    return lines


def bos_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence on the BOS protocol row, if computed."""
    run = rows.get("bos-protocol")
    if run is None:
        return []
    by_mode = run["metrics"]["perplexity_by_bos"]
    own, other = run["details"]["own_mode"], run["details"]["other_mode"]
    cells = ", ".join(
        f"{corpus} {by_mode[own][corpus]:.2f} (bos={own}) vs {by_mode[other][corpus]:.2f} (bos={other}, "
        f"{run['metrics']['ratio_other_to_own'][corpus]:.2f}×)"
        for corpus in by_mode[own]
    )
    return [f"BOS protocol (`bos-protocol.json`, dense model, same test corpora and window count): {cells}.", ""]


def model_section(results_dir: Path, spec: QualityModel) -> list[str]:
    """The tables of one model (empty when it has no results yet)."""
    rows = load_rows(results_dir, spec)
    if not rows:
        return []
    removed = ", ".join(f"{n} of {rows['dense']['model']['num_blocks']}" for n in spec.block_targets.values())
    lines = [
        f"## {TITLES.get(spec.key, spec.key)}",
        "",
        f"Files: `{spec.table}/`; blocks removed: {removed}; command: "
        f"`OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.bench_quality --model {spec.key}`.",
        "",
        *bos_lines(rows),
        "### Training-free",
        "",
        *training_free_table(rows, spec, results_dir),
        "",
    ]
    recovery = recovery_table(rows)
    if len(recovery) > 2:
        lines += ["### Recovery at equal CPU budgets (one thread)", "", *recovery, ""]
    lines += ["### Zero-shot per task (paired verdict vs dense)", "", *zero_shot_table(rows), ""]
    return lines


def write_report(results_dir: Path) -> str:
    """Writes ``<results_dir>/quality/README.md`` and returns its text."""
    sections = [line for spec in MODELS.values() for line in model_section(results_dir, spec)]
    text = "\n".join(
        [
            "# Quality benchmark results",
            "",
            "Written by `python -m benchmarks.bench_quality --report` from the JSON files beside it; protocol in "
            "`benchmarks/quality/protocol.py`. Test perplexity: first 256 windows of 128 tokens of WikiText-2 test "
            "and PTB test (SmolLM2: BOS once before the stream, the papers' protocol; Gemma: BOS before every "
            "window, which it needs); zero-shot: first 200 documents of each task, mean of seven tasks ± standard "
            "error; validation: held-out C4 and PTB valid (what every choice is made on).",
            "",
            "Zero-shot verdicts are paired tests on the same documents: pruned minus dense accuracy with its paired "
            "standard error (`optimum_depth.evaluation.paired`); `=` is no difference within two standard errors, "
            "`-` lower, `+` higher. `indep.` marks rows without per-document outcomes, compared as two independent "
            "binomials (recovery rows computed before the outcomes were kept: their training is CPU-time bounded, "
            "so a re-run would be another model). Calibration sequences (128 tokens): `score` for the plain "
            "criterion's scores, `select` for compensation-aware selection, `fit` for the compensation maps. Pruning "
            "CPU-min: the scoring (or aware selection) of the row's plan plus its compensation fit, one thread (the "
            "benchmark's search over six plain criteria is not counted).",
            "",
            *sections,
        ]
    )
    path = results_dir / TABLE / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text
