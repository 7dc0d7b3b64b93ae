"""Best-first evaluation of candidates whose cost is a sum of non-negative per-batch terms (the exact early exit).

PPL, SLEB and FinerCut rank candidates by a total over the calibration batches (a summed NLL, a summed distance)
whose terms are never negative, so the partial sum after any number of batches is a lower bound of the total.
:func:`best_first` always advances the candidate with the smallest partial sum by one batch. When the candidate it
pops has seen every batch, no other candidate can end lower: the completed candidates come out in ascending order of
their totals (ties to the lower candidate id), and every other candidate was evaluated only as far as needed to
rule it out. Totals are summed batch by batch in the natural order, as a full evaluation sums them, so they are
bit-identical to it.

Pure orchestration: no torch here; the criteria supply the per-batch term.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["BestFirstOutcome", "best_first"]

BatchTerm = Callable[[int, int], float]
"""``term(candidate, batch_index)``: the candidate's non-negative contribution on one calibration batch."""

Enough = Callable[[list[int]], bool]
"""Called with the completed candidates so far (ascending totals); ``True`` ends the evaluation."""


@dataclass
class BestFirstOutcome:
    """What :func:`best_first` computed.

    Args:
        completed: Candidates evaluated on every batch, in ascending order of their totals.
        sums: Per candidate, its total (completed) or its partial sum, a lower bound of the total (the others).
        batches_done: Per candidate, the number of batches evaluated.
        num_batches: Batches of a complete evaluation.
    """

    completed: list[int]
    sums: dict[int, float]
    batches_done: dict[int, int]
    num_batches: int
    lower_bounds: list[int] = field(default_factory=list)
    """Candidates whose sum is only a lower bound (evaluation stopped early), sorted."""

    @property
    def terms_evaluated(self) -> int:
        """Candidate-batch terms computed."""
        return sum(self.batches_done.values())

    @property
    def cut_short(self) -> int:
        """Candidates whose evaluation stopped before the last batch."""
        return len(self.lower_bounds)


def best_first(candidates: Iterable[int], num_batches: int, term: BatchTerm, enough: Enough) -> BestFirstOutcome:
    """Completes candidates in ascending order of their totals, evaluating each only as far as needed.

    Args:
        candidates: Candidate ids (distinct integers).
        num_batches: Number of per-batch terms of a complete evaluation.
        term: The non-negative per-batch term of a candidate.
        enough: Stops the evaluation once the completed candidates suffice (checked after each completion); the
            evaluation also stops when every candidate is complete.

    Returns:
        The completed candidates in order, and every candidate's (partial) sum.

    Raises:
        ValueError: If a term is negative (the partial sums would not be lower bounds).
    """
    heap = [(0.0, candidate, 0) for candidate in candidates]  # (partial sum, candidate, batches done)
    heapq.heapify(heap)
    completed: list[int] = []
    sums: dict[int, float] = {}
    done: dict[int, int] = {candidate: 0 for _, candidate, _ in heap}
    while heap:
        partial, candidate, count = heapq.heappop(heap)
        if count == num_batches:
            completed.append(candidate)
            sums[candidate] = partial
            if enough(completed):
                break
            continue
        value = term(candidate, count)
        if value < 0:
            raise ValueError(f"Candidate {candidate} has a negative term {value} on batch {count}.")
        done[candidate] = count + 1
        heapq.heappush(heap, (partial + value, candidate, count + 1))
    for partial, candidate, _count in heap:
        sums[candidate] = partial
    lower = sorted(c for c, count in done.items() if count < num_batches)
    return BestFirstOutcome(completed, sums, done, num_batches, lower)
