"""``optimum-depth benchmark``: generation latency (Shortened LLaMA protocol), dense vs pruned side by side."""

from __future__ import annotations

import argparse

from . import evaluate

NAME = "benchmark"
HELP = "Latency/throughput of generate() with forced output length; dense vs pruned with --dense-model."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options (those of ``evaluate``, latency only by default: batch sizes 1 and 8)."""
    evaluate.add_measurement_arguments(parser, perplexity=[], latency_batch_sizes=[1, 8])


def run(args: argparse.Namespace) -> int:
    """Measures latency and writes the results like ``evaluate``."""
    return evaluate.run(args)
