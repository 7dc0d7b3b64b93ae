"""The interface every importance criterion implements, and the registry of criteria by name."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config import CRITERIA_BY_GRANULARITY
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..calibration import CalibrationData
    from ..config import DepthPruningConfig


@dataclass
class ScoringContext:
    """What a criterion gets to compute its scores.

    Args:
        model: The unwrapped causal LM (in eval mode unless the criterion needs gradients).
        config: The pruning config (criterion options, seed, batch size).
        calibration: Calibration batches, or ``None`` for data-free criteria.
        num_to_remove: How many candidates the target removes (greedy criteria stop there); ``None`` for a
            parameter-count target.
        protected: Candidate positions that may not be removed.
    """

    model: nn.Module
    config: DepthPruningConfig
    calibration: CalibrationData | None
    num_to_remove: int | None
    protected: frozenset[int]


@dataclass
class CriterionResult:
    """Output of a criterion.

    Args:
        values: Importance per candidate (higher = more important).
        removal_order: For greedy criteria, candidate positions in removal order.
        extra: Criterion-specific details recorded in ``LayerScores.extra``.
    """

    values: list[float]
    removal_order: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Criterion:
    """A registered criterion.

    Args:
        name: Registry name (``DepthPruningConfig.criterion``).
        fn: The scoring function.
        granularity: ``"block"`` or ``"sublayer"``.
        needs_calibration: Whether it needs calibration data.
        needs_gradients: Whether it runs backward passes.
    """

    name: str
    fn: Callable[[ScoringContext], CriterionResult]
    granularity: str = "block"
    needs_calibration: bool = True
    needs_gradients: bool = False


CRITERIA: dict[str, Criterion] = {}
"""All criteria, by name."""


def register_criterion(criterion: Criterion) -> Criterion:
    """Adds a criterion to :data:`CRITERIA`; its name must be one of the config's catalog for its granularity.

    Raises:
        ValueError: If the name is already registered or not in
            :data:`optimum_depth.config.CRITERIA_BY_GRANULARITY`.
    """
    if criterion.name in CRITERIA:
        raise ValueError(f"A criterion named {criterion.name!r} is already registered.")
    if criterion.name not in CRITERIA_BY_GRANULARITY.get(criterion.granularity, ()):
        raise ValueError(
            f"Criterion {criterion.name!r} ({criterion.granularity}) is not in CRITERIA_BY_GRANULARITY; add it there so "
            "DepthPruningConfig accepts it."
        )
    CRITERIA[criterion.name] = criterion
    return criterion


def check_calibration(config: DepthPruningConfig, calibration: CalibrationData | None) -> None:
    """Raises a ``ConfigError`` if ``config.criterion`` needs calibration data and ``calibration`` is ``None``."""
    if CRITERIA[config.criterion].needs_calibration and calibration is None:
        raise ConfigError(
            f"The {config.criterion!r} criterion needs calibration data: pass `calibration=` (texts, a file, a "
            "dataset, token ids or 'self') or set `calibration_dataset` in the config."
        )


def run_criterion(context: ScoringContext) -> tuple[CriterionResult, float]:
    """Runs ``context.config.criterion`` on ``context.model`` in eval mode (restored after), timed.

    Gradients are enabled only for criteria that need them.

    Args:
        context: What the criterion sees (model, config, calibration, target, protected candidates).

    Returns:
        The criterion's result and the elapsed wall time in seconds.
    """
    check_calibration(context.config, context.calibration)
    criterion = CRITERIA[context.config.criterion]
    model = context.model
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.set_grad_enabled(criterion.needs_gradients):
            result = criterion.fn(context)
    finally:
        model.train(was_training)
    return result, time.perf_counter() - start


def target_reached(context: ScoringContext, chosen: list[int], sizes: list[int], total: int) -> bool:
    """Whether removing the candidates ``chosen`` meets the context's target.

    Args:
        context: Gives the target: ``num_to_remove``, or the config's ``target_num_params``.
        chosen: Candidate positions to remove.
        sizes: Parameters of each candidate.
        total: Parameters of the whole model.
    """
    if context.num_to_remove is not None:
        return len(chosen) >= context.num_to_remove
    return total - sum(sizes[i] for i in chosen) <= int(context.config.target_num_params or 0)
