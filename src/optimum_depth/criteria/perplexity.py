"""PPL criterion (Shortened LLaMA): a block matters as much as the calibration perplexity rises without it."""

from __future__ import annotations

import math

from ..architectures import count_parameters, get_decoder_layers
from ..blocks.engine import BlockwiseEngine, progress_bar
from .base import Criterion, CriterionResult, ScoringContext, register_criterion, target_reached


def perplexity_criterion(context: ScoringContext) -> CriterionResult:
    """Scores each block by the calibration perplexity of the model with that block alone removed.

    Shortened LLaMA (Kim et al., 2024), "PPL": I(block n) = exp(-1/K sum_k log p_{M \\ n}(x_k | x_{<k})), the
    perplexity of the model M without block n on the calibration tokens. Removing an unimportant block barely changes
    the perplexity, so the lowest perplexity is the least important block (higher value = more important).

    With the :class:`BlockwiseEngine` the blocks before the candidate are never recomputed: candidate ``n`` costs
    ``L - 1 - n`` block forwards per batch instead of ``L - 1``.

    With ``config.early_exit`` (default) the blocks are evaluated best-first (:func:`~optimum_depth.algorithms.best_first.
    best_first`): the summed NLL over the calibration batches only grows, so once the blocks the target removes
    are known exactly, every other block is evaluated only until a lower bound of its NLL exceeds theirs. The
    bound of a batch whose blocks have run comes from a few rows of the LM head (the dense model's most likely
    tokens, :mod:`optimum_depth.algorithms.head_bounds`), so most candidates never need the full head. The blocks the
    target removes and their values are exactly those of a full evaluation; the other blocks' values are lower
    bounds (``extra["lower_bound_candidates"]``). ``early_exit=False`` scores every block on every batch.

    Args:
        context: Model, calibration data, config (``batch_size``, ``early_exit``), target and protection.

    Returns:
        The perplexity per block; ``extra`` holds the dense perplexity and the forward counts.
    """
    if context.calibration is None:
        raise ValueError("The 'ppl' criterion needs calibration data.")
    engine = BlockwiseEngine(context.model, context.calibration, batch_size=context.config.batch_size)
    engine.capture()
    dense = engine.dense_loss()
    positions = list(range(engine.num_blocks))
    lower: list[int] = []
    if context.config.early_exit:
        nlls, lower = _best_first_nlls(context, engine, positions)
        values = [math.exp(nlls[p] / engine.num_tokens) for p in positions]
    else:
        values = [
            engine.removal_loss(position).perplexity
            for position in progress_bar(positions, desc="ppl: scoring blocks")
        ]
    extra = {
        "quantity": "calibration perplexity without the block",
        "dense_perplexity": dense.perplexity,
        "early_exit": context.config.early_exit,
        "lower_bound_candidates": lower,
        "block_forwards": engine.block_forwards,
        "head_forwards": engine.head_forwards,
        "bound_evaluations": engine.bound_evaluations,
    }
    return CriterionResult(values=values, extra=extra)


def _best_first_nlls(
    context: ScoringContext, engine: BlockwiseEngine, positions: list[int]
) -> tuple[dict[int, float], list[int]]:
    """Summed NLL per block (partial for the blocks ruled out), completing the target's blocks exactly."""
    sizes = [count_parameters(block) for block in get_decoder_layers(context.model)]
    total = count_parameters(context.model)

    def enough(completed: list[int]) -> bool:
        chosen = [p for p in completed if p not in context.protected]
        return target_reached(context, chosen, sizes, total)

    outcome = engine.best_first_removals(positions, enough, desc="ppl: scoring blocks (best-first)")
    engine.release_pending()
    return outcome.sums, outcome.lower_bounds


PPL = register_criterion(Criterion("ppl", perplexity_criterion, needs_calibration=True))
