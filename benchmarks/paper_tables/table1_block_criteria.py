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
from typing import Any

import torch

from optimum_depth import DepthPruner, DepthPruningConfig, remove_layers

from .context import DATA, TableContext, add_common_arguments, calibration_settings
from .results_format import read_run, run_path
from .runner import EvalSettings, PlannedRun, fill_evaluation, new_record
from .tables import BLOCK_RATIOS, CRITERIA, block_run_id

TABLE = "table1"
MODULE = "benchmarks.paper_tables.table1_block_criteria"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (evaluation options from :class:`EvalSettings`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=list(CRITERIA))
    parser.add_argument("--ratios", nargs="+", type=float, default=list(BLOCK_RATIOS))
    parser.add_argument("--calibration", default=str(DATA / "calib"))
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    return add_common_arguments(parser).parse_args(argv)


def table1_record(results_dir: str, criterion: str, ratio: float) -> dict[str, Any]:
    """Table 1's results record of ``criterion`` at ``ratio`` (read by the tables that reuse its plans)."""
    return read_run(run_path(results_dir, TABLE, block_run_id(criterion, ratio)))


def rebuild_table1_model(dense, record: dict[str, Any]):
    """Table 1's pruned model of ``record``: its recorded blocks removed from a copy of ``dense`` (no rescoring).

    Returns:
        The pruned copy and the removed blocks (original numbering).
    """
    removed = list(record["method"]["removed_blocks"])
    return remove_layers(copy.deepcopy(dense), removed), removed


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
    context = TableContext.start(TABLE, MODULE, args, {"calibration": calibration_settings(args)})
    runs = [
        PlannedRun(
            block_run_id(criterion, ratio),
            lambda c=criterion, r=ratio: pruned_run(context.dense, context.tokenizer, c, r, args, context.base),
        )
        for ratio in args.ratios
        for criterion in args.criteria
    ]
    return context.run(runs)


if __name__ == "__main__":
    main()
