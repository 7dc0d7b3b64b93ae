"""In-place conversion to the pruned class (what lets DepthPruningCallback remove sublayers inside a Trainer)."""

from __future__ import annotations

import copy

import pytest
import torch

from optimum_depth import UnsupportedArchitectureError, remove_layers
from optimum_depth.sublayers.surgery import check_conversion_to_pruned_class, convert_to_pruned_class, remove_sublayers

from tiny_models import make_tiny_model, random_ids

PRUNABLE_FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3"]


@pytest.mark.parametrize("family", PRUNABLE_FAMILIES)
def test_conversion_keeps_every_object_and_the_outputs(family):
    model = make_tiny_model(family)
    ids = random_ids(2, 10)
    stock_class, decoder, blocks = type(model).__name__, model.model, list(model.model.layers)
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # built before the conversion, like Trainer's
    with torch.no_grad():
        expected = model(ids).logits

    assert convert_to_pruned_class(model) is model
    assert type(model).__name__ == f"Pruned{stock_class}"
    assert model.config.model_type == f"pruned_{family}" and model.model is decoder
    assert all(a is b for a, b in zip(model.model.layers, blocks, strict=True))
    assert all(type(b).__name__ == "PrunedDecoderLayer" for b in blocks)
    # Same parameter objects, names and order: optimizer state and checkpoints keep their layout.
    assert [(n, id(p)) for n, p in model.named_parameters()] == [(n, id(p)) for n, p in named]
    assert all(m.config is model.config for m in model.modules() if "config" in vars(m))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=1e-6)
        assert len(model(ids, output_hidden_states=True).hidden_states) == 7
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    assert convert_to_pruned_class(model) is model  # already converted: unchanged
    check_conversion_to_pruned_class(model)


@pytest.mark.parametrize("family", PRUNABLE_FAMILIES)
def test_removal_after_explicit_conversion_equals_direct_removal_and_goes_back_to_native(family):
    model = make_tiny_model(family)
    reference = copy.deepcopy(model)
    ids = random_ids(2, 10)
    convert_to_pruned_class(model)
    assert remove_sublayers(model, attention=[1], mlp=[3]) is model
    direct = remove_sublayers(reference, attention=[1], mlp=[3])  # a stock model: converted in place as well
    assert direct is reference and type(direct) is type(model)
    assert model.config.to_dict() == direct.config.to_dict()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, direct(ids).logits, rtol=0, atol=1e-6)

    # The remaining sublayers of blocks 1 and 3 go: no partial block is left, the same object turns native again.
    decoder = model.model
    assert remove_sublayers(model, attention=[3], mlp=[1]) is model
    assert model.config.model_type == family and model.model is decoder
    assert model.config.surviving_layers == [0, 2, 4, 5]
    native = remove_layers(make_tiny_model(family), [1, 3])
    assert type(model) is type(native)
    assert all(type(a) is type(b) for a, b in zip(model.model.layers, native.model.layers, strict=True))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, native(ids).logits, rtol=0, atol=1e-6)
        generated = model.generate(ids[:1], max_new_tokens=4, do_sample=False)
        torch.testing.assert_close(generated, native.generate(ids[:1], max_new_tokens=4, do_sample=False))


def test_unsupported_family_is_refused_unchanged():
    from transformers import AutoModelForCausalLM, GPT2Config

    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        check_conversion_to_pruned_class(model)
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        convert_to_pruned_class(model)
    assert type(model).__name__ == "GPT2LMHeadModel" and model.config.model_type == "gpt2"


def test_a_block_holding_unknown_weights_is_refused_before_anything_changes():
    model = make_tiny_model("llama")
    model.model.layers[2].extra = torch.nn.Linear(4, 4)  # e.g. something a user attached
    blocks = [type(b) for b in model.model.layers]
    with pytest.raises(RuntimeError, match="in place"):
        check_conversion_to_pruned_class(model)
    with pytest.raises(RuntimeError, match="in place"):
        convert_to_pruned_class(model)
    assert [type(b) for b in model.model.layers] == blocks and type(model).__name__ == "LlamaForCausalLM"
    assert model.config.model_type == "llama" and model.model.layers[0].self_attn.config is model.config


def test_a_wrapped_stock_model_that_cannot_convert_is_refused_before_anything_changes():
    from peft import LoraConfig, get_peft_model

    from optimum_depth import DepthPruner, DepthPruningConfig

    model = make_tiny_model("llama")
    model.model.layers[2].extra = torch.nn.Linear(4, 4)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    state = copy.deepcopy(wrapped.state_dict())
    with pytest.raises(RuntimeError, match="in place"):
        remove_sublayers(wrapped, attention=[1], mlp=[4, 5])  # partial blocks: the class must change
    config = DepthPruningConfig(granularity="sublayer", criterion="finercut", num_layers_to_remove=2, seq_len=8)
    with pytest.raises(RuntimeError, match="in place"):
        DepthPruner(config).prune(wrapped, calibration=torch.randint(0, 100, (2, 8)))
    assert type(model).__name__ == "LlamaForCausalLM" and len(model.model.layers) == 6
    assert wrapped.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in wrapped.state_dict().items())
