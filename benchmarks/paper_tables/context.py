"""What every table runner shares: common options, the dense model, the recorded settings and the run loop.

A runner parses its own options on top of :func:`add_common_arguments`, opens a :class:`TableContext` (threads,
dense model and tokenizer, evaluation settings, the ``model``/``settings`` part of every record), lists its
:class:`~benchmarks.paper_tables.runner.PlannedRun` s and hands them to :meth:`TableContext.run`, which puts the
dense baseline first unless ``--skip-dense``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_depth.architectures import count_parameters
from optimum_depth.loading import DEFAULT_MODEL_ID, load_model_and_tokenizer

from .runner import (
    EvalSettings,
    PlannedRun,
    command_line,
    dense_run,
    machine_settings,
    run_all,
    set_threads,
    settings_dict,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
RESULTS_DIR = ROOT / "benchmarks" / "results" / "paper"


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds ``--skip-dense``, ``--results-dir``, ``--force`` and the :class:`EvalSettings` options."""
    parser.add_argument("--skip-dense", action="store_true", help="Do not run the dense baseline.")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--force", action="store_true", help="Recompute runs whose results file exists.")
    EvalSettings.add_arguments(parser)
    return parser


def calibration_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The recorded calibration settings from ``--calibration``, ``--num-samples``, ``--seq-len`` and ``--seed``."""
    return {"source": args.calibration, "num_samples": args.num_samples, "seq_len": args.seq_len, "seed": args.seed}


def model_info(model) -> dict[str, Any]:
    """What the results file records about the dense model."""
    return {
        "name": DEFAULT_MODEL_ID,
        "loaded_with": "optimum_depth.loading.load_model_and_tokenizer()",
        "num_blocks": int(model.config.num_hidden_layers),
        "num_parameters": count_parameters(model),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }


@dataclass
class TableContext:
    """One table's shared state.

    Attributes:
        table: Table key, e.g. ``"table1"``.
        module: The runner's module, recorded as its command.
        args: The parsed options (with :func:`add_common_arguments`).
        dense: The dense model in eval mode (runs prune copies of it).
        tokenizer: Its tokenizer.
        evaluation: How every model is evaluated.
        base: ``{"model": ..., "settings": ...}``, the part every record of the table shares.
    """

    table: str
    module: str
    args: argparse.Namespace
    dense: Any
    tokenizer: Any
    evaluation: EvalSettings
    base: dict[str, Any]

    @classmethod
    def start(cls, table: str, module: str, args: argparse.Namespace, settings: dict[str, Any]) -> TableContext:
        """Sets the threads, loads the dense model and records ``settings`` plus evaluation and machine settings."""
        threads = set_threads()
        evaluation = EvalSettings.from_args(args)
        dense, tokenizer = load_model_and_tokenizer()
        dense.eval()
        settings = {**settings, "evaluation": settings_dict(evaluation), "machine": machine_settings()}
        base = {"model": model_info(dense), "settings": settings}
        print(f"{table}: {base['model']['name']}, {threads} thread(s), settings {settings}", flush=True)
        return cls(table, module, args, dense, tokenizer, evaluation, base)

    def run(self, runs: list[PlannedRun]) -> list[str]:
        """Runs the dense baseline (unless ``--skip-dense``) and ``runs``; returns the run ids computed."""
        dense = PlannedRun(
            "dense", lambda: dense_run(self.table, self.dense, self.tokenizer, self.base, self.evaluation)
        )
        planned = runs if self.args.skip_dense else [dense, *runs]
        return run_all(
            self.table, planned, Path(self.args.results_dir), command_line(self.module), force=self.args.force
        )
