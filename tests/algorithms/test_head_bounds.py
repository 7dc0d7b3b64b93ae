"""The cheap subset-log-sum-exp NLL bound: never above the exact NLL, tight when the subset covers the mass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimum_depth.algorithms.head_bounds import bound_tokens, head_supports_bounds, subset_nll_lower_bound
from optimum_depth.blocks.engine import BlockwiseEngine
from optimum_depth.calibration import CalibrationData

from tiny_models import FAMILIES, make_tiny_model, random_ids


def _exact(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(
        nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")
    )


@pytest.mark.parametrize("k", [1, 4, 64])
def test_bound_is_below_the_exact_nll_and_exact_with_the_whole_vocabulary(k):
    generator = torch.Generator().manual_seed(k)
    weight = torch.randn(64, 8, generator=generator)
    normed = torch.randn(2, 5, 8, generator=generator)
    labels = torch.randint(0, 64, (2, 5), generator=generator)
    logits = normed @ weight.T
    reference = logits + 0.5 * torch.randn(logits.shape, generator=generator)  # a similar, different model
    tokens = bound_tokens(reference, labels, k)
    assert torch.equal(tokens, torch.unique(tokens)) and set(labels.flatten().tolist()) <= set(tokens.tolist())
    exact = _exact(logits, labels)
    bound = subset_nll_lower_bound(normed, weight, tokens, labels)
    assert 0.0 <= bound <= exact
    if k == 64:  # the subset is the whole vocabulary: only the safety margin remains
        assert bound == pytest.approx(exact - 1e-3 * labels.numel(), abs=1e-4)


def test_softcapped_logits_are_bounded_as_the_model_computes_them():
    generator = torch.Generator().manual_seed(1)
    weight, normed = torch.randn(32, 4, generator=generator) * 10, torch.randn(1, 6, 4, generator=generator)
    labels = torch.randint(0, 32, (1, 6), generator=generator)
    capped = torch.tanh((normed @ weight.T) / 5.0) * 5.0
    tokens = bound_tokens(capped, labels, 3)
    assert subset_nll_lower_bound(normed, weight, tokens, labels, softcap=5.0) <= _exact(capped, labels)


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_bound_never_exceeds_the_exact_removal_nll(family):
    model = make_tiny_model(family).eval()
    engine = BlockwiseEngine(model, CalibrationData(random_ids(3, 12, seed=2)))
    engine.capture()
    engine.dense_loss()
    assert engine.supports_bounds
    for position in range(engine.num_blocks):
        for index in range(len(engine.batches)):
            bound = engine.removal_batch_bound(position, index)
            heads = engine.head_forwards
            exact = engine.removal_batch_nll(position, index)  # reuses the state the bound computed
            assert engine.head_forwards == heads + 1
            assert 0.0 <= bound <= exact
    assert engine.bound_evaluations == engine.num_blocks * len(engine.batches)


def test_offloaded_or_biased_heads_do_not_support_bounds():
    assert head_supports_bounds(nn.Linear(4, 8, bias=False))
    assert not head_supports_bounds(nn.Linear(4, 8, bias=True))
    assert not head_supports_bounds(nn.Linear(4, 8, bias=False, device="meta"))
