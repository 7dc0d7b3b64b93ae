"""SLEB (Song et al., 2024): greedy block elimination, rescoring the pruned model after every removal."""

from __future__ import annotations

from ..architectures import get_decoder_layers
from ..config import PruningTargetError
from ..engine import BlockwiseEngine, RemovalResult, progress_bar
from .base import Criterion, CriterionResult, ScoringContext, register_criterion


def _number_of_rounds(context: ScoringContext, engine: BlockwiseEngine) -> int:
    """Rounds the target asks for (a block count, or the fewest greedy removals meeting a parameter budget)."""
    removable = [p for p in range(engine.num_blocks) if p not in context.protected]
    limit = min(len(removable), engine.num_blocks - 1)
    if context.num_to_remove is not None:
        if context.num_to_remove > limit:
            raise PruningTargetError(
                f"SLEB cannot remove {context.num_to_remove} blocks: only {limit} of {engine.num_blocks} are removable."
            )
        return context.num_to_remove
    return limit  # parameter budget: stopped early by `_budget_met`


def _budget_met(context: ScoringContext, removed: list[int], sizes: list[int], total: int) -> bool:
    if context.num_to_remove is not None:
        return len(removed) >= context.num_to_remove
    return total - sum(sizes[i] for i in removed) <= int(context.config.target_num_params or 0)


def sleb_criterion(context: ScoringContext) -> CriterionResult:
    """Greedy elimination: each round removes the block whose removal gives the lowest calibration loss.

    SLEB (Song et al., 2024), Algorithm 1: for r = 1..n, for every remaining block b, measure the calibration
    loss (perplexity) of the current model without b; remove the argmin; repeat on the pruned model. Unlike the
    one-shot PPL criterion, the importance of a block is re-evaluated in the context of the earlier removals.

    ``removal_order`` gives the removed blocks, in order. ``values[i]`` is the calibration perplexity of the model
    without block ``i`` when ``i`` was last scored (its removal round for removed blocks, the last round for kept
    ones; protected blocks are never removed and are scored once, in the first round). Higher = more important.

    The :class:`BlockwiseEngine` keeps the states entering each block: a candidate costs only the blocks after it,
    and the winning candidate's computed states become the next round's cache, so no prefix is ever recomputed.

    Args:
        context: Model, calibration data, config, target and protection.

    Returns:
        Values, removal order and per-round details.
    """
    from ..scoring import count_parameters  # scoring imports the criteria registry

    if context.calibration is None:
        raise ValueError("The 'sleb' criterion needs calibration data.")
    sizes = [count_parameters(block) for block in get_decoder_layers(context.model)]
    total = count_parameters(context.model)
    engine = BlockwiseEngine(context.model, context.calibration, batch_size=context.config.batch_size)
    rounds = _number_of_rounds(context, engine)
    engine.capture()
    dense = engine.dense_loss()
    values: dict[int, float] = {}
    order: list[int] = []
    history = []
    for round_index in range(rounds):
        if _budget_met(context, order, sizes, total):
            break
        best: RemovalResult | None = None
        positions = [
            p for p in range(engine.num_blocks) if round_index == 0 or engine.block_ids[p] not in context.protected
        ]
        for position in progress_bar(positions, desc=f"sleb: round {round_index + 1}/{rounds}"):
            is_candidate = engine.block_ids[position] not in context.protected
            result = engine.removal_loss(position, keep_states=is_candidate)
            values[engine.block_ids[position]] = result.perplexity
            if is_candidate and (best is None or result.nll < best.nll):
                best = result
        if best is None:
            raise PruningTargetError("SLEB found no removable block left.")
        order.append(engine.block_ids[best.position])
        history.append({"removed": order[-1], "perplexity": best.perplexity})
        engine.commit_removal(best)
    if not _budget_met(context, order, sizes, total):
        raise PruningTargetError(
            f"SLEB removed {len(order)} blocks without reaching target_num_params={context.config.target_num_params}."
        )
    extra = {
        "quantity": "calibration perplexity without the block, in the round it was last scored",
        "dense_perplexity": dense.perplexity,
        "rounds": history,
        "block_forwards": engine.block_forwards,
        "head_forwards": engine.head_forwards,
    }
    return CriterionResult(values=[values[i] for i in range(len(sizes))], removal_order=order, extra=extra)


SLEB = register_criterion(Criterion("sleb", sleb_criterion, needs_calibration=True, forward_only=True))
