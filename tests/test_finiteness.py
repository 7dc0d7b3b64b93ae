"""NaN and infinite values are refused before anything is computed from them or written, for every criterion."""

from __future__ import annotations

import pytest
import torch

from optimum_depth import DepthPruner, DepthPruningConfig, NonFiniteError, PruningPlan

from tiny_models import make_tiny_model, random_ids

CRITERIA = ["magnitude", "taylor", "ppl", "block_influence", "angular", "sleb"]


def _calibration():
    return random_ids(4, 16, seed=3)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state):
    return model.state_dict().keys() == state.keys() and all(
        torch.equal(v, state[k]) or (v.isnan() == state[k].isnan()).all() for k, v in model.state_dict().items()
    )


@pytest.mark.parametrize("criterion", [*CRITERIA, "finercut"])
def test_a_nan_weight_is_refused_by_every_criterion_naming_block_and_tensor(criterion):
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    before = _state(model)
    granularity = "sublayer" if criterion == "finercut" else "block"
    config = DepthPruningConfig(criterion=criterion, granularity=granularity, num_layers_to_remove=1, protect_first=0)
    with pytest.raises(NonFiniteError, match=r"block 1 `mlp\.down_proj\.weight` has 1 of 2048 non-finite"):
        DepthPruner(config).prune(model, calibration=_calibration())
    assert model.config.num_hidden_layers == 6 and _same(model, before)


def test_an_infinite_weight_outside_the_blocks_is_named():
    model = make_tiny_model("qwen2")
    with torch.no_grad():
        model.lm_head.weight[3, 2] = float("inf")
    with pytest.raises(NonFiniteError, match="`lm_head.weight`"):
        DepthPruner(DepthPruningConfig(criterion="magnitude", num_layers_to_remove=1, protect_first=0)).prune(model)


def test_a_plan_is_refused_when_a_kept_block_holds_nan_but_may_remove_the_broken_block():
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.layers[2].self_attn.q_proj.weight[1, 1] = float("nan")
    pruner = DepthPruner(DepthPruningConfig(criterion="magnitude", num_layers_to_remove=1, protect_first=0))
    keeps_it = PruningPlan(granularity="block", removed_blocks=(4,), source_num_hidden_layers=6)
    with pytest.raises(NonFiniteError, match=r"block 2 `self_attn\.q_proj\.weight`"):
        pruner.apply(model, keeps_it)
    assert model.config.num_hidden_layers == 6
    pruner.apply(model, PruningPlan(granularity="block", removed_blocks=(2,), source_num_hidden_layers=6))
    assert model.config.surviving_layers == [0, 1, 3, 4, 5]
    with torch.no_grad():
        assert torch.isfinite(model(random_ids(1, 8)).logits).all()


@pytest.mark.parametrize("criterion", ["block_influence", "ppl"])
def test_scores_that_overflow_name_the_block_whose_output_is_the_first_not_finite(criterion):
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.layers[3].mlp.up_proj.weight.fill_(3e38)  # finite weights, infinite activations
    before = _state(model)
    config = DepthPruningConfig(criterion=criterion, num_layers_to_remove=1)
    with pytest.raises(NonFiniteError, match="the output of block 3 is the first non-finite activation"):
        DepthPruner(config).prune(model, calibration=_calibration())
    assert _same(model, before)


def test_a_nan_compensation_map_is_refused_before_it_is_folded():
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.layers[3].mlp.up_proj.weight.fill_(3e38)  # the removed block overflows: the map cannot fit
    before = _state(model)
    config = DepthPruningConfig(
        criterion="magnitude", num_layers_to_remove=1, compensation={"method": "linear_ls", "num_samples": 8}
    )
    plan = PruningPlan(granularity="block", removed_blocks=(3,), source_num_hidden_layers=6)
    with pytest.raises(NonFiniteError, match=r"cut of blocks \[3\] \(to be folded into block 2"):
        DepthPruner(config).apply(model, plan, calibration=random_ids(8, 16, seed=4))
    assert model.config.num_hidden_layers == 6 and _same(model, before)
