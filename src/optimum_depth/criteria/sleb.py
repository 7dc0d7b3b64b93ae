"""SLEB (Song et al., 2024): greedy block elimination, rescoring the pruned model after every removal."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..architectures import count_parameters, get_decoder_layers
from ..blocks.engine import BlockwiseEngine, progress_bar
from ..errors import PruningTargetError
from .base import Criterion, CriterionResult, ScoringContext, register_criterion, target_reached


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
    return limit  # parameter budget: stopped early by `target_reached`


def sleb_criterion(context: ScoringContext) -> CriterionResult:
    """Greedy elimination: each round removes the block whose removal gives the lowest calibration loss.

    SLEB (Song et al., 2024), Algorithm 1: for r = 1..n, for every remaining block b, measure the calibration
    loss (perplexity) of the current model without b; remove the argmin; repeat on the pruned model. Unlike the
    one-shot PPL criterion, the importance of a block is re-evaluated in the context of the earlier removals.

    ``removal_order`` gives the removed blocks, in order. ``values[i]`` is the calibration perplexity of the model
    without block ``i`` when ``i`` was last scored (its removal round for removed blocks, the last round for kept
    ones; protected blocks are never removed and are scored once, in the first round). Higher = more important.

    The :class:`BlockwiseEngine` keeps the states entering each block: a candidate costs only the blocks after it,
    and no prefix is ever recomputed. With ``config.early_exit`` (default) each round evaluates its candidates
    best-first (:func:`~optimum_depth.algorithms.best_first.best_first`): the summed NLL over the calibration batches only
    grows, so a candidate is evaluated only until a lower bound of its NLL exceeds the round winner's total (per
    batch: 0 before its blocks run, then a bound from a few LM-head rows, :mod:`optimum_depth.algorithms.head_bounds`, then
    the exact NLL). The winner (and
    so the removal order) is exactly the exhaustive round's; the values of candidates cut short are lower bounds
    (``extra["lower_bound_candidates"]``). Without it, every candidate runs on every batch and the winner's computed
    states become the next round's cache.

    Args:
        context: Model, calibration data, config, target and protection.

    Returns:
        Values, removal order and per-round details.
    """
    if context.calibration is None:
        raise ValueError("The 'sleb' criterion needs calibration data.")
    if context.config.aware_selection:
        return _compensation_aware(context)
    sizes = [count_parameters(block) for block in get_decoder_layers(context.model)]
    total = count_parameters(context.model)
    engine = BlockwiseEngine(context.model, context.calibration, batch_size=context.config.batch_size)
    rounds = _number_of_rounds(context, engine)
    engine.capture()
    dense = engine.dense_loss()
    state = _Rounds(context, engine)
    order: list[int] = []
    history = []
    round_ = state.best_first if context.config.early_exit else state.exhaustive
    for round_index in range(rounds):
        if target_reached(context, order, sizes, total):
            break
        positions = [
            p for p in range(engine.num_blocks) if round_index == 0 or engine.block_ids[p] not in context.protected
        ]
        desc = f"sleb: round {round_index + 1}/{rounds}"
        removed, nll = round_(positions, desc)
        order.append(removed)
        history.append({"removed": order[-1], "perplexity": math.exp(nll / engine.num_tokens)})
    if not target_reached(context, order, sizes, total):
        raise PruningTargetError(
            f"SLEB removed {len(order)} blocks without reaching target_num_params={context.config.target_num_params}."
        )
    extra = {
        "quantity": "calibration perplexity without the block, in the round it was last scored",
        "dense_perplexity": dense.perplexity,
        "rounds": history,
        "early_exit": context.config.early_exit,
        "lower_bound_candidates": sorted(state.lower),
        "block_forwards": engine.block_forwards,
        "head_forwards": engine.head_forwards,
        "bound_evaluations": engine.bound_evaluations,
    }
    return CriterionResult(values=[state.values[i] for i in range(len(sizes))], removal_order=order, extra=extra)


@dataclass
class _Rounds:
    """SLEB's rounds on one engine: what every round reads and updates (values, lower-bound blocks)."""

    context: ScoringContext
    engine: BlockwiseEngine
    values: dict[int, float] = field(default_factory=dict)
    lower: set[int] = field(default_factory=set)

    def removable(self, position: int) -> bool:
        return self.engine.block_ids[position] not in self.context.protected

    def any_removable(self, positions: list[int]) -> bool:
        return any(map(self.removable, positions))

    def exhaustive(self, positions: list[int], desc: str) -> tuple[int, float]:
        """Evaluates every candidate on every batch and removes the best; returns its original index and NLL."""
        engine, best = self.engine, None
        for position in progress_bar(positions, desc=desc):
            result = engine.removal_loss(position, keep_states=self.removable(position))
            self.values[engine.block_ids[position]] = result.perplexity
            if self.removable(position) and (best is None or result.nll < best.nll):
                best = result
        if best is None:
            raise PruningTargetError("SLEB found no removable block left.")
        removed = engine.block_ids[best.position]
        engine.commit_removal(best)
        return removed, best.nll

    def best_first(self, positions: list[int], desc: str) -> tuple[int, float]:
        """Best-first round (candidates stop once they cannot win); returns the winner's original index and NLL."""
        engine = self.engine
        outcome = engine.best_first_removals(positions, self.any_removable, desc)
        winners = [p for p in outcome.completed if self.removable(p)]
        if not winners:
            raise PruningTargetError("SLEB found no removable block left.")
        for position in positions:
            block = engine.block_ids[position]
            self.values[block] = math.exp(outcome.sums[position] / engine.num_tokens)
            if position in outcome.lower_bounds:
                self.lower.add(block)
            else:
                self.lower.discard(block)
        removed = engine.block_ids[winners[0]]
        engine.commit_removal(winners[0])  # recomputes the winner's suffix (its states were not kept)
        return removed, outcome.sums[winners[0]]


SLEB = register_criterion(Criterion("sleb", sleb_criterion, needs_calibration=True))


def _compensation_aware(context: ScoringContext) -> CriterionResult:
    """SLEB's rounds with each candidate scored after its own fitted compensation map (see
    :mod:`optimum_depth.compensation.selection`); protected blocks get the highest value."""
    from ..architectures import as_facts, count_parameters
    from ..compensation.selection import aware_greedy_selection

    facts = as_facts(context.model)
    sizes = [count_parameters(block) for block in facts.layers]
    total = count_parameters(context.model)
    removable = [b for b in range(len(sizes)) if b not in context.protected]
    rounds = context.num_to_remove if context.num_to_remove is not None else min(len(removable), len(sizes) - 1)
    assert context.config.compensation is not None  # aware_selection implies it
    result = aware_greedy_selection(
        facts,
        context.calibration,  # type: ignore[arg-type]  # checked by the caller
        context.config.compensation,
        rounds,
        context.protected,
        enough=lambda order: target_reached(context, order, sizes, total),
    )
    if not target_reached(context, result.removal_order, sizes, total):
        raise PruningTargetError("Compensation-aware SLEB removed every candidate without reaching the target.")
    highest = max(result.values.values())
    extra = {
        "quantity": "scoring perplexity without the block and with its cut's fitted map, when last scored",
        "selection": "compensation-aware",
        "dense_perplexity": result.dense_perplexity,
        "rounds": result.rounds,
    }
    values = [result.values.get(i, highest) for i in range(len(sizes))]
    return CriterionResult(values=values, removal_order=result.removal_order, extra=extra)
