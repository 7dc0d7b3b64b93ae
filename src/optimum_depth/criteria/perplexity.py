"""PPL criterion (Shortened LLaMA): a block matters as much as the calibration perplexity rises without it."""

from __future__ import annotations

from ..engine import BlockwiseEngine, progress_bar
from .base import Criterion, CriterionResult, ScoringContext, register_criterion


def perplexity_criterion(context: ScoringContext) -> CriterionResult:
    """Scores each block by the calibration perplexity of the model with that block alone removed.

    Shortened LLaMA (Kim et al., 2024), "PPL": I(block n) = exp(-1/K sum_k log p_{M \\ n}(x_k | x_{<k})), the
    perplexity of the model M without block n on the calibration tokens. Removing an unimportant block barely changes
    the perplexity, so the lowest perplexity is the least important block (higher value = more important).

    Every block is scored (protected ones too, so the chart is complete). With the :class:`BlockwiseEngine` the
    blocks before the candidate are never recomputed: candidate ``n`` costs ``L - 1 - n`` block forwards per batch
    instead of ``L - 1``.

    Args:
        context: Model, calibration data and config (``batch_size``).

    Returns:
        The perplexity per block; ``extra`` holds the dense perplexity and the forward counts.
    """
    if context.calibration is None:
        raise ValueError("The 'ppl' criterion needs calibration data.")
    engine = BlockwiseEngine(context.model, context.calibration, batch_size=context.config.batch_size)
    engine.capture()
    dense = engine.dense_loss()
    values = [
        engine.removal_loss(position).perplexity
        for position in progress_bar(range(engine.num_blocks), desc="ppl: scoring blocks")
    ]
    extra = {
        "quantity": "calibration perplexity without the block",
        "dense_perplexity": dense.perplexity,
        "block_forwards": engine.block_forwards,
        "head_forwards": engine.head_forwards,
    }
    return CriterionResult(values=values, extra=extra)


PPL = register_criterion(Criterion("ppl", perplexity_criterion, needs_calibration=True, forward_only=True))
