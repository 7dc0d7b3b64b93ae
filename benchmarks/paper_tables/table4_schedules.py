"""Table 4: one-shot vs iterative pruning to 35% of the blocks with ``DepthPruningCallback``, on SmolLM2-135M.

Each run trains a fresh copy of the dense model with the LoRA recipe of ``optimum_depth.training`` (r=8, all linear
layers) on Alpaca for ``--steps`` optimizer steps, with a ``DepthPruningCallback`` in the ``Trainer``:

* ``one_shot``: the whole target (35% of 30 blocks = 10) is removed before the first optimizer step;
* ``iterative``: the same target in ``--events`` events spread evenly over the first three quarters of the run
  (e.g. steps 0, 8, 16, 24 of 32), each event rescoring the current, partly trained model.

Both get the same training budget; the LoRA weights are then merged and the model is evaluated as in table 1. One
results file per run under ``--results-dir/table4/``; existing files are skipped, two processes can share the work.

Run from the repository root::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.paper_tables.table4_schedules
    python -m benchmarks.paper_tables.make_tables
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

from optimum_depth import DepthPruningCallback, DepthPruningConfig
from optimum_depth.training import RecoveryConfig, build_recovery_dataset

from .context import DATA, TableContext, add_common_arguments, calibration_settings
from .runner import EvalSettings, PlannedRun, fill_evaluation, new_record, train_and_merge

TABLE = "table4"
MODULE = "benchmarks.paper_tables.table4_schedules"
CRITERIA = ("taylor", "ppl")
SCHEDULES = ("one_shot", "iterative")
RATIO = 0.35


def run_id(schedule: str, criterion: str) -> str:
    """The table-4 row id of a run (see :func:`benchmarks.paper_tables.tables.table4_spec`)."""
    return f"{schedule}-{criterion}-r{RATIO:.2f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (evaluation options from :class:`EvalSettings`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", default=str(DATA / "calib"))
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-data", default=str(DATA / "alpaca" / "alpaca_small_antelofski.json"))
    parser.add_argument("--steps", type=int, default=32, help="Optimizer steps of every run.")
    parser.add_argument("--events", type=int, default=4, help="Pruning events of the iterative schedule.")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    return add_common_arguments(parser).parse_args(argv)


def pruning_config(schedule: str, criterion: str, args: argparse.Namespace) -> DepthPruningConfig:
    """The callback's config: the whole target at step 0, or ``--events`` events over the first 3/4 of the run."""
    common = dict(
        criterion=criterion, pruning_ratio=RATIO, num_samples=args.num_samples, seq_len=args.seq_len, seed=args.seed
    )
    if schedule == "one_shot":
        return DepthPruningConfig(schedule="one_shot", **common)
    spacing = max(1, (3 * args.steps // 4) // args.events)
    return DepthPruningConfig(schedule="iterative", prune_at_steps=[i * spacing for i in range(args.events)], **common)


def schedule_run(dense, tokenizer, train, schedule: str, criterion: str, args, base: dict) -> dict[str, Any]:
    """Trains a copy of ``dense`` with LoRA under the callback, merges, evaluates."""
    evaluation = EvalSettings.from_args(args)
    pruning = pruning_config(schedule, criterion, args)
    recovery = RecoveryConfig(
        method="lora",
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        warmup_steps=0,
    )
    merged, train_s, history = train_and_merge(
        copy.deepcopy(dense),
        tokenizer,
        train,
        recovery,
        lambda trainer: [
            DepthPruningCallback(pruning, calibration=args.calibration, tokenizer=tokenizer, trainer=trainer)
        ],
    )
    events = [{"step": e["step"], "removed": e["pruning/removed_layers"]} for e in history if "pruning/event" in e]
    losses = [e["loss"] for e in history if "loss" in e]
    print(f"  {run_id(schedule, criterion)}: events {events} ({train_s:.0f} s)", flush=True)
    method = {
        "name": run_id(schedule, criterion),
        "criterion": criterion,
        "schedule": schedule,
        "pruning_ratio": RATIO,
        "num_blocks_kept": int(merged.config.num_hidden_layers),
        "surviving_layers": list(merged.config.surviving_layers),
        "events": events,
        "recovery": {**recovery.to_dict(), "data": args.train_data, "block_size": args.block_size},
        "config": pruning.to_dict(),
    }
    record = new_record(TABLE, run_id(schedule, criterion), base["model"], method, base["settings"])
    fill_evaluation(record, merged, tokenizer, evaluation, dense=dense)
    record["details"]["losses"] = losses
    record["timings"]["train_s"] = train_s
    return record


def main(argv: list[str] | None = None) -> list[str]:
    """Runs every missing run of table 4; returns the run ids computed."""
    args = parse_args(argv)
    training = {
        "data": args.train_data,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "learning_rate": args.learning_rate,
        "method": "lora",
        "iterative_events": args.events,
    }
    context = TableContext.start(
        TABLE, MODULE, args, {"calibration": calibration_settings(args), "training": training}
    )
    dense, tokenizer, base = context.dense, context.tokenizer, context.base
    train = build_recovery_dataset(args.train_data, tokenizer, block_size=args.block_size)
    runs = [
        PlannedRun(
            run_id(schedule, criterion),
            lambda s=schedule, c=criterion: schedule_run(dense, tokenizer, train, s, c, args, base),
        )
        for criterion in CRITERIA
        for schedule in SCHEDULES
    ]
    return context.run(runs)


if __name__ == "__main__":
    main()
