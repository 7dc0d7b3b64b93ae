"""Multi-process support for pruning during training: one decision broadcast to every rank, and the checks that
refuse set-ups where pruning mid-training cannot work (FSDP, DeepSpeed, DDP without unused-parameter detection).

Why DDP needs ``find_unused_parameters=True``: DDP's reducer is built once, when ``Trainer`` wraps the model, from
the list of parameters at that time, and callbacks never see the wrapper to rebuild it. After blocks are removed
their parameters stay in the reducer but no longer get gradients; with unused-parameter detection the reducer marks
them ready every step and all-reduces the rest, without it the next backward fails. The removed tensors then stay
referenced by the reducer until training ends (in a single process they are freed at once).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch.distributed as dist
from torch import nn
from transformers import PreTrainedModel

from ..errors import UnsupportedParallelismError

logger = logging.getLogger(__name__)

__all__ = [
    "UnsupportedParallelismError",
    "world_size",
    "rank",
    "decide_on_main_rank",
    "check_parallelism_before_training",
    "check_wrapped_model",
    "all_ranks_agree",
]

T = TypeVar("T")


def world_size() -> int:
    """Number of processes of the default ``torch.distributed`` group (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """Rank of this process in the default group (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def decide_on_main_rank(decide: Callable[[], T], to_json: Callable[[T], Any], from_json: Callable[[Any], T]) -> T:
    """Runs ``decide`` on rank 0 only and gives every rank the same result.

    The result travels as JSON (never pickled code objects). If ``decide`` raises on rank 0, every rank raises, so
    no process is left waiting in a collective.

    Args:
        decide: Computes the decision (e.g. scores and a pruning plan) on rank 0.
        to_json: Turns the decision into JSON-serialisable data.
        from_json: Rebuilds the decision from that data.

    Returns:
        The decision, identical on every rank.

    Raises:
        RuntimeError: On ranks other than 0, when rank 0 failed (rank 0 re-raises its own error).
    """
    if world_size() == 1:
        return decide()
    payload: list[Any] = [None]
    result: T | None = None
    if rank() == 0:
        try:
            result = decide()
            payload[0] = json.dumps({"ok": to_json(result)})
        except BaseException as err:
            payload[0] = json.dumps({"error": f"{type(err).__name__}: {err}"})
            dist.broadcast_object_list(payload, src=0)
            raise
    dist.broadcast_object_list(payload, src=0)
    message = json.loads(payload[0])
    if "error" in message:
        raise RuntimeError(f"Rank 0 failed while deciding what to prune: {message['error']}")
    if rank() == 0 and result is not None:
        return result
    return from_json(message["ok"])


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def check_parallelism_before_training(args) -> None:
    """Refuses FSDP and DeepSpeed runs (checked when the ``Trainer`` is built, before anything changes).

    Args:
        args: The ``TrainingArguments``.

    Raises:
        UnsupportedParallelismError: Under FSDP or DeepSpeed.
    """
    if getattr(args, "fsdp", None) or _flag("ACCELERATE_USE_FSDP"):
        raise UnsupportedParallelismError(
            "DepthPruningCallback does not support FSDP: FSDP shards and flattens the parameters of the blocks it "
            "wraps, so blocks cannot be removed mid-training. Prune before training instead (DepthPruner(config)"
            ".prune(model, ...)), then train the pruned model with FSDP; or use DDP."
        )
    if getattr(args, "deepspeed", None) or _flag("ACCELERATE_USE_DEEPSPEED"):
        raise UnsupportedParallelismError(
            "DepthPruningCallback does not support DeepSpeed: its engine partitions parameters and optimizer state "
            "at start-up. Prune before training instead (DepthPruner(config).prune(model, ...)), or use DDP."
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
