"""Folding LoRA adapters into the pruned model and saving a native checkpoint (plain ``from_pretrained``)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..publishing.saving import save_pruned_model

logger = logging.getLogger(__name__)

__all__ = ["merge_adapters", "merge_and_save"]


def _has_4bit_layers(model: nn.Module) -> bool:
    return any(type(m).__name__ in ("Linear4bit", "Params4bit") for m in model.modules())


def merge_adapters(model: Any, full_precision_base: Any = None) -> Any:
    """Returns a plain transformers model with the LoRA adapters of ``model`` merged into its weights.

    Args:
        model: A trained ``PeftModel`` (LoRA or QLoRA), or a plain model (returned as is).
        full_precision_base: QLoRA only: the same pruned model loaded in full precision. The adapters, trained
            against the 4-bit weights, are merged into these weights, so the saved checkpoint is not quantized.

    Returns:
        The merged model (for QLoRA, ``full_precision_base`` with the adapters merged in).

    Raises:
        ValueError: If a 4-bit model is given without ``full_precision_base``, or the base's structure differs.
    """
    if not hasattr(model, "peft_config"):
        return model
    if not _has_4bit_layers(model):
        return model.merge_and_unload()
    if full_precision_base is None:
        raise ConfigError(
            "This adapter was trained on a 4-bit base: pass `full_precision_base` (the same pruned checkpoint loaded "
            "in full precision) to merge it into unquantized weights."
        )
    from peft import PeftModel

    base_layers = getattr(full_precision_base.config, "num_hidden_layers", None)
    trained_layers = getattr(model.get_base_model().config, "num_hidden_layers", None)
    if base_layers != trained_layers:
        raise ConfigError(
            f"`full_precision_base` has {base_layers} blocks but the adapter was trained on {trained_layers}."
        )
    with tempfile.TemporaryDirectory(prefix="optimum-depth-adapter-") as tmp:
        model.save_pretrained(tmp)
        merged = PeftModel.from_pretrained(full_precision_base, tmp).merge_and_unload()
    return merged


def merge_and_save(
    model: Any,
    save_directory: str | os.PathLike,
    tokenizer=None,
    full_precision_base: Any = None,
    recovery: dict[str, Any] | None = None,
    **save_kwargs,
) -> Path:
    """Merges LoRA adapters (if any) and saves a native safetensors checkpoint with its provenance.

    Args:
        model: The trained model (``PeftModel`` or plain).
        save_directory: Output directory (written atomically).
        tokenizer: Saved beside the weights.
        full_precision_base: QLoRA only, see :func:`merge_adapters`.
        recovery: What the recovery did (e.g. ``RecoveryConfig.to_dict()`` plus data and steps); stored as
            ``config.recovery`` in ``config.json``.
        **save_kwargs: Passed to ``save_pretrained``.

    Returns:
        The output directory.
    """
    merged = merge_adapters(model, full_precision_base=full_precision_base)
    if recovery is not None:
        merged.config.recovery = dict(recovery)
    path = save_pruned_model(merged, save_directory, tokenizer=tokenizer, **save_kwargs)
    logger.info("Saved the recovered model to %s", path)
    return path
