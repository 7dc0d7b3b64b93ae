"""Scoring every candidate with a registered criterion, packaged as :class:`LayerScores` (orchestration only).

One function per granularity: :func:`score_blocks` (every decoder block) and :func:`score_sublayers` (every attention
and MLP sublayer). They sit above the criteria registry and below the pruner; the engines the criteria run on
(:mod:`optimum_depth.blocks.engine`, :mod:`optimum_depth.sublayers.engine`) sit below both, so no folder imports a
folder that imports it back (``criterion="auto"`` scores and plans its candidates with these same functions).
"""

from __future__ import annotations

import logging

from torch import nn

from ..architectures import ModelFacts, as_facts, count_parameters
from ..calibration import CalibrationData
from ..config import DepthPruningConfig
from ..scores import LayerScores
from ..sublayers.candidates import list_sublayers, protected_sublayers, sublayer_num_params
from .base import ScoringContext, run_criterion

logger = logging.getLogger(__name__)

__all__ = ["score_blocks", "score_sublayers"]


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


def score_sublayers(
    model: nn.Module | ModelFacts, config: DepthPruningConfig, calibration: CalibrationData | None
) -> LayerScores:
    """Runs the sublayer criterion ``config.criterion`` and packages its result.

    Args:
        model: The model (possibly wrapped), or its resolved facts (checked with
            :func:`~optimum_depth.sublayers.planning.check_sublayer_target`).
        config: The pruning config.
        calibration: Calibration data.

    Returns:
        Scores with one candidate per sublayer (``sublayers`` gives the kinds, ``layer_indices`` the original blocks).
    """
    facts = as_facts(model)
    sublayers = list_sublayers(facts)
    protected = protected_sublayers(config, facts, sublayers)
    context = ScoringContext(
        model=facts.inner,
        config=config,
        calibration=calibration,
        num_to_remove=config.num_to_remove(len(sublayers)),
        protected=frozenset(protected),
    )
    result, elapsed = run_criterion(context)
    logger.info("Scored %d sublayers with %r in %.2fs.", len(sublayers), config.criterion, elapsed)
    return LayerScores(
        criterion=config.criterion,
        layer_indices=[s.original_block for s in sublayers],
        values=[float(v) for v in result.values],
        sublayers=[s.kind for s in sublayers],
        num_params=[sublayer_num_params(facts, s) for s in sublayers],
        total_params=count_parameters(facts.inner),
        protected=protected,
        removal_order=result.removal_order,
        calibration=dict(calibration.spec) if calibration is not None else {},
        elapsed_seconds=elapsed,
        extra=result.extra,
        source_num_hidden_layers=facts.source_num_layers,
        source_fingerprint=facts.fingerprint,
    )
