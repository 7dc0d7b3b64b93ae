"""``optimum-depth score``: importance of every block, as JSON and a PNG plot."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import (
    add_model_arguments,
    add_output_arguments,
    add_pruning_arguments,
    check_output_dir,
    config_from_args,
    default_calibration_source,
    load_model,
    write_outputs,
)

NAME = "score"
HELP = "Score the importance of every block (writes layer_scores.json and layer_scores.png)."
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    add_model_arguments(parser)
    add_pruning_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--no-plot", action="store_true", help="Do not draw the PNG plot.")


def compute_scores(args: argparse.Namespace):
    """Loads the model and scores it. Returns ``(pruner, scores, model, tokenizer)``."""
    from ..pruner import DepthPruner

    config = config_from_args(args)
    check_output_dir(args)
    model, tokenizer = load_model(args)
    pruner = DepthPruner(config)
    pruner.check(model)
    calibration = config.calibration_dataset or default_calibration_source()
    scores = pruner.score(model, calibration=calibration, tokenizer=tokenizer)
    return pruner, scores, model, tokenizer


def run(args: argparse.Namespace) -> int:
    """Scores the model and writes the scores, the plan they imply, and the plot."""
    pruner, scores, _, _ = compute_scores(args)
    plan = pruner.plan(scores)
    positions = [scores.layer_indices.index(i) for i in plan.removed_blocks]

    def write(tmp: Path) -> None:
        scores.to_json(tmp / "layer_scores.json")
        plan.save(tmp / "pruning_plan.json")
        pruner.config.save_pretrained(tmp)
        if not args.no_plot:
            scores.plot(tmp / "layer_scores.png", selected=positions)

    out = write_outputs(args, write)
    logger.info("Scores written to %s", out)
    print(
        f"{scores.criterion}: {len(scores.values)} blocks scored, would remove {list(plan.removed_blocks)}; wrote {out}"
    )
    return 0
