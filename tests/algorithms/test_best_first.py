"""The best-first early exit against full evaluation on random non-negative terms."""

from __future__ import annotations

import random

import pytest

from optimum_depth.algorithms.best_first import best_first


def _terms(num_candidates: int, num_batches: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    scale = [rng.uniform(0.5, 5.0) for _ in range(num_candidates)]
    return [[rng.uniform(0.0, 2.0) * scale[c] for _ in range(num_batches)] for c in range(num_candidates)]


def _full_total(row: list[float]) -> float:
    total = 0.0
    for value in row:
        total = total + value
    return total


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("wanted", [1, 3, 7])
def test_completed_prefix_equals_the_sorted_full_totals(seed, wanted):
    terms = _terms(12, 8, seed)
    calls: list[tuple[int, int]] = []

    def term(candidate: int, index: int) -> float:
        calls.append((candidate, index))
        return terms[candidate][index]

    outcome = best_first(range(12), 8, term, lambda done: len(done) >= wanted)
    totals = {c: _full_total(terms[c]) for c in range(12)}
    expected = sorted(totals, key=lambda c: (totals[c], c))[:wanted]
    assert outcome.completed == expected
    for candidate in outcome.completed:
        assert outcome.sums[candidate] == totals[candidate]  # bit-identical: same summation order
    threshold = totals[expected[-1]]
    for candidate in outcome.lower_bounds:
        assert outcome.sums[candidate] <= totals[candidate]  # a lower bound...
        assert outcome.sums[candidate] >= threshold  # ...already past the last selected total
    assert len(calls) == len(set(calls)) == outcome.terms_evaluated  # no term computed twice
    assert all(index == outcome.batches_done[c] - 1 or index < outcome.batches_done[c] for c, index in calls)
    assert outcome.terms_evaluated < 12 * 8  # it did save work on these spread-out totals
    assert outcome.cut_short == len(outcome.lower_bounds) > 0


def test_runs_to_completion_when_never_enough_and_ties_go_to_the_lower_id():
    outcome = best_first([3, 1, 2], 2, lambda c, i: 1.0, lambda done: False)
    assert outcome.completed == [1, 2, 3]
    assert outcome.lower_bounds == [] and outcome.terms_evaluated == 6


def test_negative_terms_are_refused():
    with pytest.raises(ValueError, match="negative term"):
        best_first([0, 1], 2, lambda c, i: -1.0, lambda done: bool(done))
