"""Scoring every decoder block with a registered criterion, packaged as :class:`LayerScores` (orchestration only)."""

from __future__ import annotations

import logging

from torch import nn

from ..architectures import ModelFacts, as_facts, count_parameters
from ..calibration import CalibrationData
from ..config import DepthPruningConfig
from ..criteria import ScoringContext, run_criterion
from ..scores import LayerScores

logger = logging.getLogger(__name__)

__all__ = ["score_blocks"]


def score_blocks(
    model: nn.Module | ModelFacts, config: DepthPruningConfig, calibration: CalibrationData | None
) -> LayerScores:
    """Scores every decoder block of a model with ``config.criterion``.

    Args:
        model: The model (possibly wrapped by peft/DDP), or its resolved facts.
        config: The pruning config.
        calibration: Calibration data (required by data-driven criteria).

    Returns:
        The scores, in the model's current block order, labelled with original indices.
    """
    facts = as_facts(model)
    protected = config.protected_blocks(facts.num_layers, facts.original_indices)
    context = ScoringContext(
        model=facts.inner,
        config=config,
        calibration=calibration,
        num_to_remove=config.num_to_remove(facts.num_layers),
        protected=frozenset(protected),
    )
    result, elapsed = run_criterion(context)
    logger.info("Scored %d blocks with %r in %.2fs.", facts.num_layers, config.criterion, elapsed)
    return LayerScores(
        criterion=config.criterion,
        layer_indices=list(facts.original_indices),
        values=[float(v) for v in result.values],
        num_params=[count_parameters(block) for block in facts.layers],
        total_params=count_parameters(facts.inner),
        protected=protected,
        removal_order=result.removal_order,
        calibration=dict(calibration.spec) if calibration is not None else {},
        elapsed_seconds=elapsed,
        extra=result.extra,
        source_num_hidden_layers=facts.source_num_layers,
        source_fingerprint=facts.fingerprint,
    )
