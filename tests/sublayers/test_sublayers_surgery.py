"""Sublayer surgery: validation before change, whole-block removal, in-place pruning of pruned models, conversions."""

from __future__ import annotations

import copy

import pytest
import torch

from finercut_references import logits_without
from optimum_depth import UnsupportedArchitectureError, remove_layers
from optimum_depth.errors import SublayerIndexError
from optimum_depth.modeling import PrunedQwen2ForCausalLM
from optimum_depth.modeling.pruned_layout import block_layer_types
from optimum_depth.sublayers.candidates import list_sublayers
from optimum_depth.sublayers.surgery import remove_sublayers

from tiny_models import make_tiny_model, random_ids


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("attention", "mlp", "message"),
    [
        ([6], [], "not integers"),
        ([1, 1], [], "duplicates"),
        ([], [], "No sublayer"),
        (list(range(6)), [], "At least one attention"),
        ([True], [], "not integers"),
    ],
)
def test_invalid_requests_change_nothing(attention, mlp, message):
    model = make_tiny_model("llama")
    before = _state(model)
    with pytest.raises(SublayerIndexError, match=message):
        remove_sublayers(model, attention, mlp)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.config.num_hidden_layers == 6


def test_already_removed_sublayer_is_refused():
    pruned = remove_sublayers(make_tiny_model("llama"), attention=[1])
    with pytest.raises(SublayerIndexError, match="already removed"):
        remove_sublayers(pruned, attention=[1])


def test_unsupported_family_is_refused():
    from transformers import AutoModelForCausalLM, GPT2Config

    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        remove_sublayers(model, attention=[1])


def test_wrapped_stock_model_is_converted_in_place_and_matches_the_plain_one():
    from peft import LoraConfig, get_peft_model

    model = make_tiny_model("llama")
    reference = remove_sublayers(copy.deepcopy(model), attention=[1], mlp=[4])
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    parameters = {id(p) for p in wrapped.parameters()}
    assert remove_sublayers(wrapped, attention=[1], mlp=[4]) is wrapped
    assert type(wrapped.base_model.model).__name__ == "PrunedLlamaForCausalLM"
    assert {id(p) for p in wrapped.parameters()} <= parameters  # nothing copied: the wrapper's tensors survive
    ids = random_ids(2, 8)
    with torch.no_grad():
        assert torch.allclose(wrapped(ids).logits, reference(ids).logits, atol=1e-6)  # LoRA B starts at zero
    merged = wrapped.merge_and_unload()
    assert (merged.config.skipped_attention, merged.config.skipped_mlp) == ([1], [4])


def test_in_place_pruning_of_a_pruned_model_matches_the_reference():
    model = make_tiny_model("qwen2")
    ids = random_ids(2, 10)
    reference = copy.deepcopy(model)
    pruned = remove_sublayers(model, attention=[0], mlp=[3])
    assert isinstance(pruned, PrunedQwen2ForCausalLM)
    same = remove_sublayers(pruned, attention=[2, 3], mlp=[5])  # block 3 now empty: removed as a block
    assert same is pruned
    assert pruned.config.surviving_layers == [0, 1, 2, 4, 5]
    assert (pruned.config.skipped_attention, pruned.config.skipped_mlp) == ([0, 2], [4])
    assert block_layer_types(pruned.config) == [
        "moe",
        "full_attention",
        "moe",
        "sliding_attention",
        "sliding_attention",
    ]
    # attention-first: the k-th block with attention uses KV-cache slot k
    assert pruned.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "moe", "moe"]
    assert [b.self_attn.layer_idx if b.self_attn else None for b in pruned.model.layers] == [None, 0, None, 1, 2]
    positions = {(s.block, s.kind): i for i, s in enumerate(list_sublayers(reference))}
    removed = [positions[k] for k in [(0, "attention"), (3, "mlp"), (2, "attention"), (3, "attention"), (5, "mlp")]]
    expected = logits_without(reference, removed, ids)
    with torch.no_grad():
        got = torch.cat([pruned(row[None]).logits for row in ids])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_peft_wrapped_pruned_model_is_pruned_in_place():
    from peft import LoraConfig, get_peft_model

    pruned = remove_sublayers(make_tiny_model("llama"), attention=[1])
    wrapped = get_peft_model(pruned, LoraConfig(r=2, target_modules=["q_proj", "down_proj"]))
    assert remove_sublayers(wrapped, mlp=[2]) is wrapped
    assert pruned.config.skipped_mlp == [2] and pruned.model.layers[2].mlp is None
    assert wrapped(random_ids(1, 6)).logits.shape == (1, 6, 128)


def test_block_surgery_on_a_pruned_model_renumbers_skipped_sublayers():
    pruned = remove_sublayers(make_tiny_model("qwen3"), attention=[1, 4], mlp=[3])
    remove_layers(pruned, [0, 3])
    assert pruned.config.surviving_layers == [1, 2, 4, 5]
    assert (pruned.config.skipped_attention, pruned.config.skipped_mlp) == ([0, 2], [])
    assert [kind == "moe" for kind in block_layer_types(pruned.config)] == [True, False, True, False]
    assert pruned.config.layer_types[2:] == ["moe", "moe"]
    assert [b.self_attn.layer_idx if b.self_attn else None for b in pruned.model.layers] == [None, 0, None, 1]
    pruned.config.validate()


def test_pruned_model_without_partial_blocks_goes_back_to_native():
    pruned = remove_sublayers(make_tiny_model("llama"), attention=[1])
    ids = random_ids(1, 8)
    native = remove_sublayers(pruned, mlp=[1])
    assert type(native).__name__ == "LlamaForCausalLM" and native.config.model_type == "llama"
    assert native.config.surviving_layers == [0, 2, 3, 4, 5]
    assert not hasattr(native.config, "skipped_attention") or not native.config.skipped_attention
    reference = remove_layers(make_tiny_model("llama"), [1])
    with torch.no_grad():
        assert torch.equal(native(ids).logits, reference(ids).logits)
