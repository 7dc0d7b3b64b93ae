"""Configs (and, for sublayer pruning, model classes) of pruned checkpoints, registered with the Auto classes.

The configs are registered with ``AutoConfig`` on import. The sublayer-pruned model classes (which import the
families' modeling code) are imported and registered with ``AutoModelForCausalLM`` only when first needed: when a
pruned config is built (as ``from_pretrained`` does before it picks the model class), or when a class is asked for
by name. So ``import optimum_depth`` stays light, and loading a pruned checkpoint with the Auto classes just works.
"""

import contextlib
import importlib
from typing import Any

from transformers import AutoConfig

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
    call_on_first_pruned_config,
)

_MODEL_CLASSES = (
    "PRUNED_CAUSAL_LM_CLASSES",
    "PrunedDecoderLayer",
    "PrunedLlamaForCausalLM",
    "PrunedMistralForCausalLM",
    "PrunedPhi3ForCausalLM",
    "PrunedQwen2ForCausalLM",
    "PrunedQwen3ForCausalLM",
    "PrunedSmolLM3ForCausalLM",
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


def register_pruned_model_classes() -> None:
    """Imports the sublayer-pruned model classes and registers them with ``AutoModelForCausalLM`` (idempotent)."""
    from transformers import AutoModelForCausalLM

    from .modeling_pruned import PRUNED_CAUSAL_LM_CLASSES

    for model_class in PRUNED_CAUSAL_LM_CLASSES.values():
        AutoModelForCausalLM.register(model_class.config_class, model_class, exist_ok=True)


def register_pruned_classes() -> None:
    """Registers every pruned config with ``AutoConfig`` and every sublayer-pruned model class with
    ``AutoModelForCausalLM`` (idempotent)."""
    for config_class in PRUNED_CONFIG_CLASSES.values():
        with contextlib.suppress(ValueError):  # already registered
            AutoConfig.register(config_class.model_type, config_class)
    register_pruned_model_classes()


def __getattr__(name: str) -> Any:
    if name in _MODEL_CLASSES:
        value = getattr(importlib.import_module(".modeling_pruned", __name__), name)
        register_pruned_model_classes()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


for _config_class in PRUNED_CONFIG_CLASSES.values():
    with contextlib.suppress(ValueError):  # already registered
        AutoConfig.register(_config_class.model_type, _config_class)
call_on_first_pruned_config(register_pruned_model_classes)
