"""``optimum-depth card``: the model card (README.md) of a pruned checkpoint, from its saved records and results."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from .common import UsageError

NAME = "card"
HELP = "Write the model card of a pruned checkpoint directory (README.md), from its plan, scores and results."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    parser.add_argument("checkpoint", help="A pruned checkpoint directory (from `optimum-depth prune`).")
    parser.add_argument("--results", help="evaluation_results.json (default: the one in the checkpoint, if any).")
    parser.add_argument("--repo-id", help="Hub id the card is for (loading snippet).")
    parser.add_argument("--base-model", help="Hub id of the model that was pruned.")
    parser.add_argument("--license", help="License id (default: inherited from the base model when known).")
    parser.add_argument("--output", help="Where to write the card (default: <checkpoint>/README.md).")


def load_records(checkpoint: Path, results_path: str | None):
    """Reads the checkpoint's plan, scores and results (those present). Returns ``(model, plan, scores, results)``."""
    from transformers import AutoModelForCausalLM

    from ..cards import PLOT_NAME, RESULTS_NAME  # noqa: F401  (names of the files beside the checkpoint)
    from ..evaluation.results import ComparisonResults, EvaluationResults
    from ..plan import PLAN_NAME, PruningPlan
    from ..saving import SCORES_NAME
    from ..scores import LayerScores

    if not (checkpoint / "config.json").is_file():
        raise UsageError(f"{str(checkpoint)!r} is not a checkpoint directory (no config.json).")
    plan = PruningPlan.load(checkpoint / PLAN_NAME) if (checkpoint / PLAN_NAME).is_file() else None
    scores = LayerScores.from_json(checkpoint / SCORES_NAME) if (checkpoint / SCORES_NAME).is_file() else None
    results_file = Path(results_path) if results_path else checkpoint / RESULTS_NAME
    results = None
    if results_path and not results_file.is_file():
        raise FileNotFoundError(f"--results {results_path!r} does not exist.")
    if results_file.is_file():
        text = results_file.read_text(encoding="utf-8")
        results = ComparisonResults.from_json(text) if '"dense"' in text else EvaluationResults.from_json(text)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    return model, plan, scores, results


def run(args: argparse.Namespace) -> int:
    """Writes the card (atomically, via a temporary file)."""
    from ..cards import PLOT_NAME, build_model_card

    checkpoint = Path(args.checkpoint)
    model, plan, scores, results = load_records(checkpoint, args.results)
    card = build_model_card(
        model,
        results=results,
        plan=plan,
        scores=scores,
        repo_id=args.repo_id,
        base_model=args.base_model,
        license=args.license,
        plot_file=PLOT_NAME if (checkpoint / PLOT_NAME).is_file() else None,
    )
    output = Path(args.output) if args.output else checkpoint / "README.md"
    tmp = output.with_name(f".{output.name}.tmp")
    card.save(tmp)
    shutil.move(tmp, output)
    print(f"Model card written to {output}")
    return 0
