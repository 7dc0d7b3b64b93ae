"""The quality benchmark: SmolLM2-135M-Instruct and Gemma-3-270M pruned by about 20% and 35% of their blocks.

Rows (one results file each under ``benchmarks/results/quality/`` for SmolLM2, ``.../quality/gemma3-270m/`` for
Gemma; existing files are skipped, so an interrupted run resumes, and two processes can share the work):

* ``dense``;
* training-free, per size (SmolLM2: ``b06`` and ``b11`` of 30 blocks; Gemma: ``b04`` and ``b06`` of 18, see
  ``benchmarks/quality/models.py``): ``plain`` (the best of six plain criteria on validation text), ``linear_ls`` /
  ``linear_cosine`` / ``reconstruct`` (that plan compensated), ``aware`` (compensation-aware selection, compensated),
  ``default`` (``optimum-depth prune``'s default recipe: ``criterion="auto"`` + reconstruction);
* recovery at equal CPU budgets (one thread), from the best training-free model of the size (chosen on validation):
  LM loss vs KD vs KD + hidden alignment, C4 vs self-generated text, full vs LoRA (SmolLM2), and the LM loss with
  its learning rate checked on validation (Gemma).

Test figures: WikiText-2 and PTB test perplexity on the first 256 windows of 128 tokens, seven zero-shot tasks on
their first 200 documents (with every document's outcome, for the paired test against dense) for the dense model,
the 20% training-free rows (not linear_cosine) and the 30-minute recovery rows. Every choice is made on validation
text (``benchmarks/quality/protocol.py``, which also says how each model is fed BOS). ``--report`` writes
``benchmarks/results/quality/README.md`` from the files of both models.

Run from the repository root (about 10 CPU-hours per model; ``--rows`` runs a subset)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.bench_quality --model smollm2-135m
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.bench_quality --model gemma3-270m
    python -m benchmarks.bench_quality --report

``--zero-shot-only`` re-runs only the zero-shot part of existing training-free rows and the dense row that lack
per-document outcomes (the training-free models are rebuilt exactly from their recorded plan and compensation).
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
from pathlib import Path

from benchmarks.paper_tables.runner import PlannedRun, command_line, machine_settings, run_all, set_threads
from benchmarks.quality.models import MODELS, QualityModel
from benchmarks.quality.protocol import RESULTS_DIR, portable
from benchmarks.quality.report import write_report
from benchmarks.quality.rows import QualityContext, bos_protocol_row, dense_row, recovery_row, training_free_row
from benchmarks.quality.zero_shot_rerun import add_missing_zero_shot_documents

TRAINING_FREE = ("plain", "linear_ls", "linear_cosine", "reconstruct", "aware", "default")
RECOVERY_PLAN = {
    # (recipe, size, CPU-minutes), in the order they run: the 10-minute comparisons first, then the 30-minute points.
    "smollm2-135m": (
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
    ),
    # Gemma: SmolLM2's two 30-minute recipes (LM, and KD + hidden alignment; learning rate chosen on SmolLM2's
    # validation text), 30 minutes per size; then the learning-rate check on Gemma's own validation text (1e-4, 3e-4
    # and 3e-5 at 10 CPU-minutes, see rows.resolve_recipe), which chose 3e-5, and the LM loss at that rate for 30.
    "gemma3-270m": (
        ("lm-full-c4", "b04", 30),
        ("lm-full-c4", "b06", 30),
        ("kdalign-full-c4", "b04", 30),
        ("kdalign-full-c4", "b06", 30),
        ("lm-full-c4", "b04", 10),
        ("lm-full-c4-lr3e-4", "b04", 10),
        ("lm-full-c4-lr3e-5", "b04", 10),
        ("lm-full-c4-lr3e-5", "b04", 30),  # = lm-full-c4-lrval at b04: 3e-5 was chosen at 10 CPU-minutes
        ("lm-full-c4-lrval", "b06", 30),
    ),
}


def planned_rows(context: QualityContext) -> list[PlannedRun]:
    """Every row of the context's model, in the order it runs."""
    spec = context.spec

    def portable_run(compute):
        return lambda: portable(compute())

    rows = [
        PlannedRun("dense", portable_run(lambda: dense_row(context))),
        PlannedRun("bos-protocol", portable_run(lambda: bos_protocol_row(context))),
    ]
    rows += [
        PlannedRun(f"{variant}-{size}", portable_run(lambda v=variant, s=size: training_free_row(context, s, v)))
        for size in spec.sizes
        for variant in TRAINING_FREE
    ]
    rows += [
        PlannedRun(
            f"{recipe}-{size}-{minutes}m",
            portable_run(lambda r=recipe, s=size, m=minutes: recovery_row(context, s, r, m)),
        )
        for recipe, size, minutes in RECOVERY_PLAN[spec.key]
    ]
    return rows


def code_state() -> dict:
    """The library code a run used: the git commit, and the source files changed but not committed at its start."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    return {"git_commit": git("rev-parse", "HEAD") or None, "uncommitted_source_files": changed}


def model_record(spec: QualityModel, dense) -> dict:
    """What each results file records about the dense model (Hub id, GGUF source and hash; no local path)."""
    from optimum_depth.architectures import count_parameters
    from optimum_depth.loading import NAMED_MODELS

    named = NAMED_MODELS[spec.key]
    return {
        "name": named.hub_id,
        "loaded_with": f"optimum_depth.loading.load_model_and_tokenizer({spec.key!r})",
        "rebuilt_from": named.gguf.record(),
        "num_blocks": int(dense.config.num_hidden_layers),
        "num_parameters": count_parameters(dense),
        "dtype": str(next(dense.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": getattr(dense.config, "_attn_implementation", None),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2-135m", help="Which model's rows to run.")
    parser.add_argument("--rows", nargs="+", default=["*"], help="Run ids (shell patterns) to compute.")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--self-sequences", type=int, default=512, help="Sequences generated for 'self' data.")
    parser.add_argument("--force", action="store_true", help="Recompute rows whose results file exists.")
    parser.add_argument("--report", action="store_true", help="Only write the README tables from the results.")
    parser.add_argument(
        "--zero-shot-only",
        action="store_true",
        help="Only add per-document zero-shot outcomes to existing rows (of --rows) that lack them.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Computes the missing rows (or writes the report)."""
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    if args.report:
        print(write_report(results_dir))
        return
    from optimum_depth.loading import load_model_and_tokenizer

    spec = MODELS[args.model]
    threads = set_threads()
    dense, tokenizer = load_model_and_tokenizer(spec.key)
    dense.eval()
    settings = {"machine": machine_settings(), "protocol": "benchmarks/quality/protocol.py", "code": code_state()}
    base = {"model": model_record(spec, dense), "settings": settings}
    context = QualityContext(spec, dense, tokenizer, base, results_dir, self_sequences=args.self_sequences)
    command = command_line("benchmarks.bench_quality")
    if args.zero_shot_only:
        add_missing_zero_shot_documents(context, args.rows, command)
        return
    rows = [r for r in planned_rows(context) if any(fnmatch.fnmatch(r.run_id, p) for p in args.rows)]
    print(f"{spec.table}: {len(rows)} rows, {threads} thread(s)", flush=True)
    run_all(spec.table, rows, results_dir, command, force=args.force)


if __name__ == "__main__":
    main()
