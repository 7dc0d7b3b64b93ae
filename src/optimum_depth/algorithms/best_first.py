"""Best-first evaluation of candidates whose cost is a sum of non-negative per-batch terms (the exact early exit).

PPL, SLEB and FinerCut rank candidates by a total over the calibration batches (a summed NLL, a summed distance)
whose terms are never negative, so the partial sum after any number of batches is a lower bound of the total.
:func:`best_first` always refines the candidate with the smallest lower bound. When the candidate it pops is known
exactly, no other candidate can end lower: the completed candidates come out in ascending order of their totals
(ties to the lower candidate id), and every other candidate was evaluated only as far as needed to rule it out.

A cheap per-batch lower bound (``bound``) tightens the early exit: a batch term that is not computed yet counts 0,
one whose bound is known counts the bound, an exact one counts itself. The PPL and SLEB criteria use it to skip
most LM-head evaluations (see :meth:`optimum_depth.blocks.engine.BlockwiseEngine.removal_batch_bound`).

Totals are summed batch by batch in the natural order, as a full evaluation sums them, so they are bit-identical
to it. Pure orchestration: no torch here; the criteria supply the terms.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["BestFirstOutcome", "BoundViolation", "best_first"]

BatchTerm = Callable[[int, int], float]
"""``term(candidate, batch_index)``: the candidate's non-negative contribution on one calibration batch."""

Enough = Callable[[list[int]], bool]
"""Called with the completed candidates so far (ascending totals); ``True`` ends the evaluation."""


class BoundViolation(RuntimeError):
    """A cheap lower bound exceeded the exact term it bounds (the selection could not be trusted)."""


@dataclass
class BestFirstOutcome:
    """What :func:`best_first` computed.

    Args:
        completed: Candidates evaluated exactly on every batch, in ascending order of their totals.
        sums: Per candidate, its total (completed) or a lower bound of it (the others).
        batches_done: Per candidate, the number of batches whose exact term was computed.
        num_batches: Batches of a complete evaluation.
        lower_bounds: Candidates whose sum is only a lower bound (evaluation stopped early), sorted.
        bounds_computed: Cheap bounds computed.
    """

    completed: list[int]
    sums: dict[int, float]
    batches_done: dict[int, int]
    num_batches: int
    lower_bounds: list[int] = field(default_factory=list)
    bounds_computed: int = 0

    @property
    def terms_evaluated(self) -> int:
        """Exact candidate-batch terms computed."""
        return sum(self.batches_done.values())

    @property
    def cut_short(self) -> int:
        """Candidates whose evaluation stopped before every exact term was known."""
        return len(self.lower_bounds)


class _Candidate:
    """Per-batch knowledge about one candidate: nothing, a lower bound, or the exact term."""

    def __init__(self, num_batches: int):
        self.bounds: list[float | None] = [None] * num_batches
        self.exact: list[float | None] = [None] * num_batches
        self.lower = 0.0

    def next_missing(self, values: list[float | None]) -> int | None:
        return next((i for i, v in enumerate(values) if v is None), None)

    def total(self) -> float:
        total = 0.0
        for value in self.exact:  # the natural order, as a full evaluation sums
            total = total + float(value)  # type: ignore[arg-type]
        return total


def best_first(
    candidates: Iterable[int],
    num_batches: int,
    term: BatchTerm,
    enough: Enough,
    bound: BatchTerm | None = None,
) -> BestFirstOutcome:
    """Completes candidates in ascending order of their totals, evaluating each only as far as needed.

    Args:
        candidates: Candidate ids (distinct integers).
        num_batches: Number of per-batch terms of a complete evaluation.
        term: The exact non-negative per-batch term of a candidate.
        enough: Stops the evaluation once the completed candidates suffice (checked after each completion); the
            evaluation also stops when every candidate is complete.
        bound: Optional cheap lower bound of ``term`` (``0 <= bound(c, i) <= term(c, i)``), computed for every
            batch of a candidate before its exact terms.

    Returns:
        The completed candidates in order, and every candidate's total or lower bound.

    Raises:
        ValueError: If a term or bound is negative.
        BoundViolation: If an exact term is smaller than its bound.
    """
    states = {candidate: _Candidate(num_batches) for candidate in candidates}
    heap = [(0.0, candidate) for candidate in states]  # (lower bound of the total, candidate)
    heapq.heapify(heap)
    completed: list[int] = []
    sums: dict[int, float] = {}
    bounds_computed = 0
    while heap:
        lower, candidate = heapq.heappop(heap)
        state = states[candidate]
        missing_exact = state.next_missing(state.exact)
        if missing_exact is None:
            completed.append(candidate)
            sums[candidate] = state.total()
            if enough(completed):
                break
            continue
        missing_bound = state.next_missing(state.bounds) if bound is not None else None
        if missing_bound is not None and bound is not None:
            value = _checked(bound(candidate, missing_bound), candidate, missing_bound)
            state.bounds[missing_bound] = value
            bounds_computed += 1
            increase = value
        else:
            index = missing_exact
            value = _checked(term(candidate, index), candidate, index)
            previous = state.bounds[index] or 0.0
            if value < previous:
                raise BoundViolation(
                    f"Candidate {candidate}, batch {index}: exact term {value!r} is below its bound {previous!r}."
                )
            state.exact[index] = value
            increase = value - previous
        exact = state.next_missing(state.exact) is None
        state.lower = state.total() if exact else lower + increase  # exact keys for complete candidates
        heapq.heappush(heap, (state.lower, candidate))
    cut = []
    for lower, candidate in heap:
        if states[candidate].next_missing(states[candidate].exact) is None:
            sums[candidate] = states[candidate].total()
        else:
            sums[candidate] = lower
            cut.append(candidate)
    done = {c: sum(v is not None for v in s.exact) for c, s in states.items()}
    return BestFirstOutcome(completed, sums, done, num_batches, sorted(cut), bounds_computed)


def _checked(value: float, candidate: int, index: int) -> float:
    if value < 0:
        raise ValueError(f"Candidate {candidate} has a negative term {value} on batch {index}.")
    return float(value)
