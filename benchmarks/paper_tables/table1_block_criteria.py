"""Table 1: the block criteria at 20% and 35% of the blocks removed, no retraining, on SmolLM2-135M-Instruct.

For the dense model and each (criterion, ratio): ``DepthPruner(DepthPruningConfig(criterion, pruning_ratio))``
prunes a copy of the dense model (calibration from ``--calibration``, ``--num-samples`` x ``--seq-len`` tokens,
``--seed``), then WikiText-2 and PTB perplexity, the seven zero-shot tasks (lm-eval, first ``--zero-shot-limit``
documents of each), the parameter count and the batch-1 generation speed-up against the dense model (interleaved
in the same process) are measured. One results file per run under ``--results-dir/table1/``; existing files are
skipped, so an interrupted run resumes, and two processes can share the work (each claims runs with a lock file).

Run from the repository root::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.paper_tables.table1_block_criteria
    python -m benchmarks.paper_tables.make_tables
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch

from optimum_depth import DepthPruner, DepthPruningConfig
from optimum_depth.model_zoo import DEFAULT_MODEL_ID, load_model_and_tokenizer
from optimum_depth.scoring import count_parameters

from .runner import (
    EvalSettings,
    PlannedRun,
    command_line,
    dense_run,
    fill_evaluation,
    machine_settings,
    new_record,
    run_all,
    set_threads,
    settings_dict,
)
from .tables import BLOCK_RATIOS, CRITERIA, block_run_id

TABLE = "table1"
MODULE = "benchmarks.paper_tables.table1_block_criteria"
ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (evaluation options from :class:`EvalSettings`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=list(CRITERIA))
    parser.add_argument("--ratios", nargs="+", type=float, default=list(BLOCK_RATIOS))
    parser.add_argument("--skip-dense", action="store_true", help="Do not run the dense baseline.")
    parser.add_argument("--calibration", default=str(ROOT.parent / "shared" / "data" / "calib"))
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results" / "paper"))
    parser.add_argument("--force", action="store_true", help="Recompute runs whose results file exists.")
    EvalSettings.add_arguments(parser)
    return parser.parse_args(argv)


def model_info(model) -> dict[str, Any]:
    """What the results file records about the dense model."""
    return {
        "name": DEFAULT_MODEL_ID,
        "loaded_with": "optimum_depth.model_zoo.load_model_and_tokenizer()",
        "num_blocks": int(model.config.num_hidden_layers),
        "num_parameters": count_parameters(model),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }


def scores_summary(pruner: DepthPruner) -> dict[str, Any]:
    """The scores and plan of the last pruning (scalar ``extra`` entries only)."""
    scores, plan = pruner.last_scores, pruner.last_plan
    extra = {k: v for k, v in scores.extra.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {
        "values": list(scores.values),
        "removal_order": scores.removal_order,
        "protected": list(scores.protected),
        "scoring_elapsed_s": scores.elapsed_seconds,
        "calibration": dict(scores.calibration),
        "extra": extra,
        "plan_reason": plan.reason,
    }


def pruned_run(
    dense, tokenizer, criterion: str, ratio: float, args: argparse.Namespace, base: dict[str, Any]
) -> dict[str, Any]:
    """One criterion at one ratio: prune a copy of ``dense``, evaluate it, time it against ``dense``."""
    evaluation = EvalSettings.from_args(args)
    config = DepthPruningConfig(
        criterion=criterion,
        pruning_ratio=ratio,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        seed=args.seed,
        calibration_dataset=args.calibration,
    )
    torch.manual_seed(args.seed)
    pruner = DepthPruner(config)
    start = time.perf_counter()
    pruned = pruner.prune(copy.deepcopy(dense), calibration=args.calibration, tokenizer=tokenizer)
    pruning_s = time.perf_counter() - start
    removed = sorted(pruner.last_plan.removed_blocks)
    print(f"  {criterion} r={ratio}: removed {removed} ({pruning_s:.0f} s)", flush=True)
    method = {
        "name": criterion,
        "label": CRITERIA[criterion],
        "pruning_ratio": ratio,
        "num_blocks_removed": len(removed),
        "num_blocks_kept": int(pruned.config.num_hidden_layers),
        "removed_blocks": removed,
        "removal_order": list(pruner.last_plan.removed_blocks),
        "recovery": "none",
        "config": config.to_dict(),
    }
    record = new_record(TABLE, block_run_id(criterion, ratio), base["model"], method, base["settings"])
    fill_evaluation(record, pruned, tokenizer, evaluation, dense=dense)
    record["details"]["scores"] = scores_summary(pruner)
    record["timings"]["pruning_s"] = pruning_s
    return record


def main(argv: list[str] | None = None) -> list[str]:
    """Runs every missing run of table 1; returns the run ids computed."""
    args = parse_args(argv)
    threads = set_threads()
    evaluation = EvalSettings.from_args(args)
    dense, tokenizer = load_model_and_tokenizer()
    dense.eval()
    settings = {
        "calibration": {
            "source": args.calibration,
            "num_samples": args.num_samples,
            "seq_len": args.seq_len,
            "seed": args.seed,
        },
        "evaluation": settings_dict(evaluation),
        "machine": machine_settings(),
    }
    base = {"model": model_info(dense), "settings": settings}
    print(f"table 1: {base['model']['name']}, {threads} thread(s), settings {settings}", flush=True)
    runs = (
        [] if args.skip_dense else [PlannedRun("dense", lambda: dense_run(TABLE, dense, tokenizer, base, evaluation))]
    )
    for ratio in args.ratios:
        for criterion in args.criteria:
            runs.append(
                PlannedRun(
                    block_run_id(criterion, ratio),
                    lambda c=criterion, r=ratio: pruned_run(dense, tokenizer, c, r, args, base),
                )
            )
    return run_all(TABLE, runs, Path(args.results_dir), command_line(MODULE), force=args.force)


if __name__ == "__main__":
    main()
