"""``optimum-depth push``: upload a pruned checkpoint with its card and records to the Hub in one commit."""

from __future__ import annotations

import argparse
from pathlib import Path

from .card import load_records

NAME = "push"
HELP = "Push a pruned checkpoint (weights, config, tokenizer, card, plan, scores, plot) to the Hub in one commit."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    parser.add_argument("checkpoint", help="A pruned checkpoint directory (from `optimum-depth prune`).")
    parser.add_argument("repo_id", help="Target Hub repository, e.g. my-org/model-pruned.")
    parser.add_argument("--results", help="evaluation_results.json (default: the one in the checkpoint, if any).")
    parser.add_argument("--base-model", help="Hub id of the model that was pruned.")
    parser.add_argument("--license", help="License id.")
    parser.add_argument("--private", action="store_true", help="Create a private repository.")
    parser.add_argument("--token", help="Hub token (default: the saved login). Never written anywhere.")
    parser.add_argument("--endpoint", help="Hub endpoint (default: $HF_ENDPOINT or huggingface.co).")


def run(args: argparse.Namespace) -> int:
    """Pushes and prints the commit URL."""
    from transformers import AutoTokenizer

    from ..hub import push_to_hub

    checkpoint = Path(args.checkpoint)
    model, plan, scores, results = load_records(checkpoint, args.results)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint) if (checkpoint / "tokenizer_config.json").is_file() else None
    info = push_to_hub(
        model,
        args.repo_id,
        tokenizer=tokenizer,
        results=results,
        plan=plan,
        scores=scores,
        private=args.private or None,
        token=args.token,
        base_model=args.base_model,
        license=args.license,
        endpoint=args.endpoint,
    )
    print(f"Pushed {checkpoint} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0
