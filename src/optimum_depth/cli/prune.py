"""``optimum-depth prune``: score, plan and remove; write a native checkpoint with its plan, scores, config and plot."""

from __future__ import annotations

import argparse

from .common import add_model_arguments, add_output_arguments, add_pruning_arguments
from .score import compute_scores, sublayer_summary

NAME = "prune"
HELP = "Prune a model and save the pruned checkpoint (safetensors) with its plan, scores, config and plot."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    add_model_arguments(parser)
    add_pruning_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--plan", help="Apply this pruning_plan.json (made for the same model) instead of scoring.")
    parser.add_argument("--no-plot", action="store_true", help="Do not draw the PNG plot (no matplotlib needed).")


def run(args: argparse.Namespace) -> int:
    """Prunes and writes ``<output-dir>`` = the checkpoint + its plan, scores, config and plot."""
    from ..architectures import count_parameters
    from ..plan import PruningPlan
    from ..pruner import DepthPruner
    from ..publishing.saving import save_pruned_model
    from .common import (
        check_output_dir,
        config_calibration,
        config_from_args,
        default_calibration_source,
        load_model,
        recipe_label,
        with_recommended_recipe,
    )

    config = config_from_args(args)
    config = with_recommended_recipe(config, args, config.calibration_dataset or default_calibration_source())
    if args.plan:
        plan = PruningPlan.from_pretrained(args.plan)
        check_output_dir(args)
        model, tokenizer = load_model(args)
        pruner, scores, calibration = DepthPruner(config), None, config_calibration(config)
    else:
        pruner, scores, model, tokenizer, calibration = compute_scores(args, config)
        plan = pruner.plan(scores)
    before = count_parameters(model)
    pruner.apply(model, plan, calibration=calibration, tokenizer=tokenizer)
    after = count_parameters(model)
    out = save_pruned_model(
        model, args.output_dir, tokenizer, plan=plan, scores=scores, config=pruner.config, plot=not args.no_plot
    )
    print(
        f"Removed blocks {list(plan.removed_blocks)}{sublayer_summary(plan)} ({recipe_label(plan, pruner.config)}); "
        f"parameters {before:,} -> {after:,}. Saved to {out}"
    )
    return 0
