"""Resuming a training run that pruned the model: give a freshly loaded model the checkpoint's structure first.

``Trainer.train(resume_from_checkpoint=...)`` loads the checkpoint's weights and optimizer state into the model it
was given, so that model must already have the pruned structure. :func:`prepare_model_for_resume` reads the pruning
events that :class:`~optimum_depth.training.callback.DepthPruningCallback` stored in the checkpoint's ``trainer_state.json``
and replays their plans (original block numbering; block or sublayer plans) on the model, in place, exactly as the
live run applied them, so parameter order (hence the optimizer state layout) matches the checkpoint's.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from torch import nn

from ..architectures import unwrap_model
from ..config import DepthPruningConfig
from ..constants import TRAINER_STATE_NAME
from ..errors import ConfigError, DataError, DataNotFoundError
from ..plan import PruningPlan
from ..provenance import original_layer_indices
from .schedule import PruningEvent, event_config

logger = logging.getLogger(__name__)

__all__ = ["CALLBACK_STATE_KEY", "model_structure", "read_pruning_state", "prepare_model_for_resume"]

CALLBACK_STATE_KEY = "DepthPruningCallback"
"""Key of the callback's state in ``TrainerState.stateful_callbacks`` (the callback's class name)."""


def model_structure(model: nn.Module) -> dict[str, list[int]]:
    """The block/sublayer structure of a (possibly wrapped) model, in original numbering where it applies.

    Args:
        model: A causal LM, possibly wrapped by peft or DDP.

    Returns:
        ``{"surviving_layers": [...], "skipped_attention": [...], "skipped_mlp": [...]}``.
    """
    config = unwrap_model(model).config
    return {
        "surviving_layers": original_layer_indices(config),
        "skipped_attention": sorted(int(i) for i in (getattr(config, "skipped_attention", None) or [])),
        "skipped_mlp": sorted(int(i) for i in (getattr(config, "skipped_mlp", None) or [])),
    }


def _resolve_checkpoint(checkpoint: str | os.PathLike) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    path = os.fspath(checkpoint)
    if not os.path.isdir(path):
        raise DataNotFoundError(f"Checkpoint directory {path!r} does not exist.")
    if not os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
        last = get_last_checkpoint(path)
        if last is None:
            raise DataNotFoundError(f"{path!r} holds neither {TRAINER_STATE_NAME} nor checkpoint-* directories.")
        path = last
    return path


def read_pruning_state(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """Reads the state :class:`DepthPruningCallback` stored in a Trainer checkpoint.

    Args:
        checkpoint: A ``checkpoint-N`` directory, or an output directory (its last checkpoint is used).

    Returns:
        The stored ``{"args": ..., "attributes": ...}``, or ``None`` if the checkpoint has none.

    Raises:
        FileNotFoundError: If no checkpoint is found.
        ValueError: If ``trainer_state.json`` is not valid JSON.
    """
    path = _resolve_checkpoint(checkpoint)
    file = os.path.join(path, TRAINER_STATE_NAME)
    try:
        with open(file, encoding="utf-8") as handle:
            trainer_state = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{file!r} is not valid JSON: {err}") from err
    saved = (trainer_state.get("stateful_callbacks") or {}).get(CALLBACK_STATE_KEY)
    if isinstance(saved, list):
        saved = saved[0] if saved else None
    return saved


def replay_events(model: nn.Module, config: DepthPruningConfig, events: list[dict[str, Any]]) -> None:
    """Applies recorded pruning events (their plans, in original numbering) to ``model`` in order.

    Args:
        model: The model, possibly wrapped by peft.
        config: The pruning config of the run.
        events: Entries of the callback's ``event_log``.
    """
    from ..pruner import DepthPruner
    from ..sublayers.surgery import convert_to_pruned_class

    for entry in events:
        plan = PruningPlan.from_dict(entry["plan"])
        event = PruningEvent(step=int(entry["step"]), num_to_remove=entry.get("num_to_remove"))
        if plan.granularity == "sublayer":
            convert_to_pruned_class(model)  # in place, like the live run (keeps the model object and its wrapper)
        DepthPruner(event_config(config, event)).apply(model, plan)
        pruning = getattr(unwrap_model(model).config, "pruning", None)
        if isinstance(pruning, dict):  # the live run recorded where its calibration came from
            pruning["calibration"] = dict(entry.get("calibration") or {})


def prepare_model_for_resume(model: nn.Module, checkpoint: str | os.PathLike) -> nn.Module:
    """Prunes ``model`` to the structure of a checkpoint written during a pruning run, before weights are loaded.

    Call it on the same starting model as the original run (e.g. ``from_pretrained`` of the same checkpoint, with
    the same peft wrapping), then ``trainer.train(resume_from_checkpoint=checkpoint)``. A model that already has
    the checkpoint's structure is returned unchanged. Sublayer events convert the model to its
    ``Pruned<Family>ForCausalLM`` class in place (the returned object is ``model``, wrappers stay valid).

    Args:
        model: The starting model, possibly wrapped by peft.
        checkpoint: A ``checkpoint-N`` directory, or the run's output directory (its last checkpoint is used).

    Returns:
        The same model, pruned like the checkpoint.

    Raises:
        FileNotFoundError: If no checkpoint is found.
        ValueError: If the checkpoint has no pruning state, or the model is neither the run's starting model nor
            already in the checkpoint's structure.
    """
    saved = read_pruning_state(checkpoint)
    if saved is None:
        raise ConfigError(
            f"{os.fspath(checkpoint)!r} holds no DepthPruningCallback state in {TRAINER_STATE_NAME}; it was not "
            "written by a run with DepthPruningCallback."
        )
    attributes = saved.get("attributes", {})
    target = attributes.get("structure")
    initial = attributes.get("initial_structure")
    done = int(attributes.get("events_done", 0))
    current = model_structure(model)
    if target is None or initial is None or current == target:
        return model
    if current != initial:
        raise ConfigError(
            f"The model's structure {current} is neither the run's starting structure {initial} nor the "
            f"checkpoint's {target}; load the same starting model as the original run."
        )
    config = DepthPruningConfig.from_dict(saved["args"]["config"])
    replay_events(model, config, attributes.get("event_log", [])[:done])
    if model_structure(model) != target:
        raise ConfigError(f"Replaying the checkpoint's events gave {model_structure(model)}, expected {target}.")
    logger.info("Pruned the model to the checkpoint's structure (%d events replayed).", done)
    return model
