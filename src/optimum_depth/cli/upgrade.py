"""``optimum-depth upgrade``: re-save a sublayer-pruned checkpoint's config and model code with this version's."""

from __future__ import annotations

import argparse

NAME = "upgrade"
HELP = (
    "Rewrite a sublayer-pruned checkpoint's config.json and model code (for trust_remote_code) with this version's; "
    "weights and other files are kept."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    parser.add_argument("checkpoint", help="A local checkpoint folder written by optimum-depth.")


def run(args: argparse.Namespace) -> int:
    """Upgrades the checkpoint in place and says what was rewritten."""
    from ..loading.upgrade import upgrade_checkpoint

    written = upgrade_checkpoint(args.checkpoint)
    if written:
        print(f"Upgraded {args.checkpoint}: rewrote {', '.join(written)}.")
    else:
        print(f"{args.checkpoint} loads with transformers' own classes: nothing to upgrade.")
    return 0
