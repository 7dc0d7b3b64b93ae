"""The data-free agreement metric against a direct computation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from optimum_depth import remove_layers
from optimum_depth.calibration import prepare_calibration
from optimum_depth.evaluation.agreement import self_generated_agreement

from tiny_models import make_tiny_model


def test_agreement_matches_a_direct_computation():
    dense = make_tiny_model("llama")
    pruned = remove_layers(copy.deepcopy(dense), [2, 3])
    result = self_generated_agreement(dense, pruned, num_samples=3, seq_len=9, seed=5, batch_size=2)
    ids = prepare_calibration("self", model=dense, num_samples=3, seq_len=9, seed=5).input_ids
    with torch.no_grad():
        p = torch.log_softmax(dense(ids).logits[:, :-1], -1)
        q = torch.log_softmax(pruned(ids).logits[:, :-1], -1)
    targets = ids[:, 1:]
    assert result["top1_agreement"] == pytest.approx((p.argmax(-1) == q.argmax(-1)).float().mean().item())
    assert result["kl_dense_pruned"] == pytest.approx((p.exp() * (p - q)).sum(-1).mean().item(), rel=1e-5)
    nll = -q.gather(-1, targets.unsqueeze(-1)).mean().item()
    assert result["pruned_ppl"] == pytest.approx(math.exp(nll), rel=1e-5)


def test_identical_models_agree_fully():
    dense = make_tiny_model("qwen2")
    result = self_generated_agreement(dense, dense, num_samples=2, seq_len=6)
    assert result["top1_agreement"] == 1.0 and abs(result["kl_dense_pruned"]) < 1e-6
    assert result["dense_ppl"] == result["pruned_ppl"]
