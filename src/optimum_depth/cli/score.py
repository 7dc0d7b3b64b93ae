"""``optimum-depth score``: importance of every block (or sublayer), as JSON and a PNG plot, and the plan it implies."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from .common import (
    add_model_arguments,
    add_output_arguments,
    add_pruning_arguments,
    check_output_dir,
    config_from_args,
    default_calibration_source,
    load_model,
    recipe_label,
    with_recommended_recipe,
)

if TYPE_CHECKING:
    from ..config import DepthPruningConfig

NAME = "score"
HELP = "Score the importance of every block (writes layer_scores.json, layer_scores.png and the implied plan)."
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    add_model_arguments(parser)
    add_pruning_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--no-plot", action="store_true", help="Do not draw the PNG plot (no matplotlib needed).")


def compute_scores(args: argparse.Namespace, config: DepthPruningConfig | None = None):
    """Checks the options, loads the model and scores it.

    Args:
        args: The parsed options.
        config: The pruning config (default: built from ``args``).

    Returns:
        ``(pruner, scores, model, tokenizer, calibration)``; ``calibration`` is the source the scores came from (the
        compensation of ``prune`` samples from it too, without reading and tokenizing it again).
    """
    from ..pruner import DepthPruner, shared_calibration

    config = config or config_from_args(args)
    check_output_dir(args)
    model, tokenizer = load_model(args)
    pruner = DepthPruner(config)
    pruner.check(model)
    calibration = shared_calibration(config.calibration_dataset or default_calibration_source(), config, tokenizer)
    scores = pruner.score(model, calibration=calibration, tokenizer=tokenizer)
    return pruner, scores, model, tokenizer, calibration


def run(args: argparse.Namespace) -> int:
    """Scores the model and writes the scores, the plan they imply, the config and the plot."""
    from ..publishing.saving import save_pruning_records, write_into_directory

    config = config_from_args(args)
    config = with_recommended_recipe(config, args, config.calibration_dataset or default_calibration_source())
    pruner, scores, _, _, _ = compute_scores(args, config)
    plan = pruner.plan(scores)

    def write(staging) -> None:
        save_pruning_records(staging, plan=plan, scores=scores, config=pruner.config, plot=not args.no_plot)

    out = write_into_directory(args.output_dir, write)
    print(
        f"{recipe_label(plan, pruner.config)}: {len(scores.values)} candidates scored, would remove "
        f"{list(plan.removed_blocks)}"
        f"{sublayer_summary(plan)}; wrote {out}"
    )
    return 0


def sublayer_summary(plan) -> str:
    """``", attention of [...], MLP of [...]"`` for a sublayer plan, else ``""``."""
    if plan.granularity != "sublayer":
        return ""
    return f", attention of {list(plan.removed_attention)}, MLP of {list(plan.removed_mlp)}"
