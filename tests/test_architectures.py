"""Architecture discovery for every supported family, through peft and DDP-style wrappers."""

from __future__ import annotations

import pytest
import torch

from optimum_depth import ARCHITECTURES, UnsupportedArchitectureError, get_architecture, get_decoder_layers
from optimum_depth.architectures import get_layer_parts, iter_layer_parts, unwrap_model

from tiny_models import make_tiny_model


def test_every_family_exposes_blocks_sublayers_and_norms(tiny_model, family):
    spec = get_architecture(tiny_model)
    assert spec.model_type == family
    layers = get_decoder_layers(tiny_model)
    assert len(layers) == tiny_model.config.num_hidden_layers == 6
    for parts in iter_layer_parts(tiny_model):
        assert parts.attention is not None and parts.mlp is not None
        assert len(parts.attention_norms) == len(spec.attention_norms) >= 1
        assert len(parts.mlp_norms) == len(spec.mlp_norms) >= 1
        assert hasattr(parts.attention, "layer_idx")
    for name in spec.per_layer_sequences:
        values = getattr(tiny_model.config, name, None)
        assert values is None or len(values) == 6


def test_gemma_norms_are_paired_with_their_sublayer():
    model = make_tiny_model("gemma2")
    spec = get_architecture(model)
    parts = get_layer_parts(get_decoder_layers(model)[0], spec)
    block = get_decoder_layers(model)[0]
    assert parts.attention_norms == [block.input_layernorm, block.post_attention_layernorm]
    assert parts.mlp_norms == [block.pre_feedforward_layernorm, block.post_feedforward_layernorm]


def test_wrappers_are_unwrapped():
    from peft import LoraConfig, get_peft_model

    model = make_tiny_model("qwen3")
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert unwrap_model(peft_model) is model
    assert get_decoder_layers(peft_model) is model.model.layers

    class FakeDDP(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap_model(FakeDDP(peft_model)) is model


def test_unsupported_family_lists_the_supported_ones():
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_layer=1, n_embd=8, n_head=2))
    with pytest.raises(UnsupportedArchitectureError) as info:
        get_architecture(model)
    for model_type in ARCHITECTURES:
        assert model_type in str(info.value)


def test_bare_backbone_is_refused():
    model = make_tiny_model("llama").model  # LlamaModel, not a causal LM
    with pytest.raises(UnsupportedArchitectureError, match="causal LM"):
        get_decoder_layers(model)
