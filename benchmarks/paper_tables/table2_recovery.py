"""Table 2: table 1's pruned models after LoRA recovery and after short full continued pretraining (CPT).

Each run rebuilds one of table 1's pruned models exactly, by removing the blocks its results file records
(``remove_layers`` on a fresh copy of the dense model: the same plan, no rescoring), then trains it for ``--steps``
optimizer steps with the recipes of ``optimum_depth.training``:

* ``lora``: LoRA r=8 on every linear layer (Shortened LLaMA's recipe) on Alpaca instructions, lr ``--lora-lr``;
* ``cpt``: full-parameter continued pretraining on raw C4 text (Shortened LLaMA's CPT uses a large pretraining
  corpus), lr ``--cpt-lr``.

Both get the same number of steps and tokens (``--batch-size`` packed blocks of ``--block-size`` tokens per step);
LoRA is merged, then the model is evaluated as in table 1. Needs table 1's results files. One results file per run
under ``--results-dir/table2/``; existing files are skipped, two processes can share the work.

Run from the repository root::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.paper_tables.table2_recovery
    python -m benchmarks.paper_tables.make_tables
"""

from __future__ import annotations

import argparse
from typing import Any

from optimum_depth.training import RecoveryConfig, build_recovery_dataset

from .context import DATA, TableContext, add_common_arguments
from .runner import EvalSettings, PlannedRun, fill_evaluation, new_record, train_and_merge
from .table1_block_criteria import rebuild_table1_model, table1_record
from .tables import BLOCK_RATIOS, CRITERIA, block_run_id

TABLE = "table2"
MODULE = "benchmarks.paper_tables.table2_recovery"
RECOVERIES = ("lora", "cpt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (evaluation options from :class:`EvalSettings`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recoveries", nargs="+", default=list(RECOVERIES), choices=list(RECOVERIES))
    parser.add_argument("--lora-data", default=str(DATA / "alpaca" / "alpaca_small_antelofski.json"))
    parser.add_argument("--cpt-data", default=str(DATA / "c4" / "c4_validation_2k.jsonl"))
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--cpt-lr", type=float, default=1e-4)
    return add_common_arguments(parser).parse_args(argv)


def recovery_config(recovery: str, args: argparse.Namespace) -> RecoveryConfig:
    """The recipe of ``recovery`` with this table's step budget."""
    return RecoveryConfig(
        method="lora" if recovery == "lora" else "full",
        max_steps=args.steps,
        learning_rate=args.lora_lr if recovery == "lora" else args.cpt_lr,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        warmup_steps=0,
    )


def recovered_run(dense, tokenizer, data, criterion: str, ratio: float, recovery: str, args, base) -> dict[str, Any]:
    """Rebuilds table 1's ``criterion`` / ``ratio`` model, trains it with ``recovery``, evaluates it."""
    model, removed = rebuild_table1_model(dense, table1_record(args.results_dir, criterion, ratio))
    config = recovery_config(recovery, args)
    merged, train_s, history = train_and_merge(model, tokenizer, data[recovery], config)
    losses = [e["loss"] for e in history if "loss" in e]
    run = block_run_id(criterion, ratio, f"-{recovery}")
    print(f"  {run}: removed {removed}, loss {losses[:1]} -> {losses[-1:]} ({train_s:.0f} s)", flush=True)
    method = {
        "name": criterion,
        "label": CRITERIA[criterion],
        "pruning_ratio": ratio,
        "removed_blocks": removed,
        "num_blocks_removed": len(removed),
        "num_blocks_kept": int(merged.config.num_hidden_layers),
        "pruned_from": f"table1/{block_run_id(criterion, ratio)}",
        "recovery": {
            **config.to_dict(),
            "name": recovery,
            "data": args.lora_data if recovery == "lora" else args.cpt_data,
            "block_size": args.block_size,
        },
    }
    evaluation = EvalSettings.from_args(args)
    record = new_record(TABLE, run, base["model"], method, base["settings"])
    fill_evaluation(record, merged, tokenizer, evaluation, dense=dense)
    record["details"]["losses"] = losses
    record["timings"]["train_s"] = train_s
    return record


def main(argv: list[str] | None = None) -> list[str]:
    """Runs every missing run of table 2; returns the run ids computed."""
    args = parse_args(argv)
    training = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "lora": {"data": args.lora_data, "learning_rate": args.lora_lr},
        "cpt": {"data": args.cpt_data, "learning_rate": args.cpt_lr},
    }
    context = TableContext.start(TABLE, MODULE, args, {"training": training})
    dense, tokenizer, base = context.dense, context.tokenizer, context.base
    data = {
        "lora": build_recovery_dataset(args.lora_data, tokenizer, block_size=args.block_size),
        "cpt": build_recovery_dataset(args.cpt_data, tokenizer, block_size=args.block_size, data_format="text"),
    }
    runs = [
        PlannedRun(
            block_run_id(criterion, ratio, f"-{recovery}"),
            lambda c=criterion, r=ratio, rec=recovery: recovered_run(dense, tokenizer, data, c, r, rec, args, base),
        )
        for recovery in args.recoveries
        for ratio in BLOCK_RATIOS
        for criterion in CRITERIA
    ]
    return context.run(runs)


if __name__ == "__main__":
    main()
