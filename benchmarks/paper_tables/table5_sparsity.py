"""Table 5: BESA vs Wanda vs magnitude at 50% unstructured sparsity, and depth pruning + BESA, on SmolLM2-135M.

For the dense model and each method: a fresh copy of the dense model is sparsified with
``optimum_depth.sparsity.sparsify(model, SparsityConfig(method=..., sparsity=0.5))`` (calibration: ``--num-samples``
x ``--seq-len`` tokens of C4, as BESA and Wanda use; magnitude is data-free), then WikiText-2 and PTB perplexity and
the seven zero-shot tasks are measured with the same settings as table 1. "Depth 20% + BESA" first removes 20% of
the blocks with the PPL criterion (``SparsityConfig(depth_pruning=...)``), then learns the sparsity of the surviving
blocks; its batch-1 speed-up against the dense model is measured too (unstructured zeros alone give none). One
results file per run under ``--results-dir/table5/``; existing files are skipped, two processes can share the work.

Run from the repository root::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.paper_tables.table5_sparsity
    python -m benchmarks.paper_tables.make_tables
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

from optimum_depth import DepthPruningConfig, SparsityConfig, sparsify

from .context import DATA, TableContext, add_common_arguments, calibration_settings
from .runner import EvalSettings, PlannedRun, fill_evaluation, new_record

TABLE = "table5"
MODULE = "benchmarks.paper_tables.table5_sparsity"
METHODS = ("magnitude", "wanda", "besa")
DEPTH_RATIO = 0.20
DEPTH_CRITERION = "ppl"


def run_id(method: str, sparsity: float, depth: bool = False) -> str:
    """The table-5 row id of a run (see :func:`benchmarks.paper_tables.tables.table5_spec`)."""
    return (f"depth-r{DEPTH_RATIO:.2f}+" if depth else "") + f"{method}-s{sparsity:.2f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (evaluation options from :class:`EvalSettings`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--calibration", default=str(DATA / "c4" / "c4_validation_2k.jsonl"))
    parser.add_argument("--num-samples", type=int, default=32, help="Calibration sequences (papers: 128).")
    parser.add_argument("--seq-len", type=int, default=256, help="Tokens per sequence (papers: 2048).")
    parser.add_argument("--seed", type=int, default=0)
    return add_common_arguments(parser).parse_args(argv)


def sparsity_run(dense, tokenizer, method: str, depth: bool, args: argparse.Namespace, base: dict) -> dict[str, Any]:
    """One sparsification of a copy of ``dense`` (optionally after depth pruning), evaluated."""
    evaluation = EvalSettings.from_args(args)
    depth_config = (
        DepthPruningConfig(criterion=DEPTH_CRITERION, pruning_ratio=DEPTH_RATIO, seed=args.seed) if depth else None
    )
    config = SparsityConfig(
        method=method,
        sparsity=args.sparsity,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        seed=args.seed,
        depth_pruning=depth_config,
    )
    start = time.perf_counter()
    calibration = None if method == "magnitude" and not depth else args.calibration
    result = sparsify(copy.deepcopy(dense), config, calibration, tokenizer, show_progress=False)
    sparsify_s = time.perf_counter() - start
    model = result.model
    print(f"  {run_id(method, args.sparsity, depth)}: sparsity {result.achieved_sparsity:.4f} ({sparsify_s:.0f} s)")
    method_record = {
        "name": run_id(method, args.sparsity, depth),
        "sparsity_method": method,
        "sparsity": args.sparsity,
        "achieved_sparsity": result.achieved_sparsity,
        "num_blocks_kept": int(model.config.num_hidden_layers),
        "surviving_layers": getattr(model.config, "surviving_layers", None),
        "depth_pruning": depth_config.to_dict() if depth_config is not None else None,
        "recovery": "none",
        "config": config.to_dict(),
    }
    record = new_record(TABLE, run_id(method, args.sparsity, depth), base["model"], method_record, base["settings"])
    fill_evaluation(record, model, tokenizer, evaluation, dense=dense if depth else None)  # zeros alone: no speed-up
    record["details"]["sparsity"] = result.record()
    record["timings"]["sparsify_s"] = sparsify_s
    return record


def main(argv: list[str] | None = None) -> list[str]:
    """Runs every missing run of table 5; returns the run ids computed."""
    args = parse_args(argv)
    context = TableContext.start(TABLE, MODULE, args, {"calibration": calibration_settings(args)})
    plan = [(method, False) for method in METHODS] + [("besa", True)]
    runs = [
        PlannedRun(
            run_id(method, args.sparsity, depth),
            lambda m=method, d=depth: sparsity_run(context.dense, context.tokenizer, m, d, args, context.base),
        )
        for method, depth in plan
    ]
    return context.run(runs)


if __name__ == "__main__":
    main()
