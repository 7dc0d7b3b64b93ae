"""Reconstruction (``compensation="reconstruct"``): the kept blocks next to each cut trained after the maps are folded."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan, save_pruned_model
from optimum_depth.calibration import CalibrationData
from optimum_depth.compensation import compensate, compensation_from_activations
from optimum_depth.compensation.reconstruction import ReconstructionSettings, reconstruction_loss, train_chain
from optimum_depth.errors import ConfigError

from tiny_models import make_tiny_model, random_ids

SETTINGS = CompensationConfig(
    method="reconstruct", num_samples=48, seq_len=16, batch_size=8, reconstruct_steps=60, reconstruct_lr=3e-3
)


def _plan(removed, total=6):
    return PruningPlan(granularity="block", removed_blocks=tuple(removed), source_num_hidden_layers=total)


def _pruner(settings=SETTINGS, n=2):
    return DepthPruner(DepthPruningConfig(num_layers_to_remove=n, protect_first=0, compensation=settings))


def _data(n=48, seed=3):
    return CalibrationData(random_ids(n, 16, seed=seed), {"source": "random"})


def _state_after(model, block, ids):
    captured = []
    handle = model.model.layers[block].register_forward_hook(
        lambda _m, _a, out: captured.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return captured[-1]


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_reconstruction_lowers_the_held_out_error_at_the_cut(family):
    dense = make_tiny_model(family)
    linear, trained = copy.deepcopy(dense), copy.deepcopy(dense)
    data = _data()
    _pruner(dataclasses.replace(SETTINGS, method="linear_ls")).apply(linear, _plan((2, 3)), calibration=data)
    _pruner().apply(trained, _plan((2, 3)), calibration=data)
    record = trained.config.pruning["compensation"]
    (cut,) = record["reconstruction"]["cuts"]
    assert cut["trained_blocks"] == [1] and cut["removed"] == [2, 3]
    assert cut["heldout_loss_after"] < cut["heldout_loss_before"] and cut["kept_step"] > 0
    assert record["maps"] == linear.config.pruning["compensation"]["maps"]  # the same maps, then training
    fresh = random_ids(16, 16, seed=77)  # text neither the maps nor the training saw
    target = _state_after(dense, 3, fresh)
    loss = record["reconstruction"]["loss"]
    error = {
        name: float(reconstruction_loss(_state_after(m, 1, fresh), target, loss, dense.model.norm))
        for name, m in (("linear", linear), ("trained", trained))
    }
    assert error["trained"] < error["linear"]


def test_the_reconstructed_checkpoint_reloads_natively_with_identical_logits(tmp_path):
    model = make_tiny_model("qwen2")
    _pruner().apply(model, _plan((1, 4)), calibration=_data())
    record = model.config.pruning["compensation"]["reconstruction"]
    assert [c["trained_blocks"] for c in record["cuts"]] == [[0], [3]]
    assert record["steps"] == 60  # shared by the two cuts of one block each
    assert [c["steps"] for c in record["cuts"]] == [30, 30]
    path = save_pruned_model(model, tmp_path / "ckpt")
    reloaded = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    assert type(reloaded).__name__ == "Qwen2ForCausalLM" and reloaded.config.num_hidden_layers == 4
    ids = random_ids(2, 11, seed=8)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert set(dict(reloaded.named_parameters())) == set(dict(model.named_parameters()))  # no new module


def test_reconstructing_afterwards_equals_reconstructing_in_the_pruner():
    dense = make_tiny_model("mistral")
    inline, later = copy.deepcopy(dense), copy.deepcopy(dense)
    data = _data()
    _pruner().apply(inline, _plan((2, 3)), calibration=data)
    _pruner(None).apply(later, _plan((2, 3)))
    compensate(later, data, dense_model=dense, config=SETTINGS)
    for (name, a), b in zip(inline.state_dict().items(), later.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_two_blocks_per_cut_train_the_fold_block_and_the_one_before():
    model = make_tiny_model("llama")
    settings = dataclasses.replace(SETTINGS, reconstruct_blocks=2)
    _pruner(settings).apply(model, _plan((3, 4)), calibration=_data())
    (cut,) = model.config.pruning["compensation"]["reconstruction"]["cuts"]
    assert cut["trained_blocks"] == [1, 2]


def test_training_keeps_the_best_held_out_step_and_stops_at_the_time_cap():
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(8, 8))
    inputs = torch.randn(20, 4, 8)
    targets = inputs @ torch.randn(8, 8) * 0.1
    diverging = ReconstructionSettings(steps=20, learning_rate=1e4, loss="token_mse", batch_size=4)
    outcome = train_chain([block], [{}], inputs, targets, heldout=5, settings=diverging)
    assert outcome.best_step == 0  # nothing beat the untrained block: its parameters are given back unchanged
    assert all(torch.equal(outcome.states[0][k], v) for k, v in block.state_dict().items())
    assert outcome.heldout_after == min(v for _, v in outcome.history)
    capped = ReconstructionSettings(steps=10_000, learning_rate=1e-3, loss="mse", batch_size=4, max_seconds=0.05)
    assert train_chain([block], [{}], inputs, targets, heldout=5, settings=capped).steps < 10_000


def test_bad_reconstruction_input_is_refused_before_anything_changes():
    from peft import LoraConfig, get_peft_model

    for kwargs, message in [
        ({"reconstruct_steps": 0}, "reconstruct_steps"),
        ({"reconstruct_lr": -1.0}, "reconstruct_lr"),
        ({"reconstruct_loss": "l1"}, "reconstruct_loss"),
        ({"reconstruct_blocks": 0}, "reconstruct_blocks"),
        ({"reconstruct_max_seconds": 0}, "reconstruct_max_seconds"),
    ]:
        with pytest.raises(ConfigError, match=message):
            CompensationConfig(method="reconstruct", **kwargs)
    wrapped = get_peft_model(make_tiny_model("llama"), LoraConfig(r=2, target_modules=["q_proj"]))
    before = copy.deepcopy(wrapped.state_dict())
    with pytest.raises(ConfigError, match="peft adapters"):
        _pruner().apply(wrapped, _plan((2, 3)), calibration=_data())
    assert wrapped.base_model.model.config.num_hidden_layers == 6
    assert all(torch.equal(v, wrapped.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ConfigError, match="needs the model"):
        compensation_from_activations(_plan((2,)), {}, SETTINGS)


def test_the_learning_rate_is_relative_to_each_weight_tensors_scale():
    """Adam's first step moves every weight by about its rate: with the rate relative to the tensor's RMS, a block
    whose weights are ten times larger moves ten times more, so one setting suits models of any weight scale."""
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False))
    large = copy.deepcopy(small)
    with torch.no_grad():
        large[0].weight.mul_(10.0)
    inputs = torch.randn(12, 4, 8)
    settings = ReconstructionSettings(steps=1, learning_rate=1e-2, loss="mse", batch_size=12)
    moved = []
    for block in (small, large):
        with torch.no_grad():
            targets = block(inputs) * 1.5  # reachable: the step helps, so it is the one kept
        outcome = train_chain([block], [{}], inputs, targets, heldout=2, settings=settings)
        assert outcome.best_step == 1
        moved.append(float((outcome.states[0]["0.weight"] - block[0].weight).abs().mean()))
    assert moved[1] / moved[0] == pytest.approx(10.0, rel=0.05)
