"""Runs a registered criterion on a model and packages the result as :class:`LayerScores` (orchestration only)."""

from __future__ import annotations

import logging
import time
from typing import Protocol

import torch

from .architectures import get_decoder_layers, unwrap_model
from .calibration import CalibrationData, prepare_calibration
from .config import DepthPruningConfig
from .criteria import CRITERIA, CriterionResult, ScoringContext
from .provenance import original_layer_indices
from .scores import LayerScores

logger = logging.getLogger(__name__)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of a module (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for param in module.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


class CalibrationSettings(Protocol):
    """The sampling fields shared by :class:`DepthPruningConfig` and ``SparsityConfig``."""

    calibration_dataset: str | None
    num_samples: int
    seq_len: int
    seed: int


def resolve_calibration(
    config: CalibrationSettings, model, calibration=None, tokenizer=None
) -> CalibrationData | None:
    """Builds the calibration data a criterion (or a sparsity method) needs from the config's sampling settings.

    Args:
        config: Sampling settings (``calibration_dataset``, ``num_samples``, ``seq_len``, ``seed``).
        model: The model (for self-generated calibration and vocabulary checks).
        calibration: Any source accepted by :func:`prepare_calibration`; ``None`` uses ``config.calibration_dataset``.
        tokenizer: Tokenizer for text sources.

    Returns:
        The calibration data, or ``None`` when no source was given.
    """
    source = calibration if calibration is not None else config.calibration_dataset
    if source is None:
        return None
    return prepare_calibration(
        source,
        tokenizer,
        model=unwrap_model(model),
        num_samples=config.num_samples,
        seq_len=config.seq_len,
        seed=config.seed,
    )


def check_calibration(config: DepthPruningConfig, calibration: CalibrationData | None) -> None:
    """Raises a ``ValueError`` if ``config.criterion`` needs calibration data and ``calibration`` is ``None``."""
    if CRITERIA[config.criterion].needs_calibration and calibration is None:
        raise ValueError(
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


def score_blocks(
    model: torch.nn.Module,
    config: DepthPruningConfig,
    calibration: CalibrationData | None = None,
) -> LayerScores:
    """Scores every decoder block of ``model`` with ``config.criterion``.

    Args:
        model: The model, possibly wrapped by peft/DDP.
        config: The pruning config.
        calibration: Calibration data (required by data-driven criteria).

    Returns:
        The scores, in the model's current block order, labelled with original indices.
    """
    check_calibration(config, calibration)
    inner = unwrap_model(model)
    layers = get_decoder_layers(model)
    original = original_layer_indices(inner.config)
    protected = config.protected_blocks(len(layers), original)
    context = ScoringContext(
        model=inner,
        config=config,
        calibration=calibration,
        num_to_remove=config.num_to_remove(len(layers)),
        protected=frozenset(protected),
    )
    result, elapsed = run_criterion(context)
    logger.info("Scored %d blocks with %r in %.2fs.", len(layers), config.criterion, elapsed)
    return LayerScores(
        criterion=config.criterion,
        layer_indices=original,
        values=[float(v) for v in result.values],
        num_params=[count_parameters(block) for block in layers],
        total_params=count_parameters(inner),
        protected=protected,
        removal_order=result.removal_order,
        calibration=dict(calibration.spec) if calibration is not None else {},
        elapsed_seconds=elapsed,
        extra=result.extra,
    )
