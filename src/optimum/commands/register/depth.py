"""Registers ``optimum-cli depth ...`` (the same subcommands as ``optimum-depth``) with optimum's CLI.

This file lives in the ``optimum.commands.register`` namespace package (no ``__init__.py``), where
``optimum-cli`` looks for ``REGISTER_COMMANDS``. It stays import-light: optimum_depth is imported only when run.
"""

from __future__ import annotations

import sys

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo


class DepthCommand(BaseOptimumCLICommand):
    """``optimum-cli depth COMMAND ...``: delegates to the ``optimum-depth`` parser."""

    COMMAND = CommandInfo(name="depth", help="Depth pruning with optimum-depth (score, prune, evaluate, ...).")

    @staticmethod
    def parse_args(parser):
        parser.add_argument("depth_args", nargs="...", help="Arguments of `optimum-depth` (see optimum-depth --help).")

    def run(self):
        from optimum_depth.cli import main

        code = main(self.args.depth_args or ["--help"])
        if code:
            sys.exit(code)


REGISTER_COMMANDS = [DepthCommand]
