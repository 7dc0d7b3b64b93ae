"""Sharded training (FSDP2 through accelerate, DeepSpeed) as the rest of the library sees it.

* :func:`sharded_training` tells which sharding a ``Trainer`` run asked for (FSDP or DeepSpeed), before anything is
  wrapped; :func:`is_sharded_model` tells whether a model's parameters are already sharded.
* :func:`enable_fsdp_on_cpu` lets ``accelerate launch --config_file <an FSDP config>`` really shard on a machine
  without GPUs (CPU tests and debugging). **Where CUDA (or XPU) exists it does nothing**, so a training script calls
  it unconditionally and runs unchanged with NCCL on GPUs.
* :func:`shard_like` shards a frozen module (the distillation teacher) on the device mesh of an FSDP2 student.
* :func:`full_state_dict_on_main_rank` gathers the full, unsharded weights of a model on rank 0 (a collective).

Why :func:`enable_fsdp_on_cpu` is needed (accelerate 1.15, ``accelerate/state.py``): without an accelerator,
``PartialState`` only starts a process group when ``cpu=True``, and that state (``MULTI_CPU``, gloo) is not among the
types ``AcceleratorState`` turns into ``DistributedType.FSDP``: the FSDP plugin is dropped without a warning and the
model is wrapped in DDP, or every rank trains alone (``DistributedType.NO``). The helper creates the process state
itself as ``MULTI_CPU``/gloo and labels it ``MULTI_GPU`` before ``AcceleratorState`` is built, so accelerate's own
FSDP branch runs (the device stays ``cpu``; ``AcceleratorState`` immediately records ``FSDP`` in the shared state).
``TrainingArguments`` must then reuse that state: ``accelerator_config={"use_configured_state": True}`` (a documented
option; :func:`~optimum_depth.training.recovery_training_arguments` adds it by itself). Nothing in accelerate or
transformers is patched.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any, cast

import torch
from torch import nn

from ..ranks import rank

logger = logging.getLogger(__name__)

__all__ = [
    "CPU_FSDP_ACCELERATOR_CONFIG",
    "enable_fsdp_on_cpu",
    "full_state_dict_on_main_rank",
    "is_fsdp_managed",
    "is_sharded_model",
    "original_class",
    "shard_like",
    "sharded_training",
]

CPU_FSDP_ACCELERATOR_CONFIG: dict[str, Any] = {"use_configured_state": True}
"""``TrainingArguments(accelerator_config=...)`` to use when :func:`enable_fsdp_on_cpu` returned ``True``."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def _accelerator_has_gpu() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def sharded_training(args: Any = None) -> str | None:
    """Which sharding the training run asked for, known before the model is wrapped.

    Looks at ``TrainingArguments`` (``fsdp``, ``deepspeed``), at the variables ``accelerate launch`` exports
    (``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``) and at an already configured ``AcceleratorState``.

    Args:
        args: The ``TrainingArguments`` (optional).

    Returns:
        ``"fsdp"``, ``"deepspeed"`` or ``None``.
    """
    if (args is not None and getattr(args, "deepspeed", None)) or _env_flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if (args is not None and getattr(args, "fsdp", None)) or _env_flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state:
        state = AcceleratorState._shared_state
        if state.get("deepspeed_plugin") is not None:
            return "deepspeed"
        if state.get("fsdp_plugin") is not None:
            return "fsdp"
    return None


def is_fsdp_managed(model: nn.Module) -> bool:
    """Whether FSDP (``fully_shard`` or the FSDP1 wrapper) manages some module of ``model``."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


def is_sharded_model(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are already sharded (FSDP, a ``DistributedConfig`` load, DeepSpeed ZeRO-3).

    Args:
        model: Any module.

    Returns:
        ``True`` when blocks can no longer be removed or scored on one rank.
    """
    from torch.distributed.tensor import DTensor

    if is_fsdp_managed(model):
        return True
    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters())


def original_class(module: nn.Module) -> type:
    """The class a module had before ``fully_shard`` swapped it for its ``FSDP<Name>`` subclass."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def enable_fsdp_on_cpu(timeout: float | None = None) -> bool:
    """Lets an ``accelerate launch`` FSDP run shard on a CPU-only machine (gloo); does nothing where CUDA exists.

    Call it at the start of the training script, before ``TrainingArguments`` is built, and build the arguments with
    ``accelerator_config=CPU_FSDP_ACCELERATOR_CONFIG`` when it returns ``True``
    (:func:`~optimum_depth.training.recovery_training_arguments` does both). Calling it again is harmless.

    Args:
        timeout: Process-group timeout in seconds (``None``: torch's default, 30 minutes); the equivalent of
            ``TrainingArguments.ddp_timeout``, which the reused state does not read.

    Returns:
        ``True`` when the CPU set-up is active (FSDP requested by ``accelerate launch``, several processes, no
        CUDA/XPU); ``False`` otherwise (then build ``TrainingArguments`` as usual).

    Raises:
        RuntimeError: If a process state of another kind was already created in this process.
    """
    if not _env_flag("ACCELERATE_USE_FSDP") or int(os.environ.get("WORLD_SIZE", "1")) < 2 or _accelerator_has_gpu():
        return False
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    already = dict(PartialState._shared_state)
    if already and already.get("distributed_type") in (DistributedType.FSDP, DistributedType.MULTI_GPU):
        return True  # called before, in this process
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timedelta(seconds=timeout)}
    state = PartialState(cpu=True, **kwargs)  # init_process_group("gloo"); MULTI_CPU, device cpu
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise RuntimeError(
            f"enable_fsdp_on_cpu must run before anything else sets up accelerate; found {state.distributed_type}."
        )
    PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
    logger.info("FSDP on CPU: %d gloo processes; accelerate's FSDP plugin will shard the model.", state.num_processes)
    return True


def shard_like(module: nn.Module, reference: nn.Module, reshard_after_forward: bool = True) -> nn.Module:
    """Shards a frozen model with FSDP2 on the device mesh of an FSDP2-managed ``reference`` (e.g. the student).

    Each decoder block becomes its own ``fully_shard`` unit, then the root; the parameters move to the mesh's
    device. The module stays in eval mode with no parameter requiring grad. Its forward becomes a collective: every
    rank must run it on every batch (true of training steps, and of evaluation with accelerate's ``even_batches``).

    Args:
        module: The model to shard (plain, not dispatched with a ``device_map``, not quantized).
        reference: An FSDP2-managed model whose parameters are ``DTensor``s.
        reshard_after_forward: Free the gathered weights of each block after its forward (FSDP2's ZeRO-3 mode).

    Returns:
        ``module``, sharded in place.

    Raises:
        ValueError: If ``reference`` has no sharded (``DTensor``) parameter.
    """
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from ..architectures import get_decoder_layers

    mesh = next((p.device_mesh for p in reference.parameters() if isinstance(p, DTensor)), None)
    if mesh is None:
        raise ValueError("The reference model has no FSDP2-sharded (DTensor) parameter.")
    module.requires_grad_(False)
    for block in get_decoder_layers(module):
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return module.eval()


def full_state_dict_on_main_rank(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of ``model`` as CPU tensors on rank 0, and ``{}`` on the other ranks.

    For an FSDP-managed model this is a collective (every rank must call it): each ``DTensor`` is all-gathered in
    turn and only rank 0 keeps a CPU copy, so the other ranks never hold more than one full parameter. Otherwise rank
    0 copies its own weights (a copy, not aliases: the result can be modified without touching the live model).

    Args:
        model: A plain, peft or FSDP2-sharded model (not the DDP wrapper: pass ``.module``).

    Returns:
        The state dict (keys as ``model.state_dict()``; FSDP2 adds no prefix).
    """

    if is_fsdp_managed(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        from torch.distributed.tensor import DTensor

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = cast(dict[str, torch.Tensor], get_model_state_dict(model, options=options))
        # A shard that already is the whole tensor on CPU (one process, or a replicated buffer) comes back as an
        # alias of the live storage: copy it, so that merging adapters into the result leaves the model alone.
        live = {
            (t.to_local() if isinstance(t, DTensor) else t).untyped_storage().data_ptr()
            for t in (*model.parameters(), *model.buffers())
        }
        return {k: v.clone() if v.untyped_storage().data_ptr() in live else v for k, v in state.items()}
    if rank() != 0:
        return {}
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
