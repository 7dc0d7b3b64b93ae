"""The quality benchmark: SmolLM2-135M-Instruct pruned by 6 and 11 of its 30 blocks, training-free and recovered.

Rows (one results file each under ``benchmarks/results/quality/``; existing files are skipped, so an interrupted
run resumes, and two processes can share the work):

* ``dense``;
* training-free, per size (``b06``: 6 blocks, ``b11``: 11 blocks): ``plain`` (the best of six plain criteria on
  validation text), ``linear_ls`` / ``linear_cosine`` (that plan compensated), ``aware`` (compensation-aware
  selection, compensated);
* recovery at equal CPU budgets (one thread), from the best training-free model of the size (chosen on validation):
  LM loss vs KD vs KD + hidden alignment, C4 vs self-generated text, full vs LoRA.

Test figures: WikiText-2 and PTB test perplexity on the first 256 windows of 128 tokens, seven zero-shot tasks on
their first 200 documents (with standard errors) for the dense model, the 20% training-free rows (not linear_cosine)
and the 30-minute recovery rows. Every choice is made on validation text
(``benchmarks/quality/protocol.py``). ``--report`` writes ``benchmarks/results/quality/README.md`` from the files.

Run from the repository root (about 10 CPU-hours in all; ``--rows`` runs a subset)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.bench_quality
    python -m benchmarks.bench_quality --report
"""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

from benchmarks.paper_tables.context import model_info
from benchmarks.paper_tables.runner import PlannedRun, command_line, machine_settings, run_all, set_threads
from benchmarks.quality.protocol import BLOCK_TARGETS, RESULTS_DIR, TABLE
from benchmarks.quality.report import write_report
from benchmarks.quality.rows import QualityContext, dense_row, recovery_row, training_free_row

TRAINING_FREE = ("plain", "linear_ls", "linear_cosine", "aware")
RECOVERY_PLAN = (
    # (recipe, size, CPU-minutes), in the order they run: the 10-minute comparisons first, then the 30-minute points.
    ("lm-full-c4", "b06", 10),
    ("kd-full-c4", "b06", 10),
    ("kdalign-full-c4", "b06", 10),
    ("kd-lora-c4", "b06", 10),
    ("kd-full-self", "b06", 10),
    ("lm-full-c4-lr3e-4", "b06", 10),
    ("lm-full-c4-lr3e-5", "b06", 10),
    ("lm-full-c4", "b06", 30),
    ("kdalign-full-c4", "b06", 30),
    ("lm-full-c4", "b11", 30),
    ("kdalign-full-c4", "b11", 30),
    ("kd-full-c4", "b06", 30),
    ("kd-full-self", "b06", 30),
    ("kd-lora-c4", "b06", 30),
)


def planned_rows(context: QualityContext) -> list[PlannedRun]:
    """Every row, in the order it runs."""
    rows = [PlannedRun("dense", lambda: dense_row(context))]
    rows += [
        PlannedRun(f"{variant}-{size}", lambda v=variant, s=size: training_free_row(context, s, v))
        for size in BLOCK_TARGETS
        for variant in TRAINING_FREE
    ]
    rows += [
        PlannedRun(f"{recipe}-{size}-{minutes}m", lambda r=recipe, s=size, m=minutes: recovery_row(context, s, r, m))
        for recipe, size, minutes in RECOVERY_PLAN
    ]
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["*"], help="Run ids (shell patterns) to compute.")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--self-sequences", type=int, default=512, help="Sequences generated for 'self' data.")
    parser.add_argument("--force", action="store_true", help="Recompute rows whose results file exists.")
    parser.add_argument("--report", action="store_true", help="Only write the README table from the results.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Computes the missing rows (or writes the report)."""
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    if args.report:
        print(write_report(results_dir))
        return
    from optimum_depth.model_zoo import load_model_and_tokenizer

    threads = set_threads()
    dense, tokenizer = load_model_and_tokenizer()
    dense.eval()
    settings = {"machine": machine_settings(), "protocol": "benchmarks/quality/protocol.py"}
    base = {"model": model_info(dense), "settings": settings}
    context = QualityContext(dense, tokenizer, base, results_dir, self_sequences=args.self_sequences)
    rows = [r for r in planned_rows(context) if any(fnmatch.fnmatch(r.run_id, p) for p in args.rows)]
    print(f"{TABLE}: {len(rows)} rows, {threads} thread(s)", flush=True)
    run_all(TABLE, rows, results_dir, command_line("benchmarks.bench_quality"), force=args.force)


if __name__ == "__main__":
    main()
