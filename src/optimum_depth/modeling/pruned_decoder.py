"""The generic decoder of sublayer-pruned checkpoints: blocks whose attention or MLP may be absent.

This file imports only torch, transformers and its siblings ``pruned_layout.py`` / ``transformers_compat.py``; it is
copied beside every sublayer-pruned checkpoint together with ``modeling_pruned.py`` (the per-family classes) and
``configuration_pruned.py`` for ``trust_remote_code``.

* A block keeps the family's own attention, MLP and norm modules, so parameter names, weights and LoRA targets are
  those of the base model; a removed sublayer and its norm(s) are ``None`` (no parameters, no zeroed weights).
  Pre-norm families (Llama, Qwen, Mistral, Phi-3, SmolLM3) put one norm before each sublayer; Gemma 2 / 3 put one
  before and one after (``sandwich_norms``), and scale their embeddings.
* The KV cache follows the attention-first layout of :mod:`.pruned_layout`: the attention of the k-th block that
  has attention uses cache slot k, and ``config.layer_types`` lists those blocks' types first. So slot 0 always
  belongs to a real attention and every cache - built by ``generate()`` from the config, ``DynamicCache()`` grown
  lazily, a ``StaticCache`` - sees only attention layers where it looks for the sequence length, on every
  transformers release. Each block's own type is ``block.attention_type``.
* Each block's attention gets the mask (and, on Gemma 3, the rotary embedding) of its own layer type.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .pruned_layout import NO_ATTENTION_LAYER_TYPE, attention_cache_slots, block_layer_types, cache_layer_types
from .transformers_compat import CACHE_KWARG

MASK_FUNCTIONS = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
"""Attention layer types the pruned decoder supports, and the mask each one gets."""


@dataclass(frozen=True)
class SublayerClasses:
    """The family's own modules a pruned decoder is built from, and how the family wires them.

    Args:
        attention: Self-attention class, called as ``attention(config=config, layer_idx=i)``.
        mlp: Feed-forward class, called as ``mlp(config)``.
        norm: RMSNorm class, called as ``norm(hidden_size, eps=rms_norm_eps)``.
        rotary: Rotary embedding class, called as ``rotary(config=config)``.
        embedding: Scaled embedding class (Gemma), called as ``embedding(vocab, hidden, padding_idx,
            embed_scale=hidden ** 0.5)``; ``None`` for a plain ``nn.Embedding``.
        sandwich_norms: Whether each sublayer has a norm before and after it (Gemma: ``input_layernorm`` /
            ``post_attention_layernorm`` around the attention, ``pre_feedforward_layernorm`` /
            ``post_feedforward_layernorm`` around the MLP) instead of one before it.
        rotary_per_layer_type: Whether the rotary embedding is called with the layer type (Gemma 3:
            ``rotary(x, position_ids, layer_type)``, local and global frequencies).
    """

    attention: type[nn.Module]
    mlp: type[nn.Module]
    norm: type[nn.Module]
    rotary: type[nn.Module]
    embedding: type[nn.Module] | None = None
    sandwich_norms: bool = False
    rotary_per_layer_type: bool = False


def construction_config(config: Any) -> Any:
    """A shallow copy of ``config`` whose ``layer_types`` are the blocks' own, in block order.

    The families' modules read ``config.layer_types[layer_idx]`` (and SmolLM3 ``no_rope_layers[layer_idx]``) when
    they are built, with the block index; the pruned config lists attention types attention-first. Attention-free
    blocks read as full attention here (nothing is built from their entry).

    Args:
        config: A pruned config.

    Returns:
        The copy; modules built from it are re-pointed at ``config`` by :func:`adopt_config`.
    """
    view = copy.copy(config)
    view.layer_types = [
        "full_attention" if kind == NO_ATTENTION_LAYER_TYPE else kind for kind in block_layer_types(config)
    ]
    return view


def adopt_config(module: nn.Module, view: Any, config: Any) -> None:
    """Points every ``config`` attribute of ``module``'s submodules that is ``view`` to ``config``."""
    for child in module.modules():
        if vars(child).get("config") is view:
            child.config = config


class PrunedDecoderLayer(GradientCheckpointingLayer):
    """A decoder block whose attention and/or MLP sublayer may have been removed.

    Args:
        config: The pruned config (``skipped_attention`` / ``skipped_mlp`` say what is absent).
        layer_idx: Position of the block.
        classes: The family's modules.
        view: :func:`construction_config` of ``config`` (built once per model by the caller, or here).
    """

    def __init__(self, config, layer_idx: int, classes: SublayerClasses, view: Any = None):
        super().__init__()
        view = construction_config(config) if view is None else view
        block_types = block_layer_types(config)
        self.hidden_size = config.hidden_size
        self.attention_type = block_types[layer_idx]
        self.sandwich_norms = classes.sandwich_norms
        slot = attention_cache_slots(block_types)[layer_idx]

        def norm() -> nn.Module:
            return classes.norm(config.hidden_size, eps=config.rms_norm_eps)

        self.self_attn: nn.Module | None = None
        self.input_layernorm: nn.Module | None = None
        self.mlp: nn.Module | None = None
        self.post_attention_layernorm: nn.Module | None = None
        if classes.sandwich_norms:
            self.pre_feedforward_layernorm: nn.Module | None = None
            self.post_feedforward_layernorm: nn.Module | None = None
        if slot is not None:
            self.input_layernorm = norm()
            attention = classes.attention(config=view, layer_idx=layer_idx)
            attention.layer_idx = slot  # type: ignore[assignment]  # its KV-cache slot (attention-first layout)
            self.self_attn = attention
            if classes.sandwich_norms:
                self.post_attention_layernorm = norm()
        if layer_idx not in set(config.skipped_mlp):
            if classes.sandwich_norms:
                self.pre_feedforward_layernorm = norm()
                self.mlp = classes.mlp(view)
                self.post_feedforward_layernorm = norm()
            else:
                self.post_attention_layernorm = norm()
                self.mlp = classes.mlp(view)
        adopt_config(self, view, config)
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
            if self.sandwich_norms and self.post_attention_layernorm is not None:
                attended = self.post_attention_layernorm(attended)
            hidden_states = residual + self.residual_dropout(attended)
        if self.mlp is not None:
            residual = hidden_states
            if self.sandwich_norms:
                branch = self.pre_feedforward_layernorm(hidden_states)  # type: ignore[misc]
                branch = self.post_feedforward_layernorm(self.mlp(branch))  # type: ignore[misc]
            else:
                branch = self.mlp(self.post_attention_layernorm(hidden_states))  # type: ignore[misc]
            hidden_states = residual + self.residual_dropout(branch)
        return hidden_states


class PrunedDecoderModel:
    """Decoder of a sublayer-pruned model (embeddings, :class:`PrunedDecoderLayer` blocks, final norm).

    Mixed into a family's ``PreTrainedModel``; the subclass names its modules in ``sublayer_classes``.
    """

    sublayer_classes: SublayerClasses

    def __init__(self, config):
        super().__init__(config)  # type: ignore[call-arg]
        block_types = block_layer_types(config)
        unknown = sorted({k for k in block_types if k != NO_ATTENTION_LAYER_TYPE} - set(MASK_FUNCTIONS))
        if unknown:
            raise ValueError(f"Unsupported attention layer types {unknown} in a pruned {config.model_type} model.")
        if getattr(config, "use_bidirectional_attention", False):
            raise ValueError(f"Bidirectional attention is not supported in a pruned {config.model_type} model.")
        config.layer_types = cache_layer_types(block_types)
        classes = self.sublayer_classes
        view = construction_config(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        if classes.embedding is None:
            self.embed_tokens: nn.Module = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        else:
            self.embed_tokens = classes.embedding(
                config.vocab_size, config.hidden_size, self.padding_idx, embed_scale=config.hidden_size**0.5
            )
        self.layers = nn.ModuleList(
            [PrunedDecoderLayer(config, i, classes, view) for i in range(config.num_hidden_layers)]
        )
        self.norm = classes.norm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = classes.rotary(config=view)
        adopt_config(self.rotary_emb, view, config)
        self.gradient_checkpointing = False
        self.post_init()  # type: ignore[attr-defined]

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def attention_kinds(self) -> list[str]:
        """The attention type of every block (``block.attention_type``, kept up to date by surgery)."""
        return [str(layer.attention_type) for layer in self.layers[: self.config.num_hidden_layers]]

    def attention_masks(self, kinds: set[str], inputs_embeds, attention_mask, cache, position_ids) -> dict:
        """The mask of every attention layer type in ``kinds``, keyed by type."""
        mask_kwargs = {
            "config": self.config,
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            CACHE_KWARG: cache,
            "position_ids": position_ids,
        }
        return {kind: MASK_FUNCTIONS[kind](**mask_kwargs) for kind in sorted(kinds)}

    def position_embeddings(self, kinds: set[str], hidden_states, position_ids) -> dict:
        """The rotary embedding of every attention layer type in ``kinds``, keyed by type."""
        if self.sublayer_classes.rotary_per_layer_type:
            return {kind: self.rotary_emb(hidden_states, position_ids, kind) for kind in sorted(kinds)}
        shared = self.rotary_emb(hidden_states, position_ids)
        return dict.fromkeys(kinds, shared)

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
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0  # slot 0 always has attention
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen).unsqueeze(0)
        block_kinds = self.attention_kinds()
        kinds = {kind for kind in block_kinds if kind != NO_ATTENTION_LAYER_TYPE}
        if isinstance(attention_mask, dict):  # prepared by generate()
            masks: dict = attention_mask
        else:
            masks = self.attention_masks(kinds, inputs_embeds, attention_mask, cache, position_ids)

        hidden_states = inputs_embeds
        rotary = self.position_embeddings(kinds, hidden_states, position_ids)
        for layer, kind in zip(self.layers[: self.config.num_hidden_layers], block_kinds, strict=True):
            hidden_states = layer(
                hidden_states,
                attention_mask=masks.get(kind),
                position_embeddings=rotary.get(kind),
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
        softcap = getattr(self.config, "final_logit_softcapping", None)  # Gemma 2 (and Gemma 3 where set)
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
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
