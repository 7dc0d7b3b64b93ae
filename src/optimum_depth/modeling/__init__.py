"""Configs (and, for sublayer pruning, model classes) of pruned checkpoints, registered with the Auto classes."""

import contextlib

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_pruned import (
    PRUNED_CONFIG_CLASSES,
    PrunedConfigMixin,
    PrunedGemma2Config,
    PrunedGemma3TextConfig,
    PrunedLlamaConfig,
    PrunedMistralConfig,
    PrunedPhi3Config,
    PrunedQwen2Config,
    PrunedQwen3Config,
    PrunedSmolLM3Config,
)
from .modeling_pruned import (
    PRUNED_CAUSAL_LM_CLASSES,
    PrunedDecoderLayer,
    PrunedLlamaForCausalLM,
    PrunedMistralForCausalLM,
    PrunedPhi3ForCausalLM,
    PrunedQwen2ForCausalLM,
    PrunedQwen3ForCausalLM,
    PrunedSmolLM3ForCausalLM,
)

__all__ = [
    "PRUNED_CAUSAL_LM_CLASSES",
    "PRUNED_CONFIG_CLASSES",
    "PrunedConfigMixin",
    "PrunedDecoderLayer",
    "PrunedGemma2Config",
    "PrunedGemma3TextConfig",
    "PrunedLlamaConfig",
    "PrunedLlamaForCausalLM",
    "PrunedMistralConfig",
    "PrunedMistralForCausalLM",
    "PrunedPhi3Config",
    "PrunedPhi3ForCausalLM",
    "PrunedQwen2Config",
    "PrunedQwen2ForCausalLM",
    "PrunedQwen3Config",
    "PrunedQwen3ForCausalLM",
    "PrunedSmolLM3Config",
    "PrunedSmolLM3ForCausalLM",
    "register_pruned_classes",
]


def register_pruned_classes() -> None:
    """Registers every pruned config with ``AutoConfig`` and every sublayer-pruned model class with
    ``AutoModelForCausalLM`` (idempotent)."""
    for config_class in PRUNED_CONFIG_CLASSES.values():
        with contextlib.suppress(ValueError):  # already registered
            AutoConfig.register(config_class.model_type, config_class)
    for model_class in PRUNED_CAUSAL_LM_CLASSES.values():
        AutoModelForCausalLM.register(model_class.config_class, model_class, exist_ok=True)


register_pruned_classes()
