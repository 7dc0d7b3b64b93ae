"""Configs (and, for sublayer pruning, model classes) of pruned checkpoints, registered with the Auto classes."""

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
)

__all__ = [
    "PRUNED_CONFIG_CLASSES",
    "PrunedConfigMixin",
    "PrunedGemma2Config",
    "PrunedGemma3TextConfig",
    "PrunedLlamaConfig",
    "PrunedMistralConfig",
    "PrunedPhi3Config",
    "PrunedQwen2Config",
    "PrunedQwen3Config",
    "register_pruned_classes",
]


def register_pruned_classes() -> None:
    """Registers every pruned config with ``AutoConfig`` (idempotent)."""
    for config_class in PRUNED_CONFIG_CLASSES.values():
        try:
            AutoConfig.register(config_class.model_type, config_class)
        except ValueError:  # already registered
            pass


register_pruned_classes()
