"""Block surgery leaves a model that is correct on every path, for every supported family."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from optimum_depth import LayerIndexError, get_decoder_layers, remove_layers

from tiny_models import make_tiny_model, random_ids


def _reference_forward_of_kept_blocks(model, kept, ids):
    """Runs the dense model but skips removed blocks by hand, through the stock forward of a deep copy."""
    import copy

    clone = copy.deepcopy(model)
    clone.model.layers = torch.nn.ModuleList([clone.model.layers[i] for i in kept])
    for position, block in enumerate(clone.model.layers):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    clone.config.num_hidden_layers = len(kept)
    if getattr(clone.config, "layer_types", None) is not None:
        clone.config.layer_types = [model.config.layer_types[i] for i in kept]
    if getattr(clone.config, "no_rope_layers", None) is not None:
        clone.config.no_rope_layers = [model.config.no_rope_layers[i] for i in kept]
    return clone(ids).logits


@pytest.mark.parametrize("removed", [[1, 3], [0], [0, 5]])
def test_removed_blocks_give_the_hand_built_reference(tiny_model, removed):
    ids = random_ids(2, 12)
    kept = [i for i in range(6) if i not in removed]
    expected = _reference_forward_of_kept_blocks(tiny_model, kept, ids)
    remove_layers(tiny_model, removed)
    assert len(get_decoder_layers(tiny_model)) == len(kept)
    assert tiny_model.config.num_hidden_layers == len(kept)
    assert tiny_model.config.surviving_layers == kept
    assert tiny_model.config.source_num_hidden_layers == 6
    torch.testing.assert_close(tiny_model(ids).logits, expected, rtol=0, atol=0)


def test_attention_layer_idx_and_per_layer_fields_are_renumbered(tiny_model):
    before_types = getattr(tiny_model.config, "layer_types", None)
    remove_layers(tiny_model, [0, 2])
    kept = [1, 3, 4, 5]
    for position, block in enumerate(get_decoder_layers(tiny_model)):
        assert block.self_attn.layer_idx == position
    if before_types is not None:
        assert tiny_model.config.layer_types == [before_types[i] for i in kept]
        for block, layer_type in zip(get_decoder_layers(tiny_model), tiny_model.config.layer_types, strict=True):
            if hasattr(block, "attention_type"):
                assert block.attention_type == layer_type


def test_left_padded_generate_with_cache_matches_full_forward(tiny_model):
    remove_layers(tiny_model, [0, 3])
    ids = random_ids(2, 8, seed=1)
    ids[0, :3] = tiny_model.config.pad_token_id
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    out = tiny_model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=6,
        min_new_tokens=6,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tiny_model.config.pad_token_id,
    )
    sequences = out.sequences
    full_mask = torch.cat([mask, torch.ones(2, 6, dtype=mask.dtype)], dim=1)
    position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)
    full_logits = tiny_model(sequences, attention_mask=full_mask, position_ids=position_ids).logits
    for step, step_logits in enumerate(out.logits):
        reference = full_logits[:, ids.shape[1] - 1 + step]
        torch.testing.assert_close(step_logits, reference, rtol=1e-4, atol=1e-4)
        assert torch.equal(sequences[:, ids.shape[1] + step], reference.argmax(-1))


@pytest.mark.parametrize("removed", [[0], [2, 4]])
def test_incremental_decoding_with_dynamic_cache_matches_full_forward(tiny_model, removed):
    remove_layers(tiny_model, removed)
    ids = random_ids(1, 10, seed=2)
    full = tiny_model(ids).logits
    cache = DynamicCache(config=tiny_model.config)
    out = tiny_model(ids[:, :4], past_key_values=cache, use_cache=True)
    steps = [out.logits]
    for position in range(4, 10):
        out = tiny_model(ids[:, position : position + 1], past_key_values=out.past_key_values, use_cache=True)
        steps.append(out.logits)
    assert out.past_key_values.get_seq_length() == 10
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


def test_removed_parameters_are_released():
    model = make_tiny_model("llama")
    removed_block = get_decoder_layers(model)[2]
    import weakref

    ref = weakref.ref(removed_block.mlp.up_proj.weight)
    del removed_block
    remove_layers(model, [2])
    assert ref() is None
    assert not any(".layers.5." in name for name, _ in model.named_parameters())


@pytest.mark.parametrize(
    "indices, message",
    [
        ([6], "out of range"),
        ([-1], "out of range"),
        ([1, 1], "more than once"),
        ([], "No block"),
        (list(range(6)), "all 6"),
        ([1.0], "integers"),
    ],
)
def test_invalid_indices_raise_before_any_change(indices, message):
    model = make_tiny_model("qwen3")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.config.to_dict()
    with pytest.raises(LayerIndexError, match=message):
        remove_layers(model, indices)
    assert model.config.to_dict() == config_before
    after = model.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_pruning_twice_composes_original_indices():
    model = make_tiny_model("llama")
    remove_layers(model, [1, 4])  # kept: 0 2 3 5
    remove_layers(model, [1])  # drops original 2
    assert model.config.surviving_layers == [0, 3, 5]
    assert model.config.source_num_hidden_layers == 6


def test_qwen2_max_window_layers_follow_kept_blocks():
    model = make_tiny_model("qwen2")  # blocks 3,4,5 slide
    remove_layers(model, [0, 4])
    assert model.config.max_window_layers == 2
    assert model.config.layer_types == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]


def test_heterogeneous_per_layer_config_is_remapped():
    model = make_tiny_model("llama")
    model.config.per_layer_config = {4: {"rms_norm_eps": 1e-3}}
    remove_layers(model, [1])
    assert model.config._heterogeneity_spec.per_layer_overrides == {3: {"rms_norm_eps": 1e-3}}


def test_peft_wrapped_model_loses_blocks_and_their_adapters():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_tiny_model("llama"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    ids = random_ids(1, 6)
    remove_layers(model, [1, 2])
    names = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert len(names) == 2 * 4
    assert model.get_base_model().config.surviving_layers == [0, 3, 4, 5]
    model(ids)  # still runs
