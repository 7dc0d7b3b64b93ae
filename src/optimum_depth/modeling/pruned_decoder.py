"""The generic decoder of sublayer-pruned checkpoints: blocks whose attention or MLP may be absent.

This file imports only torch, transformers and the sibling ``configuration_pruned.py``; it is copied beside every
sublayer-pruned checkpoint together with ``modeling_pruned.py`` (the per-family classes) for ``trust_remote_code``.

* A block keeps the family's own attention, MLP and norm modules, so parameter names, weights and LoRA targets are
  those of the base model; a removed sublayer and its norm are ``None`` (no parameters, no zeroed weights).
* Attention modules keep ``layer_idx`` = block position. A block without attention has the layer type
  ``"moe"`` (:data:`NO_ATTENTION_LAYER_TYPE`) in ``config.layer_types``; every transformers cache built from the config gives that slot a
  ``DummyLayer`` that stores nothing, and ``Cache.get_seq_length()`` / mask sizing then read the first block that
  still has attention. A lazily grown ``DynamicCache()`` passed by the user gets the same dummy slots before the
  first block runs. So ``generate()`` and manual ``DynamicCache`` decoding stay exact even without block 0's
  attention.
* Each block's attention gets the mask of its own layer type (full or sliding), as in the base model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from transformers.cache_utils import Cache, DummyLayer, DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_pruned import NO_ATTENTION_LAYER_TYPE

CACHE_KWARG = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
"""How this transformers version names the KV-cache argument and output field (``cache`` from 5.24 on)."""

MASK_FUNCTIONS = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
"""Attention layer types the pruned decoder supports, and the mask each one gets."""


@dataclass(frozen=True)
class SublayerClasses:
    """The family's own modules a pruned decoder is built from.

    Args:
        attention: Self-attention class, called as ``attention(config=config, layer_idx=i)``.
        mlp: Feed-forward class, called as ``mlp(config)``.
        norm: RMSNorm class, called as ``norm(hidden_size, eps=rms_norm_eps)``.
        rotary: Rotary embedding class, called as ``rotary(config=config)``.
    """

    attention: type[nn.Module]
    mlp: type[nn.Module]
    norm: type[nn.Module]
    rotary: type[nn.Module]


def block_layer_types(config) -> list[str]:
    """Layer type of every block: the config's ``layer_types`` or the family default, with attention-free blocks
    marked :data:`NO_ATTENTION_LAYER_TYPE`.

    Args:
        config: A pruned config.

    Returns:
        One entry per block.
    """
    skipped = set(getattr(config, "skipped_attention", None) or [])
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None:
        default = "sliding_attention" if getattr(config, "sliding_window", None) is not None else "full_attention"
        layer_types = [default] * config.num_hidden_layers
    return [NO_ATTENTION_LAYER_TYPE if i in skipped else kind for i, kind in enumerate(layer_types)]


def reserve_attention_free_cache_slots(cache: Cache, layer_types: list[str]) -> None:
    """Gives a lazily grown cache (``DynamicCache()`` without config) dummy slots for blocks without attention.

    Without this, the first update by block 1 would create an empty regular slot 0, and ``get_seq_length()``
    (which reads slot 0) would return 0 forever. Caches built from the config already have the dummy slots.

    Args:
        cache: The cache passed to the model.
        layer_types: :func:`block_layer_types` of the model.
    """
    replicate = getattr(cache, "layer_class_to_replicate", None)
    layers = getattr(cache, "layers", None)
    if replicate is None or layers is None:
        return
    while len(layers) < len(layer_types):
        kind = layer_types[len(layers)]
        layers.append(DummyLayer() if kind == NO_ATTENTION_LAYER_TYPE else replicate())


class PrunedDecoderLayer(GradientCheckpointingLayer):
    """A pre-norm decoder block whose attention and/or MLP sublayer may have been removed.

    Args:
        config: The pruned config (``skipped_attention`` / ``skipped_mlp`` say what is absent).
        layer_idx: Position of the block.
        classes: The family's modules.
    """

    def __init__(self, config, layer_idx: int, classes: SublayerClasses):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.attention_type = block_layer_types(config)[layer_idx]
        eps = config.rms_norm_eps
        self.self_attn: nn.Module | None = None
        self.input_layernorm: nn.Module | None = None
        self.mlp: nn.Module | None = None
        self.post_attention_layernorm: nn.Module | None = None
        if layer_idx not in set(config.skipped_attention):
            self.input_layernorm = classes.norm(config.hidden_size, eps=eps)
            self.self_attn = classes.attention(config=config, layer_idx=layer_idx)
        if layer_idx not in set(config.skipped_mlp):
            self.post_attention_layernorm = classes.norm(config.hidden_size, eps=eps)
            self.mlp = classes.mlp(config)
        # Phi-3 applies dropout to each residual branch; the other families have none.
        dropout = getattr(config, "resid_pdrop", 0.0) or 0.0
        self.residual_dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        cache = cache if cache is not None else past_key_values
        if self.self_attn is not None and self.input_layernorm is not None:
            residual = hidden_states
            attended, _ = self.self_attn(
                hidden_states=self.input_layernorm(hidden_states),
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **{CACHE_KWARG: cache},
                **kwargs,
            )
            hidden_states = residual + self.residual_dropout(attended)
        if self.mlp is not None and self.post_attention_layernorm is not None:
            residual = hidden_states
            hidden_states = residual + self.residual_dropout(self.mlp(self.post_attention_layernorm(hidden_states)))
        return hidden_states


class PrunedDecoderModel:
    """Decoder of a sublayer-pruned model (embeddings, :class:`PrunedDecoderLayer` blocks, final norm).

    Mixed into a family's ``PreTrainedModel``; the subclass names its modules in ``sublayer_classes``.
    """

    sublayer_classes: SublayerClasses

    def __init__(self, config):
        super().__init__(config)  # type: ignore[call-arg]
        layer_types = block_layer_types(config)
        unknown = sorted({k for k in layer_types if k != NO_ATTENTION_LAYER_TYPE} - set(MASK_FUNCTIONS))
        if unknown:
            raise ValueError(f"Unsupported attention layer types {unknown} in a pruned {config.model_type} model.")
        config.layer_types = layer_types
        classes = self.sublayer_classes
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens: nn.Module = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([PrunedDecoderLayer(config, i, classes) for i in range(config.num_hidden_layers)])
        self.norm = classes.norm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = classes.rotary(config=config)
        self.gradient_checkpointing = False
        self.post_init()  # type: ignore[attr-defined]

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def attention_masks(self, inputs_embeds, attention_mask, cache, position_ids) -> dict:
        """The mask of every attention layer type present, keyed by type."""
        mask_kwargs = {
            "config": self.config,
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            CACHE_KWARG: cache,
            "position_ids": position_ids,
        }
        kinds = {k for k in self.config.layer_types if k != NO_ATTENTION_LAYER_TYPE}
        return {kind: MASK_FUNCTIONS[kind](**mask_kwargs) for kind in sorted(kinds)}

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        cache = cache if cache is not None else past_key_values
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        layer_types = self.config.layer_types
        if cache is not None:
            reserve_attention_free_cache_slots(cache, layer_types)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen).unsqueeze(0)
        if isinstance(attention_mask, dict):  # prepared by generate()
            masks: dict = attention_mask
        else:
            masks = self.attention_masks(inputs_embeds, attention_mask, cache, position_ids)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer, kind in zip(self.layers[: self.config.num_hidden_layers], layer_types, strict=True):
            hidden_states = layer(
                hidden_states,
                attention_mask=masks.get(kind),
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **{CACHE_KWARG: cache})  # type: ignore[arg-type]


class PrunedCausalLM:
    """Causal LM head over a :class:`PrunedDecoderModel`; the subclass names it in ``decoder_class``.

    Mixed in before a family's ``PreTrainedModel`` (and ``GenerationMixin``, listed last as in transformers).
    """

    decoder_class: type
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan: dict[str, str] | None = {"lm_head": "colwise_gather_output"}
    _pp_plan: dict[str, tuple[str, str]] | None = {"lm_head": (["hidden_states"], ["logits"])}  # type: ignore[dict-item]

    def __init__(self, config):
        super().__init__(config)  # type: ignore[call-arg]
        self.model = self.decoder_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()  # type: ignore[attr-defined]

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(cast(torch.Tensor, outputs.last_hidden_state), logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)  # type: ignore[attr-defined]
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_KWARG: getattr(outputs, CACHE_KWARG)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
