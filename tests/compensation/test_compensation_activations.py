"""``compensation_from_activations``: the maps fitted from activations a user captured equal the pruner's own."""

from __future__ import annotations

import copy

import pytest
import torch

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan
from optimum_depth.calibration import CalibrationData
from optimum_depth.compensation import compensation_from_activations, fold_compensation
from optimum_depth.errors import ConfigError

from tiny_models import make_tiny_model, random_ids

PLAN = PruningPlan(granularity="block", removed_blocks=(2, 3), source_num_hidden_layers=6, criterion="sleb")
SETTINGS = CompensationConfig(num_samples=40, seq_len=16, batch_size=8)


def _output(out):
    return out[0] if isinstance(out, tuple) else out


def _captured(model, ids):
    """``{1: (M, Y, L)}``: block 1's MLP output and the rest of its output, and the dense state after block 3."""
    layers, captured = model.model.layers, {}
    hooks = [
        layers[1].mlp.down_proj.register_forward_hook(lambda _m, _a, out: captured.__setitem__("m", out)),
        layers[1].register_forward_hook(lambda _m, _a, out: captured.__setitem__("block", _output(out))),
        layers[3].register_forward_hook(lambda _m, _a, out: captured.__setitem__("dense", _output(out))),
    ]
    with torch.no_grad():
        model(input_ids=ids)
    for hook in hooks:
        hook.remove()
    return {1: (captured["m"], captured["block"] - captured["m"], captured["dense"])}


def test_maps_from_captured_activations_equal_the_pruners_compensation():
    dense = make_tiny_model("llama").eval()
    ids = random_ids(40, 16, seed=5)
    expected = copy.deepcopy(dense)
    config = DepthPruningConfig(criterion="sleb", num_layers_to_remove=2, compensation=SETTINGS)
    DepthPruner(config).apply(expected, PLAN, calibration=CalibrationData(ids))

    result = compensation_from_activations(PLAN, _captured(dense, ids), SETTINGS)
    model = copy.deepcopy(dense)
    DepthPruner(DepthPruningConfig(criterion="sleb", num_layers_to_remove=2)).apply(model, PLAN)
    plain = copy.deepcopy(model)
    fold_compensation(model, result)
    (fitted,) = result.maps
    assert fitted.relative_ridge == expected.config.pruning["compensation"]["maps"][0]["relative_ridge"]
    with torch.no_grad():
        logits, reference, uncompensated = model(ids).logits, expected(ids).logits, plain(ids).logits
    assert (reference - uncompensated).abs().max() > 1e-2  # the compensation matters here
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)


def test_missing_or_mismatched_activations_are_refused():
    m = torch.zeros(4, 3, 8)
    with pytest.raises(ConfigError, match=r"fold block\(s\) \[1\]"):
        compensation_from_activations(PLAN, {5: (m, m, m)})
    with pytest.raises(ConfigError, match="one shape"):
        compensation_from_activations(PLAN, {1: (m, m, torch.zeros(4, 3, 9))})
