"""Which block compensates which cut, and the block-by-block fit on toy blocks where the answer is known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimum_depth.compensation.cuts import Fold, contiguous_runs, plan_folds
from optimum_depth.compensation.walk import WalkInputs, fit_maps
from optimum_depth.errors import ConfigError


def test_runs_and_folds():
    assert contiguous_runs([5, 14, 15, 16, 3, 4]) == [(3, 5), (14, 16)]
    assert plan_folds([5, 14, 15], 30) == [Fold(4, 5, (5,)), Fold(13, 15, (14, 15))]
    # A run at the start is folded after it, into the first kept block; a run at the end aims at the last state.
    assert plan_folds([0, 1, 29], 30) == [Fold(2, 2, (0, 1)), Fold(28, 29, (29,))]
    # Two runs around one kept block share its map, aimed at the later run's end.
    assert plan_folds([0, 2], 6) == [Fold(1, 2, (0, 2))]
    with pytest.raises(ConfigError, match="Every block"):
        plan_folds(range(4), 4)


class ResidualLinear(nn.Module):
    """A toy block ``out = h + h Wᵀ``; ``mlp`` is the linear part (its output plays the MLP output)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.mlp = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
        self.mlp.weight.data.copy_(weight)

    def forward(self, hidden):
        return hidden + self.mlp(hidden)


def test_a_removed_block_that_is_exactly_linear_is_recovered_exactly():
    """Fold block out = h + h Wᵀ (so M = h Wᵀ, Y = h); removed block x -> x + x A. The dense state after the removed
    block is Y + M T* with T* = I + A + W^{-T} A, which the least-squares fit must find exactly, so the compensated
    pruned walk reproduces the dense state."""
    torch.manual_seed(0)
    d = 6
    w = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, dtype=torch.float64)  # invertible
    a = 0.2 * torch.randn(d, d, dtype=torch.float64)
    fold_block, removed_block = ResidualLinear(w), ResidualLinear(a.T)
    states = torch.randn(40, 5, d, dtype=torch.float64)
    inputs = WalkInputs(
        dense_blocks={0: fold_block, 1: removed_block},
        kept_blocks={0: fold_block},
        mlp_outputs={0: fold_block.mlp},
        block_kwargs={0: {}, 1: {}},
        hidden_states=states,
        heldout=8,
        batch_size=7,
    )
    (fitted,) = fit_maps(inputs, plan_folds([1], 2), ridge=0.0)
    identity = torch.eye(d, dtype=torch.float64)
    expected = identity + a + torch.linalg.inv(w.T) @ a
    torch.testing.assert_close(fitted.transform, expected, rtol=1e-8, atol=1e-8)
    assert fitted.heldout_error < 1e-20  # exact on held-out rows too
    dense = removed_block(fold_block(states))
    y, m = states, fold_block.mlp(states)
    torch.testing.assert_close(y + m @ fitted.transform, dense, rtol=1e-9, atol=1e-9)


def test_the_ridge_is_chosen_on_held_out_rows_and_recorded():
    torch.manual_seed(1)
    d = 6
    fold_block = ResidualLinear(torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, dtype=torch.float64))
    removed = ResidualLinear(0.2 * torch.randn(d, d, dtype=torch.float64))
    inputs = WalkInputs({0: fold_block, 1: removed}, {0: fold_block}, {0: fold_block.mlp}, {0: {}, 1: {}},
                        torch.randn(30, 4, d, dtype=torch.float64), heldout=6)  # fmt: skip
    (fitted,) = fit_maps(inputs, plan_folds([1], 2))
    assert fitted.relative_ridge in fitted.heldout_errors
    assert fitted.heldout_error == min(fitted.heldout_errors.values())
    record = fitted.record()
    assert record["fold_block"] == 0 and record["removed"] == [1] and record["target_after_block"] == 1
