"""Importance criteria, registered by name in :data:`CRITERIA` (one module per family of criteria).

The criteria run on the engines of :mod:`optimum_depth.blocks` and :mod:`optimum_depth.sublayers`; :mod:`.scoring`
runs a registered criterion over every block or sublayer and packages :class:`~optimum_depth.LayerScores`.
"""

from __future__ import annotations

from . import (  # noqa: F401  (importing a criterion module registers its criteria)
    auto,
    finercut,
    magnitude,
    perplexity,
    similarity,
    sleb,
    taylor,
)
from .base import (
    CRITERIA,
    Criterion,
    CriterionResult,
    ScoringContext,
    check_calibration,
    register_criterion,
    run_criterion,
)
from .scoring import score_blocks, score_sublayers

__all__ = [
    "CRITERIA",
    "Criterion",
    "CriterionResult",
    "ScoringContext",
    "available_criteria",
    "check_calibration",
    "register_criterion",
    "run_criterion",
    "score_blocks",
    "score_sublayers",
]


def available_criteria(granularity: str = "block") -> dict[str, Criterion]:
    """Criteria available for a granularity (``"block"`` or ``"sublayer"``), by name."""
    return {name: c for name, c in CRITERIA.items() if c.granularity == granularity}
