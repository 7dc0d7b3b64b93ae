"""Configs and model classes of pruned checkpoints, registered with the transformers Auto classes.

``import optimum_depth`` (which imports this package) registers every ``pruned_<family>`` model type with
``AutoConfig`` at almost no cost: the families' config and modeling code is imported only when a pruned checkpoint
is first read (see :func:`.transformers_compat.register_deferred_config`). Building the first pruned config registers
the real config classes and the sublayer-pruned model classes with ``AutoConfig`` / ``AutoModelForCausalLM``, before
``from_pretrained`` picks the model class. So ``import optimum_depth`` then
``AutoModelForCausalLM.from_pretrained(path)`` loads a sublayer-pruned checkpoint with the package's own code, and no
``trust_remote_code`` prompt.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import Any

from .transformers_compat import register_deferred_config

PRUNED_CONFIG_CLASS_NAMES = {
    "pruned_llama": "PrunedLlamaConfig",
    "pruned_mistral": "PrunedMistralConfig",
    "pruned_qwen2": "PrunedQwen2Config",
    "pruned_qwen3": "PrunedQwen3Config",
    "pruned_gemma2": "PrunedGemma2Config",
    "pruned_gemma3_text": "PrunedGemma3TextConfig",
    "pruned_phi3": "PrunedPhi3Config",
    "pruned_smollm3": "PrunedSmolLM3Config",
}
"""Pruned ``model_type`` -> config class name in :mod:`.configuration_pruned` (known without importing it)."""

_LAZY_NAMES: dict[str, str] = {
    "PRUNED_CONFIG_CLASSES": "configuration_pruned",
    "PrunedConfigMixin": "configuration_pruned",
    **dict.fromkeys(PRUNED_CONFIG_CLASS_NAMES.values(), "configuration_pruned"),
    "PRUNED_CAUSAL_LM_CLASSES": "modeling_pruned",
    "PrunedDecoderLayer": "pruned_decoder",
    **{
        name.replace("Config", "ForCausalLM").replace("Gemma3TextFor", "Gemma3For"): "modeling_pruned"
        for name in PRUNED_CONFIG_CLASS_NAMES.values()
    },
}
"""Public names imported on first use, and their module."""

__all__ = ["PRUNED_CONFIG_CLASS_NAMES", "register_pruned_classes", *sorted(_LAZY_NAMES)]


_registered: set[str] = set()


def register_pruned_config_classes() -> None:
    """Imports the pruned config classes and registers them with ``AutoConfig`` (idempotent); the model classes
    follow when the first pruned config is built."""
    if "configs" in _registered:
        return
    from transformers import AutoConfig

    from .configuration_pruned import PRUNED_CONFIG_CLASSES, call_on_first_pruned_config

    for config_class in PRUNED_CONFIG_CLASSES.values():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    call_on_first_pruned_config(register_pruned_model_classes)
    _registered.add("configs")


def register_pruned_model_classes() -> None:
    """Imports the sublayer-pruned model classes and registers them with ``AutoModelForCausalLM`` (idempotent)."""
    if "models" in _registered:
        return
    from transformers import AutoModelForCausalLM

    from .modeling_pruned import PRUNED_CAUSAL_LM_CLASSES

    for model_class in PRUNED_CAUSAL_LM_CLASSES.values():
        with contextlib.suppress(ValueError):  # already registered
            AutoModelForCausalLM.register(model_class.config_class, model_class, exist_ok=True)
    _registered.add("models")


def register_pruned_classes() -> None:
    """Registers every pruned config with ``AutoConfig`` and every sublayer-pruned model class with
    ``AutoModelForCausalLM`` now (idempotent; ``import optimum_depth`` already does it lazily)."""
    register_pruned_config_classes()
    register_pruned_model_classes()


def _load_config_class(model_type: str) -> type:
    register_pruned_config_classes()
    module = importlib.import_module(".configuration_pruned", __name__)
    return getattr(module, PRUNED_CONFIG_CLASS_NAMES[model_type])


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module_name != "configuration_pruned":
        register_pruned_model_classes()
    register_pruned_config_classes()
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def _config_loader(model_type: str) -> Callable[[], type]:
    return lambda: _load_config_class(model_type)


for _model_type in PRUNED_CONFIG_CLASS_NAMES:
    register_deferred_config(_model_type, _config_loader(_model_type))
