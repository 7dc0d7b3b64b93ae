"""``optimum-depth prune``: score, plan and remove blocks; write a native checkpoint with its plan, scores and plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_arguments, add_output_arguments, add_pruning_arguments
from .score import compute_scores, write_outputs

NAME = "prune"
HELP = "Prune a model and save the pruned checkpoint (safetensors) with its plan, scores and plot."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    add_model_arguments(parser)
    add_pruning_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--plan", help="Apply this pruning_plan.json instead of scoring.")


def run(args: argparse.Namespace) -> int:
    """Prunes and writes ``<output-dir>`` = the checkpoint + pruning_plan.json + layer_scores.json/png."""
    from ..plan import PruningPlan
    from ..scoring import count_parameters

    if args.plan:
        from ..pruner import DepthPruner
        from .common import check_output_dir, config_from_args, load_model

        plan = PruningPlan.load(args.plan)
        config = config_from_args(args)
        check_output_dir(args)
        model, tokenizer = load_model(args)
        pruner, scores = DepthPruner(config), None
    else:
        pruner, scores, model, tokenizer = compute_scores(args)
        plan = pruner.plan(scores)
    before = count_parameters(model)
    pruner.apply(model, plan)
    after = count_parameters(model)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        plan.save(tmp / "pruning_plan.json")
        pruner.config.save_pretrained(tmp)
        if scores is not None:
            scores.to_json(tmp / "layer_scores.json")
            positions = [scores.layer_indices.index(i) for i in plan.removed_blocks]
            scores.plot(tmp / "layer_scores.png", selected=positions)

    out = write_outputs(args, write)
    print(
        f"Removed blocks {list(plan.removed_blocks)} ({plan.criterion}); parameters {before:,} -> {after:,}. "
        f"Saved to {out}"
    )
    return 0
