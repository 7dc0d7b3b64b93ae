"""FinerCut's searches over sublayer candidates: greedy elimination and one-shot ranking (orchestration only).

Greedy (the paper's method): at each step every remaining candidate is scored with the earlier removals applied; the
one whose removal moves the outputs least goes; repeat until the target.

Exact early exit (``use_bound=True``, the default; ``DepthPruningConfig.early_exit``): a candidate's distance is a
sum of non-negative terms over the calibration batches, so its partial sum is a lower bound of its total; each step
evaluates its candidates best-first (:mod:`optimum_depth.algorithms.best_first`, shared with the PPL and SLEB criteria), so the
winner is the exhaustive argmin (ties go to the earlier sublayer in both cases) and every other candidate is
evaluated only until its partial sum passes the winner's total.

One-shot: every candidate is evaluated once, alone, on the dense model; removal follows the ascending distance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm
from transformers.utils.logging import is_progress_bar_enabled

from ..algorithms.best_first import best_first
from .candidates import ATTENTION
from .engine import SublayerEngine

logger = logging.getLogger(__name__)

__all__ = ["GreedySearch", "SearchResult", "greedy_search", "one_shot_search"]


@dataclass
class SearchResult:
    """What a search found.

    Args:
        removal_order: Candidate positions in removal order.
        step_distances: Mean distance to the dense model right after each removal (greedy), or of each candidate
            removed alone (one-shot), parallel to ``removal_order``.
        values: Per candidate, the mean distance when it was last evaluated (see :func:`greedy_search`).
        lower_bounds: Candidates whose value is only a lower bound (their evaluation was cut short by the bound).
        evaluations: Candidate evaluations started; ``cut_short`` of them stopped early.
        cut_short: Evaluations stopped by the bound.
    """

    removal_order: list[int]
    step_distances: list[float]
    values: list[float]
    lower_bounds: list[int] = field(default_factory=list)
    evaluations: int = 0
    cut_short: int = 0


StopRule = Callable[[list[int]], bool]
"""Called with the removal order so far; ``True`` ends the search."""


def _is_last_attention(engine: SublayerEngine, candidate: int) -> bool:
    kinds = [s.kind for s in engine.sublayers]
    remaining = [i for i, kind in enumerate(kinds) if kind == ATTENTION and i not in engine.removed]
    return kinds[candidate] == ATTENTION and remaining == [candidate]


def _eligible(engine: SublayerEngine, protected: set[int]) -> list[int]:
    return [
        c
        for c in range(engine.num_sublayers)
        if c not in engine.removed and c not in protected and not _is_last_attention(engine, c)
    ]


class GreedySearch:
    """Greedy sublayer elimination on a captured :class:`SublayerEngine`, one removal per :meth:`step`.

    ``values[c]`` is the mean distance of "the model after the earlier removals, minus ``c``" at the last step
    ``c`` was evaluated: the step that removed it, or the last step for the candidates that stay (a lower bound for
    those in ``lower_bounds``). Protected candidates are never evaluated and get the largest value seen.

    Args:
        engine: A captured engine; its state advances with each removal.
        protected: Candidate positions that may not be removed.
        use_bound: Best-first evaluation with the exact early exit (see the module docstring); ``False`` evaluates
            every candidate on every batch.
    """

    def __init__(self, engine: SublayerEngine, protected: set[int], use_bound: bool = True):
        self.engine = engine
        self.protected = set(protected)
        self.use_bound = use_bound
        self.values: dict[int, float] = {}
        self.lower: set[int] = set()
        self.order: list[int] = []
        self.step_distances: list[float] = []
        self.evaluations = 0
        self.cut_short = 0

    def candidates(self) -> list[int]:
        """The candidates of the next step."""
        return _eligible(self.engine, self.protected)

    def step(self) -> int | None:
        """Finds the candidate whose removal gives the smallest total distance, removes it and returns it.

        Returns:
            The removed candidate, or ``None`` when none is left.
        """
        candidates = self.candidates()
        if not candidates:
            return None
        best, total = self._best_first(candidates) if self.use_bound else self._exhaustive(candidates)
        self.engine.commit(best)
        self.order.append(best)
        self.step_distances.append(self.engine.mean(total))
        logger.info("Removed %s (distance %.6g).", self.engine.sublayers[best].name, self.step_distances[-1])
        return best

    def _exhaustive(self, candidates: list[int]) -> tuple[int, float]:
        totals = {}
        for candidate in candidates:
            totals[candidate] = self.engine.evaluate(candidate).total
            self.values[candidate] = self.engine.mean(totals[candidate])
            self.lower.discard(candidate)
        self.evaluations += len(candidates)
        best = min(totals, key=lambda c: (totals[c], c))
        return best, totals[best]

    def _best_first(self, candidates: list[int]) -> tuple[int, float]:
        """Best-first evaluation with the exact early exit (:func:`~optimum_depth.algorithms.best_first.best_first`).

        The first candidate completed has a total no larger than every other candidate's lower bound, so it is the
        exhaustive argmin (ties: the earlier sublayer); each other candidate is evaluated only until its partial sum
        exceeds the winner's total. Totals are bit-identical to a full evaluation.
        """
        outcome = best_first(candidates, len(self.engine.batches), self.engine.batch_term, lambda done: bool(done))
        self.evaluations += len(candidates)
        self.cut_short += outcome.cut_short
        for candidate in candidates:
            self.values[candidate] = self.engine.mean(outcome.sums[candidate])
        self.lower.difference_update(candidates)
        self.lower.update(outcome.lower_bounds)
        winner = outcome.completed[0]
        return winner, outcome.sums[winner]

    def result(self) -> SearchResult:
        """The search so far."""
        values = _fill_values(self.engine, self.values)
        return SearchResult(
            list(self.order), list(self.step_distances), values, sorted(self.lower), self.evaluations, self.cut_short
        )


def greedy_search(
    engine: SublayerEngine,
    protected: set[int],
    stop: StopRule,
    use_bound: bool = True,
    desc: str = "FinerCut",
    expected_removals: int | None = None,
) -> SearchResult:
    """Runs :class:`GreedySearch` until ``stop(removal_order)`` holds or no candidate is left.

    Args:
        engine: A captured engine.
        protected: Candidate positions that may not be removed.
        stop: Ends the search (checked before each step).
        use_bound: Cut evaluations short once they cannot win.
        desc: Progress-bar label.
        expected_removals: Removals the stop rule asks for, if known (the progress bar's total).

    Returns:
        The removal order and the distances.
    """
    search = GreedySearch(engine, protected, use_bound)
    bar = tqdm(desc=desc, total=expected_removals, unit="removal", leave=False, disable=not is_progress_bar_enabled())
    with bar:
        while not stop(search.order) and search.step() is not None:
            bar.update(1)
    return search.result()


def one_shot_search(engine: SublayerEngine, protected: set[int], desc: str = "FinerCut one-shot") -> SearchResult:
    """Ranks every unprotected candidate by the distance of the dense model without it alone.

    The engine's state is not advanced. The caller applies its target to the returned order (at least one
    attention sublayer must stay: the last attention in the order is skipped by the planner).

    Args:
        engine: A captured engine.
        protected: Candidate positions that may not be removed (not evaluated).
        desc: Progress-bar label.

    Returns:
        The ranking (``removal_order`` ascending distance, ties to the earlier sublayer) and the distances.
    """
    candidates = [c for c in range(engine.num_sublayers) if c not in engine.removed and c not in protected]
    totals = {}
    for candidate in tqdm(candidates, desc=desc, leave=False, disable=not is_progress_bar_enabled()):
        totals[candidate] = engine.evaluate(candidate).total
    order = sorted(totals, key=lambda c: (totals[c], c))
    values = {c: engine.mean(t) for c, t in totals.items()}
    return SearchResult(order, [values[c] for c in order], _fill_values(engine, values), [], len(candidates), 0)


def _fill_values(engine: SublayerEngine, values: dict[int, float]) -> list[float]:
    top = max(values.values(), default=0.0)
    return [values.get(c, top) for c in range(engine.num_sublayers)]
