"""The ``"window"`` candidate of ``criterion="auto"``: the contiguous run of blocks the compensation repairs best.

Gromov et al. remove the run of ``n`` consecutive blocks whose input and output are closest (angular distance);
compensation-aware SLEB finds long runs that a map repairs well, at ``O(n x blocks)`` candidate evaluations. This scan
sits between them at ``O(blocks)``: every allowed window of ``n`` consecutive blocks is removed in turn, its cut
compensated with the run's map (the shared :class:`~optimum_depth.compensation.selection.MapBank`; no map without
compensation), the rest of the model run from the cut on the *screening* sequences (the last fit sequences, the ones
that choose each map's ridge; never ``auto``'s held-out ones), and the window is scored by how far the final hidden
state is from the dense model's: ``1 - cos`` after the model's final norm, averaged over tokens (no LM head, which
costs tens of blocks on large vocabularies). The lowest score is the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import PruningTargetError

__all__ = ["WindowScan", "window_size", "scan_windows"]


@dataclass
class WindowScan:
    """The outcome of :func:`scan_windows`.

    Args:
        removed: Positions of the chosen window.
        values: Per block, the lowest score of the windows containing it (the chart; higher = more important).
        scores: ``{first position: score}`` of every scanned window.
    """

    removed: list[int]
    values: list[float]
    scores: dict[int, float] = field(default_factory=dict)

    @property
    def extra(self) -> dict[str, Any]:
        """What ``LayerScores.extra`` records for the window candidate."""
        return {
            "quantity": "1 - cos(final-norm state, dense) of the compensated model without the window, on the "
            "screening sequences; per block, the lowest over the windows containing it",
            "window_scores": {str(k): v for k, v in self.scores.items()},
        }


def window_size(num_to_remove: int | None, sizes: Sequence[int], total: int, budget: int | None) -> int:
    """The window length: the target's block count, or the fewest consecutive blocks that can meet a parameter budget.

    Raises:
        PruningTargetError: If no window can meet the budget.
    """
    if num_to_remove is not None:
        return num_to_remove
    needed = total - int(budget or 0)
    for length in range(1, len(sizes)):
        if any(sum(sizes[s : s + length]) >= needed for s in range(len(sizes) - length + 1)):
            return length
    raise PruningTargetError(f"No window of consecutive blocks meets target_num_params={budget}.")


def _distance(hidden: torch.Tensor, dense: torch.Tensor, norm: nn.Module, batch_size: int) -> float:
    total, count = 0.0, 0
    for start in range(0, hidden.shape[0], batch_size):
        a = norm(hidden[start : start + batch_size]).float()
        b = norm(dense[start : start + batch_size]).float()
        cosine = nn.functional.cosine_similarity(a, b, dim=-1)
        total += float((1.0 - cosine).sum())
        count += cosine.numel()
    return total / count


@torch.no_grad()
def scan_windows(
    facts: Any,
    states: list[torch.Tensor],
    kwargs: list[dict[str, Any]],
    bank: Any,
    length: int,
    protected: frozenset[int] | set[int],
    batch_size: int,
) -> WindowScan:
    """Scores every allowed window of ``length`` consecutive blocks (see the module docs).

    Args:
        facts: The model.
        states: The dense state entering every block and leaving the last one, on the screening sequences.
        kwargs: Every block's call arguments, by position.
        bank: The maps to fold at each cut (:class:`~optimum_depth.compensation.selection.MapBank`), or ``None``.
        length: Blocks per window.
        protected: Positions no window may contain.
        batch_size: Sequences per block call.

    Returns:
        The chosen window and every window's score.

    Raises:
        PruningTargetError: If no window avoids the protected blocks.
    """
    from ..compensation.cuts import plan_folds
    from ..compensation.selection import SuffixScorer

    num_blocks = len(facts.layers)
    if length >= num_blocks:
        raise PruningTargetError(f"A window of {length} blocks leaves nothing of a {num_blocks}-block model.")
    norm = getattr(facts.inner, facts.spec.decoder_path).norm
    scorer = SuffixScorer(facts, None, states, kwargs, None, batch_size)
    scores: dict[int, float] = {}
    for first in range(num_blocks - length + 1):
        removed = list(range(first, first + length))
        if protected.intersection(removed):
            continue
        folds = {f.block: (f, bank.transform(f)) for f in plan_folds(removed, num_blocks)} if bank else {}
        hidden = scorer.final_state(min([*removed, *folds]), set(removed), folds)
        scores[first] = _distance(hidden, states[-1], norm, batch_size)
    if not scores:
        raise PruningTargetError(f"Every window of {length} consecutive blocks contains a protected block.")
    chosen = min(scores, key=lambda first: (scores[first], first))
    highest = max(scores.values())
    values = [
        min((v for first, v in scores.items() if first <= block < first + length), default=highest)
        for block in range(num_blocks)
    ]
    return WindowScan(list(range(chosen, chosen + length)), values, scores)
