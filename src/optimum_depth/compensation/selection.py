"""Compensation-aware block selection: SLEB's greedy rounds, every candidate scored *after* its own fitted map.

Plain criteria choose the blocks as if nothing would repair the cut, then the maps are fitted. Here, each round of
greedy elimination evaluates "the current model without block ``b``, with the map of the cut ``b`` joins refitted",
and removes the block with the lowest calibration loss. Blocks whose removal a linear map repairs well (typically
long runs in the middle of the model) are then preferred over blocks that are individually cheap to drop.

Cost, per round: one least-squares map per distinct cut (hidden x hidden statistics of one block's MLP output, cached
across rounds) and, per candidate, a forward of the blocks from the cut to the end on the scoring sequences (as SLEB,
which runs the blocks after the candidate). The first round scores every block; later rounds rescore the
``selection_candidates`` blocks with the best latest scores plus the blocks next to a cut (lazy greedy: a removal
rarely makes a far-away block cheaper to drop), the others keeping their latest score. The maps of the selection are fitted on dense hidden states
("independent" maps: each cut assumes the earlier ones are repaired exactly); the final maps are then fitted
sequentially by :func:`~optimum_depth.compensation.fit_compensation` as for any plan.

Memory: the dense hidden states entering every block on ``selection_samples`` calibration sequences
(``(num_blocks + 1) x samples x seq_len x hidden`` values; 1.2 GiB for SmolLM2-135M with 128 x 128 tokens in float32).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..architectures import ModelFacts
from ..blocks.engine import BlockwiseEngine, progress_bar
from ..blocks.replay import capture_block_inputs, run_block
from ..calibration import CalibrationData
from ..compensation_config import CompensationConfig
from ..errors import PruningTargetError
from .cuts import Fold, plan_folds
from .sites import fold_site
from .walk import fit_map, run_capturing_mlp

logger = logging.getLogger(__name__)

__all__ = ["AwareSelection", "MapBank", "SuffixScorer", "aware_greedy_selection", "dense_states"]


@dataclass
class AwareSelection:
    """The outcome of :func:`aware_greedy_selection`.

    Args:
        removal_order: Removed original blocks, in the order they were chosen.
        values: Per block, the scoring perplexity of the model without it (with its map) when last scored.
        rounds: Per round: the removed block, the perplexity after it, and the cuts' ridges.
        dense_perplexity: Scoring perplexity of the dense model.
        maps: The independent maps fitted during the search, by ``(fold block, target, first removed block)``.
        scoring_samples: The calibration sequences (the last ones used) that scored the candidates.
    """

    removal_order: list[int]
    values: dict[int, float]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    dense_perplexity: float = float("nan")
    maps: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    scoring_samples: int = 0


class MapBank:
    """Independent least-squares maps ``T(fold)`` fitted on dense states, cached by ``(block, target, start)``."""

    def __init__(self, states: list[torch.Tensor], facts: ModelFacts, kwargs, heldout: int, batch_size: int):
        self.states, self.facts, self.kwargs = states, facts, kwargs
        self.heldout, self.batch_size = heldout, batch_size
        self.maps: dict[tuple[int, int, int], torch.Tensor] = {}
        self.ridges: dict[tuple[int, int, int], float | None] = {}

    @staticmethod
    def key(fold: Fold) -> tuple[int, int, int]:
        return fold.block, fold.target, min(fold.removed)

    def transform(self, fold: Fold) -> torch.Tensor:
        key = self.key(fold)
        if key not in self.maps:
            block = self.facts.layers[fold.block]
            site = fold_site(block, self.facts)
            entering = self.states[min(fold.block, min(fold.removed))]  # a run at block 0 folds after itself
            y, m = run_capturing_mlp(block, site.module, entering, self.kwargs[fold.block], self.batch_size)
            target = self.states[fold.target + 1]
            fitted = fit_map(fold, m, y, target, "linear_ls", None, self.heldout, self.batch_size, site.structure)
            self.maps[key], self.ridges[key] = fitted.transform, fitted.relative_ridge
        return self.maps[key]


class SuffixScorer:
    """Scoring loss of a removal set with its maps, restarting from the current model's cached states."""

    def __init__(self, facts: ModelFacts, engine: BlockwiseEngine | None, states, kwargs, input_ids, batch_size: int):
        self.facts, self.engine, self.kwargs = facts, engine, kwargs
        self.input_ids, self.batch_size = input_ids, batch_size
        self.current: dict[int, torch.Tensor] = dict(enumerate(states))  # state entering each block (current model)

    def run(self, start: int, removed: set[int], folds: dict[int, tuple[Fold, torch.Tensor]], keep: bool) -> float:
        """Mean NLL of the model without ``removed`` (maps ``folds``), running from block ``start``."""
        return self.mean_nll(self.final_state(start, removed, folds, keep))

    def final_state(
        self, start: int, removed: set[int], folds: dict[int, tuple[Fold, torch.Tensor]], keep: bool = False
    ) -> torch.Tensor:
        """The last block's output of the model without ``removed`` (maps ``folds``), running from block ``start``;
        with ``keep``, the states entering the blocks it ran become the current model's."""
        hidden = self.current[start]
        kept_states: dict[int, torch.Tensor] = {}
        for index in range(start, len(self.facts.layers)):
            if index in removed:
                continue
            if keep:
                kept_states[index] = hidden
            block = self.facts.layers[index]
            if index in folds:
                site = fold_site(block, self.facts)
                y, m = run_capturing_mlp(block, site.module, hidden, self.kwargs[index], self.batch_size)
                hidden = y + (m.double() @ folds[index][1]).to(m.dtype)
            else:
                hidden = run_block(block, hidden, self.kwargs[index], self.batch_size)
        if keep:
            self.current.update(kept_states)
        return hidden

    def mean_nll(self, hidden: torch.Tensor) -> float:
        """Mean next-token NLL of the scoring sequences from the last block's output ``hidden``."""
        if self.engine is None:
            raise ValueError("This scorer has no engine to compute the loss with.")
        total, count = 0.0, 0
        for begin in range(0, hidden.shape[0], self.batch_size):
            nll, tokens = self.engine.sequence_nll(
                hidden[begin : begin + self.batch_size], self.input_ids[begin : begin + self.batch_size]
            )
            total, count = total + nll, count + tokens
        return total / count


def dense_states(
    facts: ModelFacts, hidden: torch.Tensor, kwargs, batch_size: int, desc: str = "compensation-aware: dense states"
) -> list[torch.Tensor]:
    """The dense hidden state entering every block and leaving the last one (``num_blocks + 1`` tensors).

    Args:
        facts: The model.
        hidden: The states entering block 0, ``(samples, seq_len, hidden)``.
        kwargs: Every block's call arguments, by position.
        batch_size: Sequences per block call.
        desc: Progress-bar label.
    """
    states = [hidden]
    for index, block in enumerate(progress_bar(facts.layers, desc=desc)):
        states.append(run_block(block, states[-1], kwargs[index], batch_size))
    return states


def _first_changed(old: dict[int, tuple[Fold, torch.Tensor]], new: dict[int, tuple[Fold, torch.Tensor]], b: int):
    """The first block whose input or computation differs between the current model and the trial removing ``b``."""
    folds_changed = {k for k in old.keys() | new.keys() if (old.get(k) or (None,))[0] != (new.get(k) or (None,))[0]}
    return min({b} | folds_changed)


def _to_rescore(remaining: list[int], removed: list[int], values: dict[int, float], settings) -> list[int]:
    """Lazy greedy: the first round scores every block; later ones the best latest scores and the cuts' neighbours."""
    if not removed or settings.selection_candidates == 0:
        return remaining
    best = sorted(remaining, key=lambda b: values[b])[: settings.selection_candidates]
    neighbours = {b + step for b in removed for step in (-1, 1)}
    return sorted(set(best) | (neighbours & set(remaining)))


@torch.no_grad()
def aware_greedy_selection(
    facts: ModelFacts,
    data: CalibrationData,
    settings: CompensationConfig,
    num_to_remove: int,
    protected: set[int] | frozenset[int],
    enough: Callable[[list[int]], bool] | None = None,
) -> AwareSelection:
    """Chooses ``num_to_remove`` blocks greedily, scoring each candidate after its own fitted map.

    Args:
        facts: The dense model (nothing is modified).
        data: Calibration sequences; the first ``settings.selection_samples`` are used, the last
            ``heldout_fraction`` of them choose each map's ridge and score the candidates.
        settings: The compensation settings.
        num_to_remove: Blocks to remove (at most, with ``enough``).
        protected: Original block indices never removed.
        enough: Given the removal order so far, whether to stop before the next round (a parameter budget).

    Returns:
        The removal order and per-round details.

    Raises:
        PruningTargetError: If fewer than ``num_to_remove`` blocks are removable.
    """
    num_blocks = len(facts.layers)
    candidates = [b for b in range(num_blocks) if b not in protected]
    if num_to_remove > min(len(candidates), num_blocks - 1):
        raise PruningTargetError(
            f"Cannot remove {num_to_remove} blocks: {len(candidates)} of {num_blocks} are removable."
        )
    input_ids = data.input_ids[: settings.selection_samples]
    heldout = min(input_ids.shape[0] - 1, max(1, round(settings.heldout_fraction * input_ids.shape[0])))
    captured = capture_block_inputs(facts.inner, input_ids, settings.batch_size)
    states = dense_states(facts, captured.hidden_states, captured.block_kwargs, settings.batch_size)
    bank = MapBank(states, facts, captured.block_kwargs, heldout, settings.batch_size)
    score_ids = input_ids[-heldout:]
    engine = BlockwiseEngine(facts.inner, CalibrationData(score_ids, {}), batch_size=settings.batch_size)
    scorer = SuffixScorer(
        facts, engine, [s[-heldout:] for s in states], captured.block_kwargs, score_ids, settings.batch_size
    )
    dense_nll = scorer.mean_nll(states[-1][-heldout:])
    removed: list[int] = []
    current: dict[int, tuple[Fold, torch.Tensor]] = {}
    values: dict[int, float] = {}
    rounds: list[dict[str, Any]] = []
    for round_index in range(num_to_remove):
        if enough is not None and enough(removed):
            break
        best: tuple[float, int, dict[int, tuple[Fold, torch.Tensor]]] | None = None
        remaining = _to_rescore([b for b in candidates if b not in removed], removed, values, settings)
        for b in progress_bar(remaining, desc=f"compensation-aware: round {round_index + 1}/{num_to_remove}"):
            trial = sorted([*removed, b])
            folds = {f.block: (f, bank.transform(f)) for f in plan_folds(trial, num_blocks)}
            nll = scorer.run(_first_changed(current, folds, b), set(trial), folds, keep=False)
            values[b] = math.exp(nll)
            if best is None or nll < best[0]:
                best = (nll, b, folds)
        assert best is not None  # `remaining` is never empty (checked above)
        nll, chosen, folds = best
        scorer.run(_first_changed(current, folds, chosen), {*removed, chosen}, folds, keep=True)
        removed.append(chosen)
        current = folds
        ridges = {f"{f.block}->{f.target}": bank.ridges[bank.key(f)] for f, _ in folds.values()}
        rounds.append({"removed": chosen, "perplexity": math.exp(nll), "ridges": ridges})
        logger.info("Compensation-aware round %d: removed block %d (ppl %.3f)", round_index + 1, chosen, math.exp(nll))
    return AwareSelection(removed, values, rounds, math.exp(dense_nll), dict(bank.maps), heldout)
