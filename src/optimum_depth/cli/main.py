"""Entry point of ``optimum-depth``: parses arguments, runs a subcommand, and reports errors.

A mistake of the user (any :class:`~optimum_depth.errors.OptimumDepthError`: a bad option, a missing file, an
impossible target, a corrupt checkpoint) prints one line on stderr and exits with code 2; nothing was changed.
Ctrl-C prints one line and exits with 130 (outputs are staged, so nothing is left behind). Any other exception is a
bug: its traceback is shown and the exit code is 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from ..errors import OptimumDepthError
from . import benchmark, card, evaluate, prune, push, quickstart, recover, score, upgrade

logger = logging.getLogger("optimum_depth.cli")

SUBCOMMANDS = (quickstart, score, prune, recover, evaluate, benchmark, card, push, upgrade)
"""Subcommand modules; each has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130
QUIET_LOGGERS = ("bitsandbytes", "kernels")
"""Optional backends that peft imports (through ``transformers.Trainer``) whether or not anything is quantized; offline
they warn at import that their Hub kernels for 4-bit layers cannot be fetched. The command line shows only their
errors (``-v`` shows everything)."""
QUIET_WARNINGS = (r".*`is_gradient_checkpointing` is deprecated.*",)
"""Deprecation warnings of a dependency about another dependency's call (peft calling transformers): not the user's."""


def _quiet_dependencies() -> None:
    """Keeps the dependencies' warnings about things the user did not ask for out of the command's output."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


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
        The process exit code: 0 on success, 2 for a user mistake (one line on stderr), 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return USER_ERROR_EXIT_CODE
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        _quiet_dependencies()
    try:
        return int(args.func(args) or 0)
    except OptimumDepthError as err:
        print(f"optimum-depth {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except KeyboardInterrupt:
        print(f"optimum-depth {args.command}: interrupted; nothing was written.", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
