"""Taylor importance against plain autograd, state restoration, and refusal of non-differentiable models."""

from __future__ import annotations

import copy

import pytest
import torch

from optimum_depth import DepthPruningConfig
from optimum_depth.calibration import CalibrationData
from optimum_depth.criteria.scoring import score_blocks

from tiny_models import make_tiny_model, random_ids


def reference_taylor(model, ids: torch.Tensor, batch_size: int) -> list[float]:
    """Accumulate .grad over batches with loss.backward(), then sum |W * grad| over each block's matrices."""
    model = copy.deepcopy(model)
    model.zero_grad(set_to_none=True)
    for batch in torch.split(ids, batch_size):
        model(input_ids=batch, labels=batch).loss.backward()
    values = []
    for block in model.model.layers:
        total = 0.0
        for param in block.parameters():
            if param.dim() >= 2:
                total += float((param.detach().double() * param.grad.double()).abs().sum())
        values.append(total)
    return values


def test_taylor_matches_autograd_on_a_two_layer_model():
    model = make_tiny_model("llama", num_hidden_layers=2)
    ids = random_ids(4, 12, seed=9)
    config = DepthPruningConfig(
        criterion="taylor", num_layers_to_remove=1, protect_first=0, protect_last=0, batch_size=2
    )
    scores = score_blocks(model, config, CalibrationData(ids))
    assert scores.values == pytest.approx(reference_taylor(model, ids, 2), rel=1e-5)
    # The accumulated gradient sits inside the absolute value: not the sum over batches of per-batch saliencies.
    per_batch = [reference_taylor(model, b, 2) for b in torch.split(ids, 2)]
    assert scores.values != pytest.approx([sum(v) for v in zip(*per_batch, strict=True)], rel=1e-3)


def test_taylor_runs_on_every_family(family, tiny_model):
    scores = score_blocks(
        tiny_model, DepthPruningConfig(criterion="taylor", pruning_ratio=0.3), CalibrationData(random_ids(2, 8))
    )
    assert len(scores.values) == 6 and all(v > 0 and torch.isfinite(torch.tensor(v)) for v in scores.values)
    assert scores.protected == [0, 1, 2, 3, 4, 5]  # Taylor+: first four and last two


def test_taylor_restores_model_state_and_grads():
    model = make_tiny_model("gemma2").train()
    model.model.embed_tokens.weight.requires_grad_(False)
    user_grad = torch.ones_like(model.model.layers[1].mlp.up_proj.weight)
    model.model.layers[1].mlp.up_proj.weight.grad = user_grad  # a gradient the user accumulated: kept as is
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = DepthPruningConfig(criterion="taylor", num_layers_to_remove=1, protect_first=0, protect_last=0)
    with torch.no_grad():
        score_blocks(model, config, CalibrationData(random_ids(2, 8)))
        assert not torch.is_grad_enabled()
    assert model.training
    for name, param in model.named_parameters():
        assert param.requires_grad == flags[name], name
        if name == "model.layers.1.mlp.up_proj.weight":
            assert param.grad is user_grad and torch.equal(user_grad, torch.ones_like(user_grad))
        else:
            assert param.grad is None, name
        assert torch.equal(param, before[name]), name


def test_taylor_refuses_offloaded_weights_before_changing_anything():
    from accelerate import cpu_offload

    model = cpu_offload(make_tiny_model("llama"), execution_device="cpu")
    flags = [p.requires_grad for p in model.parameters()]
    config = DepthPruningConfig(criterion="taylor", num_layers_to_remove=1)
    with pytest.raises(ValueError, match="offloaded"):
        score_blocks(model, config, CalibrationData(random_ids(2, 8)))
    assert [p.requires_grad for p in model.parameters()] == flags
