"""The tensor math of sparsity masks, against hand-worked cases and straightforward loop references."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from optimum_depth.sparsity.besa import LearnedSparseMask, normalised_reconstruction_error, target_prior
from optimum_depth.sparsity.masks import (
    candidate_probabilities,
    candidate_sparsities,
    candidate_thresholds,
    column_ranks,
    expected_sparsity,
    hard_mask_from_ranks,
    keep_probabilities,
    layer_mask,
    n_m_mask,
    prune_counts,
    row_mask,
    soft_mask_from_ranks,
    solve_monotone,
    straight_through,
    wanda_importance,
)

# Hand-worked case: one row of 4 weights, candidates {0, 0.25, 0.5, 0.75, 1}.
WEIGHT = torch.tensor([[4.0, -1.0, 3.0, 2.0]])
INPUT_SQ_NORMS = torch.tensor([1.0, 4.0, 1.0, 1.0])
PROBS = torch.tensor([[0.1, 0.2, 0.3, 0.3, 0.1]])


def test_wanda_importance_and_ranks_hand_worked():
    importance = wanda_importance(WEIGHT, INPUT_SQ_NORMS)
    # |W| * ||X||: [4*1, 1*2, 3*1, 2*1]
    assert importance.tolist() == [[4.0, 2.0, 3.0, 2.0]]
    # Ascending, ties by column: col1 (2) -> 0, col3 (2) -> 1, col2 (3) -> 2, col0 (4) -> 3.
    assert column_ranks(importance).tolist() == [[3, 0, 2, 1]]


def test_straight_through_mask_hand_worked():
    candidates = candidate_sparsities(4)
    thresholds = candidate_thresholds(4, 4)
    assert candidates.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert thresholds.tolist() == [0, 1, 2, 3, 4]
    probs = PROBS.clone().requires_grad_(True)
    # Expected sparsity 0.25*0.2 + 0.5*0.3 + 0.75*0.3 + 1*0.1 = 0.525 -> floor(0.525 * 4) = 2 weights pruned.
    sparsity = expected_sparsity(probs, candidates)
    assert sparsity.item() == pytest.approx(0.525)
    assert prune_counts(sparsity, 4).tolist() == [2]
    ranks = column_ranks(wanda_importance(WEIGHT, INPUT_SQ_NORMS))
    hard = hard_mask_from_ranks(ranks, prune_counts(sparsity, 4))
    assert hard.tolist() == [[1.0, 0.0, 1.0, 0.0]]  # ranks 0 and 1 (columns 1 and 3) pruned
    # Keep probability of rank j = sum of p_k over candidates pruning at most j weights: cumulative sums.
    keep = keep_probabilities(probs, thresholds, 4)
    assert keep[0].tolist() == pytest.approx([0.1, 0.3, 0.6, 0.9])
    soft = soft_mask_from_ranks(keep, ranks)  # column c gets keep[rank[c]]
    assert soft[0].tolist() == pytest.approx([0.9, 0.1, 0.6, 0.3])
    mask = straight_through(hard, soft)
    assert mask.tolist() == hard.tolist()
    # Upstream gradient g per column; dL/dp_k = sum over columns with rank >= threshold_k of g.
    (mask * torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    assert probs.grad[0].tolist() == pytest.approx([10.0, 8.0, 4.0, 1.0, 0.0])


def test_learned_mask_parametrization_hand_worked():
    linear = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(WEIGHT)
    linear.weight.requires_grad_(False)
    importance = wanda_importance(WEIGHT, INPUT_SQ_NORMS)
    mask = LearnedSparseMask(importance, 4, row_wise=True, prior=torch.zeros(5), sigmoid_smooth=False)
    with torch.no_grad():
        mask.logits.copy_(PROBS.log())
    parametrize.register_parametrization(linear, "weight", mask)
    assert linear.weight.tolist() == [[4.0, 0.0, 3.0, 0.0]]
    output = linear(torch.ones(1, 4))
    output.sum().backward()
    # d out / d mask_c = W_c; d mask / d p as above with g = W = [4, -1, 3, 2]:
    # dL/dp = [8, 9, 7, 4, 0]; through the softmax: p * (dL/dp - p . dL/dp).
    d_p = torch.tensor([8.0, 9.0, 7.0, 4.0, 0.0])
    expected = PROBS[0] * (d_p - (PROBS[0] * d_p).sum())
    assert mask.logits.grad[0].tolist() == pytest.approx(expected.tolist(), abs=1e-6)


def test_layer_wise_mask_prunes_same_count_in_every_row():
    torch.manual_seed(0)
    importance = torch.rand(5, 8)
    mask = LearnedSparseMask(importance, 100, row_wise=False, prior=torch.zeros(101), sigmoid_smooth=True)
    # Uniform start: expected sparsity 0.5 -> 4 of 8 pruned in each row, the 4 least important.
    hard = mask.hard_mask()
    assert hard.sum(dim=1).tolist() == [4.0] * 5
    reference = torch.ones(5, 8)
    for row in range(5):
        reference[row, importance[row].argsort()[:4]] = 0.0
    assert torch.equal(hard, reference)
    assert mask.pruned_count() == 20


def test_keep_probabilities_against_loop_reference():
    torch.manual_seed(1)
    probs = torch.softmax(torch.randn(3, 11), dim=-1)
    columns, steps = 7, 10
    thresholds = candidate_thresholds(columns, steps)
    keep = keep_probabilities(probs, thresholds, columns)
    for row in range(3):
        for j in range(columns):
            reference = sum(float(probs[row, k]) for k in range(steps + 1) if j >= math.floor(columns * k / steps))
            assert keep[row, j].item() == pytest.approx(reference, abs=1e-6)


def test_candidate_thresholds_are_exact():
    # 100 * 0.29 is 28.999999999999996 in floating point; the integer path gives 29.
    assert candidate_thresholds(100, 100)[29].item() == 29
    assert prune_counts(torch.tensor(0.5), 64).item() == 32


def test_sigmoid_smoothing_bounds_and_prior_centres_target():
    candidates = candidate_sparsities(100)
    uniform = candidate_probabilities(torch.zeros(101), None, sigmoid_smooth=True)
    assert expected_sparsity(uniform, candidates).item() == pytest.approx(0.5)
    for target in (0.3, 0.5, 0.7):
        prior = target_prior(target, 100)
        probs = candidate_probabilities(torch.zeros(101), prior, sigmoid_smooth=True)
        assert expected_sparsity(probs, candidates).item() == pytest.approx(target, abs=1e-6)
    assert target_prior(0.5, 100).abs().max().item() < 1e-6  # the reference code's start, exactly


def test_row_mask_matches_loop_reference():
    torch.manual_seed(2)
    importance = torch.rand(6, 10)
    mask = row_mask(importance, 0.3)
    for row in range(6):
        pruned = set(importance[row].argsort()[:3].tolist())
        assert [c for c in range(10) if mask[row, c] == 0] == sorted(pruned)


def test_layer_mask_prunes_global_lowest():
    torch.manual_seed(3)
    importance = torch.rand(4, 5)
    mask = layer_mask(importance, 0.5)
    assert int((mask == 0).sum()) == 10
    threshold = importance.flatten().sort().values[9]
    assert torch.equal(mask == 0, importance <= threshold)


def test_n_m_mask_keeps_best_two_of_four():
    torch.manual_seed(4)
    importance = torch.rand(3, 12)
    mask = n_m_mask(importance, 2, 4)
    for row in range(3):
        for group in range(3):
            scores = importance[row, 4 * group : 4 * group + 4]
            kept = mask[row, 4 * group : 4 * group + 4]
            assert kept.sum().item() == 2
            assert set(torch.nonzero(kept).flatten().tolist()) == set(scores.argsort()[2:].tolist())
    with pytest.raises(ValueError, match="multiple of 4"):
        n_m_mask(torch.rand(2, 6), 2, 4)


def test_solve_monotone_step_function():
    # Achieved fraction of a step function: floor(10 * sigmoid(x)) / 10, target 0.7.
    def fn(x):
        return math.floor(10 / (1 + math.exp(-x))) / 10

    x = solve_monotone(fn, 0.7)
    assert fn(x) == pytest.approx(0.7)
    assert solve_monotone(lambda x: x / 1000.0, 0.5) == pytest.approx(500.0, rel=1e-6)  # bracket widening


def test_normalised_reconstruction_error_reference():
    torch.manual_seed(5)
    reference = torch.randn(2, 3, 4)
    output = reference + 0.1 * torch.randn(2, 3, 4)
    flat_r, flat_o = reference.reshape(-1, 4), output.reshape(-1, 4)
    expected = sum(((flat_o[:, c] - flat_r[:, c]) ** 2).sum() / (flat_r[:, c] ** 2).sum() for c in range(4)) / 4
    assert normalised_reconstruction_error(output, reference).item() == pytest.approx(float(expected), rel=1e-5)
    assert normalised_reconstruction_error(reference, reference).item() == 0.0
