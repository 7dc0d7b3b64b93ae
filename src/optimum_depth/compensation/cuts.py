"""Where each removed run of blocks is compensated: the fold block, and the dense state its map must reproduce.

For a run of removed blocks ``s..e`` (original indices) the kept block ``f = s - 1`` before it gets a map on its MLP
output, fitted so that its output approximates the dense model's hidden state after block ``e`` (ReplaceMe). A run
that starts at block 0 has no block before it: it is folded *after* the run, into the first kept block ``f = e + 1``,
whose output then approximates the dense state after ``f`` (the embeddings are left alone, so tied embeddings are no
problem). When two runs would fold into the same block, its map targets the later run's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Fold", "contiguous_runs", "plan_folds"]


@dataclass(frozen=True)
class Fold:
    """One fitted map: which kept block's MLP output it transforms, and which dense state it aims at.

    Args:
        block: Original index of the kept block whose MLP down-projection receives the map.
        target: Original index of the block after which the dense hidden state is the target.
        removed: The removed original blocks this map compensates.
    """

    block: int
    target: int
    removed: tuple[int, ...]


def contiguous_runs(removed: Sequence[int]) -> list[tuple[int, int]]:
    """``(first, last)`` of each run of consecutive removed indices, in order."""
    runs: list[tuple[int, int]] = []
    for index in sorted(removed):
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def plan_folds(removed: Sequence[int], num_blocks: int) -> list[Fold]:
    """The maps that compensate removing ``removed`` from a model of ``num_blocks`` blocks.

    Args:
        removed: Original indices of the removed blocks.
        num_blocks: Blocks of the original model.

    Returns:
        The folds, in model order (each fold block appears once).

    Raises:
        ConfigError: If every block is removed (nothing to fold into).
    """
    if len(set(removed)) >= num_blocks:
        raise ConfigError("Every block is removed: there is no block left to fold a compensation into.")
    by_block: dict[int, Fold] = {}
    for first, last in contiguous_runs(removed):
        run = tuple(range(first, last + 1))
        fold = Fold(first - 1, last, run) if first > 0 else Fold(last + 1, last + 1, run)
        earlier = by_block.get(fold.block)
        if earlier is not None:  # two runs around one kept block: one map, aimed at the later run's end
            fold = Fold(fold.block, max(fold.target, earlier.target), tuple(sorted({*earlier.removed, *run})))
        by_block[fold.block] = fold
    return [by_block[block] for block in sorted(by_block)]
