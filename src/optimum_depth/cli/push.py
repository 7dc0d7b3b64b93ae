"""``optimum-depth push``: upload a pruned checkpoint with its card and records to the Hub in one commit."""

from __future__ import annotations

import argparse
from pathlib import Path

from .card import card_options

NAME = "push"
HELP = "Push a pruned checkpoint (weights, config, tokenizer, card, plan, scores, plot) to the Hub in one commit."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    parser.add_argument("checkpoint", help="A pruned checkpoint folder (from `optimum-depth prune`).")
    parser.add_argument("repo_id", help="Target Hub repository, e.g. my-org/model-pruned.")
    parser.add_argument("--results", help="An evaluation_results.json (default: the checkpoint's own, if any).")
    parser.add_argument("--base-model", help="Hub id of the model that was pruned.")
    parser.add_argument("--license", help="License id, e.g. apache-2.0.")
    parser.add_argument("--private", action="store_true", help="Create a private repository.")
    parser.add_argument(
        "--token", help="Hub token (default: $HF_TOKEN or the saved login). Never written anywhere or logged."
    )
    parser.add_argument("--endpoint", help="Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co).")


def run(args: argparse.Namespace) -> int:
    """Pushes and prints the commit URL."""
    from ..constants import TOKENIZER_CONFIG_NAME
    from ..loading.zoo import load_pretrained_model
    from ..publishing.hub import PushSettings, push_to_hub, resolve_token
    from ..publishing.records import read_checkpoint_records

    settings = PushSettings(private=args.private or None, token=args.token, endpoint=args.endpoint)
    resolve_token(settings)  # refuse at once when no token is available
    checkpoint = Path(args.checkpoint)
    records = read_checkpoint_records(checkpoint, args.results)
    model = load_pretrained_model(checkpoint)
    tokenizer = None
    if (checkpoint / TOKENIZER_CONFIG_NAME).is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    plot = checkpoint / records.plot_file if records.plot_file else False
    info = push_to_hub(
        model,
        args.repo_id,
        tokenizer,
        results=records.results,
        plan=records.plan,
        scores=records.scores,
        plot=plot,
        card=card_options(args),
        settings=settings,
    )
    print(f"Pushed {checkpoint} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0
