"""The block-wise engine equals deleting blocks and running the whole model, on every family."""

from __future__ import annotations

import copy

import pytest
import torch
from criteria_references import naive_removal_nll

from optimum_depth.blocks.engine import BlockwiseEngine
from optimum_depth.blocks.surgery import remove_layers
from optimum_depth.calibration import CalibrationData

from tiny_models import make_tiny_model, random_ids


def test_removal_loss_matches_deleting_the_block(family, tiny_model):
    ids = random_ids(4, 24, seed=1)
    engine = BlockwiseEngine(tiny_model, CalibrationData(ids), batch_size=2)
    engine.capture()
    assert engine.dense_loss().mean_nll == pytest.approx(naive_removal_nll(tiny_model, ids, 2, []), abs=1e-5)
    for position in range(engine.num_blocks):
        expected = naive_removal_nll(tiny_model, ids, 2, [position])
        assert engine.removal_loss(position).mean_nll == pytest.approx(expected, abs=1e-5), position
    # and against real surgery (renumbered layer_idx, remapped per-layer config) for a middle block
    expected = naive_removal_nll(tiny_model, ids, 2, [3], surgery=True)
    assert engine.removal_loss(3).mean_nll == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text"])
@pytest.mark.parametrize("keep_states", [True, False])
def test_commit_removal_equals_capturing_the_pruned_model(family, keep_states):
    model = make_tiny_model(family)
    ids = random_ids(3, 20, seed=2)
    engine = BlockwiseEngine(model, CalibrationData(ids), batch_size=2)
    engine.capture()
    engine.commit_removal(engine.removal_loss(2, keep_states=True) if keep_states else 2)
    engine.commit_removal(engine.removal_loss(4, keep_states=True) if keep_states else 4)
    assert engine.block_ids == [0, 1, 3, 4]
    pruned = copy.deepcopy(model)
    remove_layers(pruned, [2, 5])
    fresh = BlockwiseEngine(pruned, CalibrationData(ids), batch_size=2)
    fresh.capture()
    assert engine.cached is not None and fresh.cached is not None
    for ours, theirs in zip(engine.cached, fresh.cached, strict=True):
        assert len(ours.hidden) == len(theirs.hidden) == 5
        for a, b in zip(ours.hidden, theirs.hidden, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for position in range(4):
        assert engine.removal_loss(position).mean_nll == pytest.approx(fresh.removal_loss(position).mean_nll, abs=1e-6)


def test_block_forward_count_is_the_cached_schedule():
    model = make_tiny_model("llama")
    calls = []
    handles = [block.register_forward_hook(lambda *a: calls.append(1)) for block in model.model.layers]
    engine = BlockwiseEngine(model, CalibrationData(random_ids(4, 16)), batch_size=2)
    engine.capture()
    for position in range(6):
        engine.removal_loss(position)
    for handle in handles:
        handle.remove()
    batches, blocks = 2, 6
    expected = batches * blocks + batches * sum(blocks - 1 - p for p in range(blocks))  # capture + tails
    assert engine.block_forwards == len(calls) == expected
    assert engine.head_forwards == batches * blocks


def test_engine_requires_capture_and_valid_positions():
    engine = BlockwiseEngine(make_tiny_model("llama"), CalibrationData(random_ids(2, 8)))
    with pytest.raises(RuntimeError, match="capture"):
        engine.removal_loss(0)
    engine.capture()
    with pytest.raises(IndexError):
        engine.removal_loss(6)
    with pytest.raises(IndexError):
        engine.commit_removal(-1)


def test_cache_device_and_wrapped_models():
    from peft import LoraConfig, get_peft_model

    model = make_tiny_model("llama")
    ids = random_ids(2, 12)
    plain = BlockwiseEngine(model, CalibrationData(ids))
    plain.capture()
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=True))
    engine = BlockwiseEngine(wrapped, CalibrationData(ids), cache_device="cpu")
    engine.capture()
    assert engine.removal_loss(1).nll == pytest.approx(plain.removal_loss(1).nll, rel=1e-6)
