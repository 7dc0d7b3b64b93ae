"""Multi-process support for pruning during training: one decision broadcast to every rank, and the checks that
decide when pruning can happen (under FSDP/DeepSpeed: once, before the model is sharded) or refuse set-ups where it
cannot work (iterative pruning under FSDP/DeepSpeed, DDP without unused-parameter detection).

Why DDP needs ``find_unused_parameters=True``: DDP's reducer is built once, when ``Trainer`` wraps the model, from
the list of parameters at that time, and callbacks never see the wrapper to rebuild it. After blocks are removed
their parameters stay in the reducer but no longer get gradients; with unused-parameter detection the reducer marks
them ready every step and all-reduces the rest, without it the next backward fails. The removed tensors then stay
referenced by the reducer until training ends (in a single process they are freed at once).
"""

from __future__ import annotations

import logging
from typing import Any

import torch.distributed as dist
from torch import nn
from transformers import PreTrainedModel

from ..errors import UnsupportedParallelismError
from ..ranks import decide_on_main_rank, rank, world_size
from .fsdp import is_sharded_model, sharded_training

logger = logging.getLogger(__name__)

__all__ = [
    "UnsupportedParallelismError",
    "world_size",
    "rank",
    "decide_on_main_rank",
    "check_parallelism_before_wrapping",
    "refuse_late_sharded_pruning",
    "check_wrapped_model",
    "all_ranks_agree",
]


def _iterative_refusal(sharding: str) -> str:
    engine = {"fsdp": "FSDP", "deepspeed": "DeepSpeed"}[sharding]
    return (
        f"DepthPruningCallback cannot prune during {engine} training (schedule='iterative'): {engine} shards every "
        "block's parameters (and optimizer state) when training starts, so a block cannot be scored on one rank or "
        "removed later. Prune before training instead: schedule='one_shot' with this callback (it then prunes when "
        f"the Trainer is built, before {engine} wraps the model), or DepthPruner(config).prune(model, ...) before "
        "building the Trainer; or use DDP (accelerate launch --config_file examples/accelerate/ddp.yaml), which "
        "supports iterative pruning."
    )


def check_parallelism_before_wrapping(args, config, model: nn.Module | None, optimizer) -> str | None:
    """Checks, when the ``Trainer`` is built, whether and how pruning can run under the requested parallelism.

    Under FSDP or DeepSpeed the callback prunes right away (before the Trainer wraps and shards the model), which
    works only for one one-shot event, on a model whose parameters are not sharded yet, with no optimizer built on
    the unpruned model.

    Args:
        args: The ``TrainingArguments``.
        config: The :class:`~optimum_depth.DepthPruningConfig`.
        model: The model the Trainer holds.
        optimizer: The optimizer given to the Trainer (``None`` unless passed in ``optimizers=``).

    Returns:
        ``"fsdp"`` or ``"deepspeed"`` when the run shards the model (prune now), ``None`` otherwise (DDP or one
        process: prune in ``on_train_begin`` as usual).

    Raises:
        UnsupportedParallelismError: Iterative pruning under FSDP/DeepSpeed, a user-built optimizer, or a model
            already sharded.
    """
    sharding = sharded_training(args)
    if sharding is None:
        return None
    engine = {"fsdp": "FSDP", "deepspeed": "DeepSpeed"}[sharding]
    if config.schedule != "one_shot":
        raise UnsupportedParallelismError(_iterative_refusal(sharding))
    if optimizer is not None:
        raise UnsupportedParallelismError(
            f"Under {engine}, DepthPruningCallback prunes when the Trainer is built, before the model is wrapped, "
            "but this Trainer was given an optimizer (`optimizers=`) made for the unpruned model. Let the Trainer "
            "create it (TrainingArguments `optim`, `learning_rate`, ...), or prune with DepthPruner before building "
            "the optimizer."
        )
    if model is not None and is_sharded_model(model):
        raise UnsupportedParallelismError(
            "The model's parameters are already sharded (loaded with `distributed_config`, or by DeepSpeed ZeRO-3 "
            "zero.Init), so blocks can no longer be scored or removed. Prune the unsharded model first "
            "(DepthPruner(config).prune(model, ...), save_pruned_model), then load the pruned checkpoint sharded."
        )
    return sharding


def refuse_late_sharded_pruning(args) -> None:
    """Refuses pruning in ``on_train_begin`` of a sharded run (the model is wrapped and sharded by then).

    Raises:
        UnsupportedParallelismError: Under FSDP or DeepSpeed.
    """
    sharding = sharded_training(args)
    if sharding is None:
        return
    engine = {"fsdp": "FSDP", "deepspeed": "DeepSpeed"}[sharding]
    raise UnsupportedParallelismError(
        f"Under {engine}, DepthPruningCallback must prune before the Trainer shards the model, when the Trainer is "
        "built: pass it to the constructor (Trainer(..., callbacks=[DepthPruningCallback(...)]) or "
        "build_recovery_trainer(..., callbacks=[...])) instead of trainer.add_callback(...) after it."
    )


def _find_unused_parameters(args, model: nn.Module) -> bool:
    """The ``find_unused_parameters`` value ``Trainer`` gives DDP (same rule as ``Trainer._build_accelerator_args``)."""
    if getattr(args, "ddp_find_unused_parameters", None) is not None:
        return bool(args.ddp_find_unused_parameters)
    if isinstance(model, PreTrainedModel):
        checkpointing = bool(model.is_activation_checkpointing) or bool(
            getattr(args, "activation_checkpointing", False)
        )
        return not checkpointing
    return True


def check_wrapped_model(args, model: nn.Module) -> None:
    """Checks, when training starts, that the (possibly DDP-wrapped) model can be pruned mid-training.

    Args:
        args: The ``TrainingArguments``.
        model: The model ``Trainer`` passes to callbacks.

    Raises:
        UnsupportedParallelismError: For FSDP-managed models, or multi-process DDP without unused-parameter
            detection.
    """
    for module in model.modules():
        name = type(module).__name__
        if name in ("FullyShardedDataParallel", "FSDPModule") or name.startswith("FSDP"):
            raise UnsupportedParallelismError(
                "DepthPruningCallback does not support FSDP-wrapped models; prune before training instead."
            )
    if world_size() > 1 and not _find_unused_parameters(args, model):
        raise UnsupportedParallelismError(
            "Pruning during multi-process DDP training needs `ddp_find_unused_parameters=True` in TrainingArguments "
            "(Trainer turns it off when activation checkpointing is on; non-reentrant checkpointing, the default, "
            "works with it). DDP's reducer keeps the parameter list it was built with, and removed blocks no longer "
            "receive gradients."
        )


def all_ranks_agree(value: str) -> bool:
    """Whether every rank holds the same string (used to verify that all ranks pruned the same way).

    Args:
        value: A short digest computed on each rank.

    Returns:
        ``True`` in a single process, or when all ranks hold ``value``.
    """
    if world_size() == 1:
        return True
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return all(item == value for item in gathered)
