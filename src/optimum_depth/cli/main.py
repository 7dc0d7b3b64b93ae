"""Entry point of ``optimum-depth``: parses arguments, runs a subcommand, turns user mistakes into exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import benchmark, card, evaluate, prune, push, quickstart, recover, score
from .common import UsageError

logger = logging.getLogger("optimum_depth.cli")

SUBCOMMANDS = (quickstart, score, prune, recover, evaluate, benchmark, card, push)
"""Subcommand modules; each has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..architectures import UnsupportedArchitectureError
    from ..config import PruningTargetError
    from ..surgery import LayerIndexError

    return (
        UsageError,
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        UnsupportedArchitectureError,
        PruningTargetError,
        LayerIndexError,
        OSError,  # from_pretrained raises OSError for a model that cannot be found
    )


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``optimum-depth`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="optimum-depth",
        description="Depth pruning for Hugging Face decoder LLMs: score, prune, recover, evaluate, publish.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at INFO level.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 on success, 2 for a user mistake (message on stderr, no traceback).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except _user_errors() as err:
        print(f"optimum-depth {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
