"""Compensation on the families with a norm after the MLP (Gemma 2, Gemma 3): diagonal maps folded into its gain."""

from __future__ import annotations

import copy

import pytest
import torch

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan, save_pruned_model
from optimum_depth.architectures import as_facts
from optimum_depth.calibration import CalibrationData
from optimum_depth.compensation import fit_compensation
from optimum_depth.compensation.linear_maps import GramAccumulator, ridge_solve_diagonal, select_ridge
from optimum_depth.compensation.sites import fold_map, fold_site, map_structure
from optimum_depth.errors import ConfigError

from tiny_models import make_tiny_model, random_ids

POST_NORM = ["gemma2", "gemma3_text"]
SETTINGS = CompensationConfig(num_samples=24, seq_len=16, batch_size=4)


def _block_parts(block, site, states, kwargs):
    """``(output, contribution)`` of ``block`` on ``states``: its output is ``Y + contribution``."""
    captured = []
    handle = site.module.register_forward_hook(lambda _m, _a, out: captured.append(out))
    with torch.no_grad():
        out = block(states, **kwargs)
    handle.remove()
    return (out[0] if isinstance(out, tuple) else out), captured[-1]


@pytest.mark.parametrize("family", POST_NORM)
def test_a_diagonal_map_folds_exactly_into_the_post_feedforward_norm_gain(family):
    from optimum_depth.blocks.replay import capture_block_inputs

    model = make_tiny_model(family)
    facts = as_facts(model)
    block = facts.layers[2]
    site = fold_site(block, facts)
    assert site.structure == "diagonal" and site.name == "post_feedforward_layernorm.weight"
    captured = capture_block_inputs(model, random_ids(3, 12, seed=4), batch_size=3)
    states = torch.randn(3, 12, 32) * 3
    kwargs = captured.block_kwargs[2]
    out, contribution = _block_parts(block, site, states, kwargs)
    gains = torch.rand(32, dtype=torch.float64) * 2 - 0.5  # any gains, negative ones included
    fold_map(model, site, torch.diag(gains))
    folded, _ = _block_parts(block, site, states, kwargs)
    expected = (out - contribution) + contribution * gains.float()
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="diagonal"):
        fold_map(model, site, torch.ones(32, 32, dtype=torch.float64))


def test_the_diagonal_solve_is_the_per_feature_least_squares_gain_shrunk_towards_one():
    torch.manual_seed(0)
    x = torch.randn(500, 5, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 1.0, 3.0], dtype=torch.float64)
    gains = torch.tensor([0.5, 2.0, -1.0, 1.0, 1.5], dtype=torch.float64)
    y = x * gains + 0.01 * torch.randn(500, 5, dtype=torch.float64) @ torch.randn(5, 5, dtype=torch.float64)
    stats = GramAccumulator(5)
    stats.update(x, y)
    exact = (x * y).sum(0) / (x * x).sum(0)
    torch.testing.assert_close(torch.diagonal(ridge_solve_diagonal(stats, 0.0)), exact)
    half = torch.diagonal(ridge_solve_diagonal(stats, 1.0))  # relative ridge 1: halfway between the fit and 1
    torch.testing.assert_close(half, (exact + 1) / 2)
    assert (
        torch.count_nonzero(
            ridge_solve_diagonal(stats, 0.3) - torch.diag(torch.diagonal(ridge_solve_diagonal(stats, 0.3)))
        )
        == 0
    )
    held = GramAccumulator(5)
    held.update(x[:100], y[:100])
    assert select_ridge(stats, held, (0.0, 1.0, 1e6), diagonal=True).relative_ridge == 0.0
    with pytest.raises(ValueError, match="identity"):
        select_ridge(stats, held, (0.0,), prior="zero", diagonal=True)


@pytest.mark.parametrize("family", POST_NORM)
def test_the_fitted_gains_equal_per_feature_least_squares_on_the_captured_activations(family):
    model = make_tiny_model(family)
    facts = as_facts(model)
    data = CalibrationData(random_ids(40, 16, seed=3), {"source": "random"})
    site = fold_site(facts.layers[1], facts)
    captured = {}
    hooks = [
        site.module.register_forward_hook(lambda _m, _a, out: captured.__setitem__("c", out)),
        facts.layers[1].register_forward_hook(lambda _m, _a, out: captured.__setitem__("block1", out[0] if isinstance(out, tuple) else out)),
        facts.layers[2].register_forward_hook(lambda _m, _a, out: captured.__setitem__("dense", out[0] if isinstance(out, tuple) else out)),
    ]  # fmt: skip
    with torch.no_grad():
        model(input_ids=data.input_ids)
    for hook in hooks:
        hook.remove()
    c = captured["c"].reshape(-1, 32).double()
    y = captured["block1"].reshape(c.shape).double() - c
    target = captured["dense"].reshape(c.shape).double() - y
    expected = (c * target).sum(0) / (c * c).sum(0)
    plan = PruningPlan(granularity="block", removed_blocks=(2,), source_num_hidden_layers=6)
    result = fit_compensation(model, plan, data, CompensationConfig(num_samples=40, seq_len=16, ridge=0.0))
    (fitted,) = result.maps
    assert fitted.structure == "diagonal"
    torch.testing.assert_close(torch.diagonal(fitted.transform), expected, rtol=1e-4, atol=1e-6)


def _kl_to(dense, model, ids):
    with torch.no_grad():
        p = torch.log_softmax(dense(ids).logits, -1)
        q = torch.log_softmax(model(ids).logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.mark.parametrize("family", POST_NORM)
@pytest.mark.parametrize("method", ["linear_ls", "linear_cosine"])
def test_pruning_a_post_norm_family_with_compensation_helps_and_reloads_natively(family, method, tmp_path):
    dense = make_tiny_model(family)
    plain, compensated = copy.deepcopy(dense), copy.deepcopy(dense)
    plan = PruningPlan(granularity="block", removed_blocks=(2, 3), source_num_hidden_layers=6)
    data = CalibrationData(random_ids(48, 16, seed=3), {"source": "random"})
    settings = CompensationConfig(method=method, num_samples=48, seq_len=16, batch_size=8)
    DepthPruner(DepthPruningConfig(num_layers_to_remove=2, protect_first=0)).apply(plain, plan)
    DepthPruner(DepthPruningConfig(num_layers_to_remove=2, protect_first=0, compensation=settings)).apply(
        compensated, plan, calibration=data
    )
    (record,) = compensated.config.pruning["compensation"]["maps"]
    assert record["structure"] == "diagonal" and record["folded_into"] == "post_feedforward_layernorm.weight"
    if method == "linear_ls":
        assert record["heldout_relative_error"] < 1
        held_out = random_ids(8, 16, seed=99)
        assert _kl_to(dense, compensated, held_out) < _kl_to(dense, plain, held_out)
    from transformers import AutoModelForCausalLM

    path = save_pruned_model(compensated, tmp_path / "ckpt")
    reloaded = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    ids = random_ids(2, 9)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, compensated(ids).logits, rtol=0, atol=0)


def test_map_structure_by_family_and_a_map_for_another_family_is_refused():
    assert map_structure("gemma3_text") == "diagonal" and map_structure("pruned_gemma2") == "diagonal"
    assert map_structure("llama") == "full" and map_structure(None) == "full"
    llama = make_tiny_model("llama")
    plan = PruningPlan(granularity="block", removed_blocks=(2,), source_num_hidden_layers=6)
    data = CalibrationData(random_ids(24, 16, seed=3), {"source": "random"})
    result = fit_compensation(llama, plan, data, SETTINGS)
    gemma = make_tiny_model("gemma2")
    before = copy.deepcopy(gemma.state_dict())
    from optimum_depth.compensation import fold_compensation

    with pytest.raises(ConfigError, match="full; this model's fold site takes diagonal"):
        fold_compensation(gemma, result)
    assert all(torch.equal(v, gemma.state_dict()[k]) for k, v in before.items())
