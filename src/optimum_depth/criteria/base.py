"""The interface every importance criterion implements, and the registry of criteria by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

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
        forward_only: Whether it only runs forward passes (so works on offloaded / quantized models).
    """

    name: str
    fn: Callable[[ScoringContext], CriterionResult]
    granularity: str = "block"
    needs_calibration: bool = True
    needs_gradients: bool = False
    forward_only: bool = True


CRITERIA: dict[str, Criterion] = {}
"""All criteria, by name."""


def register_criterion(criterion: Criterion) -> Criterion:
    """Adds a criterion to :data:`CRITERIA` (names are unique)."""
    if criterion.name in CRITERIA:
        raise ValueError(f"A criterion named {criterion.name!r} is already registered.")
    CRITERIA[criterion.name] = criterion
    return criterion


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
