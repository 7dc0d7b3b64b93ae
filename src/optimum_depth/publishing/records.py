"""Reading back what :func:`~optimum_depth.publishing.saving.save_pruned_model` wrote beside a checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DepthPruningConfig
from ..constants import CONFIG_NAME, MODEL_CONFIG_NAME, PLAN_NAME, PLOT_NAME, RESULTS_NAME, SCORES_NAME
from ..errors import DataNotFoundError
from ..evaluation.results import ComparisonResults, EvaluationResults, load_results
from ..plan import PruningPlan
from ..scores import LayerScores
from .replacement import recover_interrupted_saves

__all__ = ["CheckpointRecords", "read_checkpoint_records"]


@dataclass
class CheckpointRecords:
    """The records found in a checkpoint folder (``None`` for those absent).

    Args:
        folder: The checkpoint folder.
        plan: ``pruning_plan.json``.
        scores: ``layer_scores.json``.
        config: ``depth_pruning_config.json``.
        results: ``evaluation_results.json`` (or the results file given explicitly).
        plot_file: ``"layer_scores.png"`` when the folder has the plot.
    """

    folder: Path
    plan: PruningPlan | None = None
    scores: LayerScores | None = None
    config: DepthPruningConfig | None = None
    results: EvaluationResults | ComparisonResults | None = None
    plot_file: str | None = None


def read_checkpoint_records(
    checkpoint: str | os.PathLike, results_path: str | os.PathLike | None = None
) -> CheckpointRecords:
    """Reads the pruning records of a checkpoint folder.

    Args:
        checkpoint: A folder written by ``save_pruned_model`` (or ``optimum-depth prune``).
        results_path: An ``evaluation_results.json`` elsewhere, used instead of the folder's.

    Returns:
        The records present.

    Raises:
        DataNotFoundError: If the folder has no ``config.json``, or ``results_path`` does not exist.
        DataError: If a record file is not valid.
    """
    folder = Path(checkpoint).expanduser()
    if folder.is_dir():
        recover_interrupted_saves(folder)
    if not (folder / MODEL_CONFIG_NAME).is_file():
        raise DataNotFoundError(f"{str(folder)!r} is not a checkpoint folder (no {MODEL_CONFIG_NAME}).")
    if results_path is not None and not Path(results_path).is_file():
        raise DataNotFoundError(f"Results file {os.fspath(results_path)!r} does not exist.")

    def present(name: str, reader: Any) -> Any:
        return reader(folder / name) if (folder / name).is_file() else None

    results_file = Path(results_path) if results_path is not None else folder / RESULTS_NAME
    return CheckpointRecords(
        folder=folder,
        plan=present(PLAN_NAME, PruningPlan.from_pretrained),
        scores=present(SCORES_NAME, LayerScores.from_pretrained),
        config=present(CONFIG_NAME, DepthPruningConfig.from_pretrained),
        results=load_results(results_file) if results_file.is_file() else None,
        plot_file=PLOT_NAME if (folder / PLOT_NAME).is_file() else None,
    )
