"""``optimum-depth card``: the model card (README.md) of a pruned checkpoint, from its saved records and results."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "card"
HELP = "Write the model card of a pruned checkpoint folder (README.md), from its plan, scores and results."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    parser.add_argument("checkpoint", help="A pruned checkpoint folder (from `optimum-depth prune`).")
    parser.add_argument(
        "--results",
        help="An evaluation_results.json (default: the checkpoint's own). Copied into the checkpoint so the card "
        "only lists files that are there.",
    )
    parser.add_argument("--repo-id", help="Hub id the card is for (title and loading snippet), e.g. org/name.")
    parser.add_argument("--base-model", help="Hub id of the model that was pruned, e.g. HuggingFaceTB/SmolLM2-135M.")
    parser.add_argument("--license", help="License id, e.g. apache-2.0 (default: inherited from the base model).")


def card_options(args: argparse.Namespace):
    """The :class:`~optimum_depth.publishing.cards.CardOptions` given on the command line."""
    from ..publishing.cards import CardOptions

    return CardOptions(repo_id=getattr(args, "repo_id", None), base_model=args.base_model, license=args.license)


def run(args: argparse.Namespace) -> int:
    """Writes the card (and the results file it describes) into the checkpoint folder."""
    from ..loading.zoo import load_pretrained_model
    from ..publishing.cards import build_model_card
    from ..publishing.records import read_checkpoint_records
    from ..publishing.saving import write_into_directory

    checkpoint = Path(args.checkpoint)
    records = read_checkpoint_records(checkpoint, args.results)
    options = card_options(args)
    model = load_pretrained_model(checkpoint)

    def write(staging: Path) -> None:
        files = [p.name for p in checkpoint.iterdir() if p.is_file() and not p.name.startswith(".")]
        if args.results and records.results is not None:
            records.results.save_pretrained(staging)
            files.append(records.results.file_name)
        card = build_model_card(model, records.results, records.plan, records.scores, options=options, files=files)
        card.save(staging / "README.md")

    write_into_directory(checkpoint, write)
    print(f"Model card written to {checkpoint / 'README.md'}")
    return 0
