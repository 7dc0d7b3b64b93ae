"""The ``optimum-depth`` command line (also ``optimum-cli depth``): one module per subcommand."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
