"""Folding LoRA adapters into the pruned model and saving a native checkpoint (plain ``from_pretrained``).

:func:`save_recovered_model` is the one call that saves a trained model whatever its wrapping (plain, peft, DDP,
FSDP2-sharded, in one or several processes): every rank calls it, the weights are gathered on rank 0 when they are
sharded, LoRA adapters are merged into a copy (the live model is not changed) or, with ``in_place=True`` in a single
process, into the model itself (no second copy of the weights), rank 0 writes the checkpoint once with
:func:`~optimum_depth.publishing.saving.save_pruned_model` (safetensors, provenance kept), and every rank returns
only when it is written, or raises if rank 0 failed.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import CheckpointError, ConfigError, UnsupportedParallelismError
from ..publishing.saving import save_pruned_model
from ..ranks import decide_on_main_rank, world_size
from .fsdp import full_state_dict_on_main_rank, is_fsdp_managed, is_sharded_model, original_class

logger = logging.getLogger(__name__)

__all__ = ["merge_adapters", "save_recovered_model"]


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
    """Deprecated: ``save_recovered_model(model, ..., in_place=True)`` does the same."""
    warnings.warn(
        "merge_and_save is deprecated; use save_recovered_model(model, save_directory, ..., in_place=True).",
        FutureWarning,
        stacklevel=2,
    )
    return save_recovered_model(
        model,
        save_directory,
        tokenizer,
        full_precision_base=full_precision_base,
        recovery=recovery,
        in_place=True,
        **save_kwargs,
    )


def _plain_copy(model: Any, state: dict[str, torch.Tensor]) -> Any:
    """A plain (unsharded) copy of ``model``'s architecture holding ``state``, built without a second allocation.

    The skeleton is created on the meta device (no memory) and takes the gathered tensors with ``assign=True``, so
    rank 0 holds one CPU copy of the weights. A peft model gets the same adapter, then the caller merges it.
    """
    peft_config = getattr(model, "peft_config", None)
    base = model.get_base_model() if peft_config is not None else model
    dtype = next(base.parameters()).dtype
    with torch.device("meta"):
        cls: Any = original_class(base)
        skeleton: Any = cls._from_config(copy.deepcopy(base.config), dtype=dtype)
        if peft_config is not None:
            from peft import get_peft_model

            names = list(peft_config)
            if len(names) != 1:
                raise ConfigError(f"The model holds several adapters {names}; merge or delete all but one first.")
            skeleton = get_peft_model(skeleton, copy.deepcopy(peft_config[names[0]]), adapter_name=names[0])
    result = skeleton.load_state_dict(state, strict=False, assign=True)
    tied = bool(getattr(base.config, "tie_word_embeddings", False))
    missing = [k for k in result.missing_keys if not (tied and k.endswith("lm_head.weight"))]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"The gathered weights do not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}."
        )
    if tied:
        skeleton.tie_weights()
    return skeleton


def save_recovered_model(
    model: Any,
    save_directory: str | os.PathLike,
    tokenizer=None,
    *,
    full_precision_base: Any = None,
    recovery: dict[str, Any] | None = None,
    in_place: bool = False,
    **save_kwargs,
) -> Path:
    """Saves a trained (pruned) model as one native checkpoint, whatever its wrapping; call it on every rank.

    * FSDP2-sharded (``trainer.model`` under an accelerate FSDP config): the full weights are gathered on rank 0
      (:func:`~optimum_depth.training.fsdp.full_state_dict_on_main_rank`, a collective);
    * DDP (the wrapper or ``trainer.model``), plain or peft: rank 0 uses its own replica;
    * LoRA / QLoRA adapters are merged into a copy (QLoRA: into ``full_precision_base``), so ``model`` is not
      modified and can keep training or evaluating; with ``in_place=True`` (one process, unsharded) they are merged
      into ``model`` itself, which saves the copy's memory and leaves ``model`` a plain merged model;
    * rank 0 writes the folder once with :func:`~optimum_depth.publishing.saving.save_pruned_model` (safetensors,
      staged, the pruning provenance in ``config.json`` kept, ``config.recovery`` added); the other ranks write
      nothing and wait for the outcome: they return once the checkpoint is complete, or raise if rank 0 failed, so
      no rank is left waiting and nothing half-written stays behind.

    Args:
        model: The trained model (``trainer.model``, ``trainer.model_wrapped`` or the model given to the Trainer).
        save_directory: Output folder (what rank 0 sees; use a shared filesystem across machines).
        tokenizer: Saved beside the weights.
        full_precision_base: QLoRA only: the pruned model in full precision (see :func:`merge_adapters`).
        recovery: What the recovery did (e.g. ``RecoveryConfig.to_dict()``), stored as ``config.recovery``.
        in_place: Merge LoRA adapters into ``model`` itself instead of a copy (single process, unsharded only);
            ``config.recovery`` then stays on the merged model.
        **save_kwargs: Passed to ``save_pretrained`` (e.g. ``max_shard_size``).

    Returns:
        The output folder, on every rank.

    Raises:
        ConfigError: QLoRA weights under FSDP, ``in_place`` with several processes or a sharded model, or a target
            that is a file (on every rank).
        UnsupportedParallelismError: Parameters partitioned without FSDP (DeepSpeed ZeRO-3, tensor parallelism).
        CheckpointError: If the gathered weights do not fit the model's architecture.
        RuntimeError: On ranks other than 0, when rank 0 failed to write.
    """
    if isinstance(model, DistributedDataParallel):
        model = model.module
    sharded = is_fsdp_managed(model)
    if not sharded and is_sharded_model(model):
        raise UnsupportedParallelismError(
            "This model's parameters are partitioned without FSDP (DeepSpeed ZeRO-3, tensor parallelism), which "
            "save_recovered_model does not gather: use trainer.save_model() (with DeepSpeed's "
            "stage3_gather_16bit_weights_on_model_save), then merge adapters in one process with merge_and_save."
        )
    if sharded and full_precision_base is not None:
        raise ConfigError("QLoRA (4-bit weights) is not supported under FSDP; save_recovered_model takes no base.")
    if in_place and (sharded or world_size() > 1):
        raise ConfigError(
            "in_place=True merges the adapters into the live model of one process; this model is sharded or runs in "
            "several processes: call save_recovered_model(model, ...) without it on every rank (it gathers the "
            "weights on rank 0 and merges a copy)."
        )
    needs_copy = full_precision_base is None and not in_place and (sharded or hasattr(model, "peft_config"))
    state = full_state_dict_on_main_rank(model) if needs_copy else {}

    def write() -> Path:
        if full_precision_base is not None:
            merged = merge_adapters(model, full_precision_base=full_precision_base)
        elif state:
            merged = merge_adapters(_plain_copy(model, state))
        elif in_place:
            merged = merge_adapters(model)  # the adapters folded into the live weights
        else:
            merged = model  # plain and unsharded: saved straight from the live weights
        had_recovery = hasattr(merged.config, "recovery")
        previous = getattr(merged.config, "recovery", None)
        if recovery is not None:
            merged.config.recovery = dict(recovery)
        try:
            path = save_pruned_model(merged, save_directory, tokenizer=tokenizer, **save_kwargs)
        finally:
            if merged is model and recovery is not None and not in_place:  # the live model's config stays as it was
                if had_recovery:
                    merged.config.recovery = previous
                else:
                    del merged.config.recovery
        logger.info("Saved the recovered model to %s", path)
        return path

    try:
        return decide_on_main_rank(write, to_json=str, from_json=Path, action="writing the recovered model")
    finally:
        state.clear()  # rank 0's gathered copy
