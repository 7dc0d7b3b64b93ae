"""Recovery by knowledge distillation from the dense model, inside the ordinary ``transformers.Trainer``.

:class:`DistillationTrainer` overrides only ``compute_loss``: the pruned student is trained towards the dense teacher's
next-token distributions (KL with a temperature), optionally mixed with the usual LM loss, and optionally with a
**hidden-state alignment** between each kept block's output and the output of the *same original block* in the
teacher. The pairing comes from the student's provenance (``config.surviving_layers``), so it stays right after
several prunings (or iterative pruning during training). Everything else (optimizer, schedule, checkpoints, resume,
DDP/FSDP through accelerate, LoRA through peft) is the Trainer's own.

The teacher is frozen and in eval mode; it may be a 4-bit or offloaded copy. Instead of a teacher, the training data
may carry precomputed top-k teacher logits (:mod:`.teacher_logits`), so a teacher that does not fit next to the
student, or repeated epochs, do not pay the teacher forward again.

Under FSDP2 (an accelerate FSDP config with ``fsdp_version: 2``) the teacher is sharded too, automatically: the first
``compute_loss`` finds the student FSDP-managed and shards the teacher on the student's device mesh
(:func:`~optimum_depth.training.fsdp.shard_like`, one unit per decoder block), so each rank holds ``1/world_size``
of it. The teacher is not given to accelerate (FSDP2's ``prepare`` pairs a model with its optimizer); its forward is
a collective that every rank runs for every batch.

Why not trl's ``GKDTrainer``: it is built on ``SFTTrainer`` with chat-formatted datasets and on-policy generation;
recovering a pruned model needs plain packed text, a frozen teacher (or stored logits) and block-wise alignment, which
a ``compute_loss`` override gives with no extra dependency.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from ..architectures import get_decoder_layers, unwrap_model
from ..errors import ConfigError
from ..provenance import original_layer_indices, source_num_layers
from .distillation_losses import hidden_alignment_loss, kd_loss, topk_kd_loss
from .fsdp import is_fsdp_managed, shard_like

logger = logging.getLogger(__name__)

__all__ = ["TEACHER_KEYS", "DistillationTrainer", "aligned_block_pairs", "record_block_outputs"]

TEACHER_KEYS = ("teacher_topk_values", "teacher_topk_indices", "teacher_logsumexp")
"""Batch keys of precomputed teacher logits (see :mod:`.teacher_logits`)."""


def aligned_block_pairs(student: nn.Module, teacher: nn.Module, which: str = "all") -> list[tuple[int, int]]:
    """Pairs each kept student block with the teacher block of the same original index.

    Args:
        student: The pruned model (possibly wrapped).
        teacher: The dense model it was pruned from (possibly itself a pruned ancestor holding those blocks).
        which: ``"all"`` kept blocks, or ``"after_cuts"``: only the first kept block after each removed run.

    Returns:
        ``(student position, teacher position)`` pairs.

    Raises:
        ConfigError: If the two models do not descend from the same source, or the teacher lacks a block the student
            kept.
    """
    student_config, teacher_config = unwrap_model(student).config, unwrap_model(teacher).config
    if source_num_layers(student_config) != source_num_layers(teacher_config):
        raise ConfigError(
            f"The student descends from a model with {source_num_layers(student_config)} blocks, the teacher from one "
            f"with {source_num_layers(teacher_config)}: hidden alignment needs the student's own dense model."
        )
    kept, teacher_blocks = original_layer_indices(student_config), original_layer_indices(teacher_config)
    missing = [i for i in kept if i not in teacher_blocks]
    if missing:
        raise ConfigError(f"The teacher lacks the original blocks {missing} that the student kept.")
    positions = list(range(len(kept)))
    if which == "after_cuts":  # the first kept block after each run of removed blocks
        positions = [p for p in positions if kept[p] != (kept[p - 1] + 1 if p > 0 else 0)]
    elif which != "all":
        raise ConfigError(f"`hidden_alignment_blocks` must be 'all' or 'after_cuts', got {which!r}.")
    return [(p, teacher_blocks.index(kept[p])) for p in positions]


@contextlib.contextmanager
def record_block_outputs(model: nn.Module, positions: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Records the hidden state leaving the given decoder blocks during the forward passes run inside the block.

    Args:
        model: A causal LM (possibly wrapped by peft, DDP or FSDP).
        positions: Block positions (current numbering).

    Yields:
        A dict filled during the forward: position -> the block's output hidden states.
    """
    layers = get_decoder_layers(model)
    outputs: dict[int, torch.Tensor] = {}

    def hook(position: int):
        def record(module, args, output):
            outputs[position] = output[0] if isinstance(output, tuple) else output

        return record

    handles = [layers[p].register_forward_hook(hook(p)) for p in positions]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class DistillationTrainer(Trainer):
    """A ``Trainer`` whose loss distils a frozen dense teacher into the pruned student.

    The loss per predicted token is ``(1 - alpha) * KD + alpha * LM + hidden_alignment * alignment``, each summed
    over the tokens with a label and divided by the Trainer's ``num_items_in_batch`` (so gradient accumulation and
    data parallelism equal one large batch, as for the plain LM loss).

    Args:
        *args: ``Trainer`` arguments (the model is the student).
        teacher: The frozen dense model (on the training device, or dispatched/quantized). ``None`` when the
            training data carries precomputed top-k teacher logits (then hidden alignment is unavailable).
        recovery: The :class:`~optimum_depth.training.RecoveryConfig` (``objective``, ``temperature``, ``alpha``,
            ``hidden_alignment``, ``hidden_alignment_kind``, ``hidden_alignment_blocks``).
        **kwargs: ``Trainer`` keyword arguments.

    Raises:
        ConfigError: If the objective is not a distillation one, hidden alignment is asked without a teacher, or the
            teacher is not the student's dense model.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, teacher: nn.Module | None = None, recovery: Any = None, **kwargs):
        if recovery is None or recovery.objective not in ("kd", "kd+lm"):
            raise ConfigError("DistillationTrainer needs a RecoveryConfig with objective 'kd' or 'kd+lm'.")
        if teacher is None and recovery.hidden_alignment > 0:
            raise ConfigError(
                "Hidden-state alignment needs the teacher model; precomputed logits carry no hidden states."
            )
        super().__init__(*args, **kwargs)
        self.recovery = recovery
        self.teacher = teacher
        self.block_pairs: list[tuple[int, int]] | None = None
        self._pairs_for: tuple[int, ...] = ()
        self._teacher_checked = False
        if teacher is not None:
            dispatched = getattr(teacher, "hf_device_map", None) is not None
            placed = dispatched or bool(getattr(teacher, "is_loaded_in_4bit", False))
            if self.is_fsdp_enabled and placed:
                raise ConfigError(
                    "Under FSDP the teacher is sharded like the student; give it as a plain model (not dispatched "
                    "with a device_map, not quantized), or precompute its logits (precompute_teacher_logits)."
                )
            teacher.eval()
            for param in teacher.parameters():
                param.requires_grad_(False)
            if not placed and not self.is_fsdp_enabled:  # under FSDP, sharding moves each rank's part
                teacher.to(self.args.device)

    # ------------------------------------------------------------------------------------------- columns kept
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None:
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *TEACHER_KEYS]))

    # ---------------------------------------------------------------------------------------------- the loss
    def _pairs(self, model: nn.Module) -> list[tuple[int, int]]:
        # Recomputed whenever pruning during training (DepthPruningCallback) changed the student's blocks.
        if self.teacher is None:
            return []
        kept = tuple(original_layer_indices(unwrap_model(model).config))
        if self.block_pairs is None or kept != self._pairs_for:
            self.block_pairs = aligned_block_pairs(model, self.teacher, self.recovery.hidden_alignment_blocks)
            self._pairs_for = kept
        return self.block_pairs

    def _prepare_teacher(self, model: nn.Module) -> None:
        """Once, at the first loss: shards the teacher on the student's mesh when the student is FSDP2-managed."""
        from torch.distributed.tensor import DTensor

        self._teacher_checked = True
        if self.teacher is None or not is_fsdp_managed(model) or is_fsdp_managed(self.teacher):
            return
        if not any(isinstance(p, DTensor) for p in model.parameters()):  # FSDP1: flat parameters, no mesh
            logger.warning("FSDP1 student: the teacher stays whole on every rank (use fsdp_version: 2 to shard it).")
            self.teacher.to(self.args.device)
            return
        shard_like(self.teacher, model)
        logger.info("Sharded the frozen teacher on the student's device mesh (FSDP2).")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """KD (+ LM) (+ hidden alignment) loss of one batch, normalised by ``num_items_in_batch``."""
        if not self._teacher_checked:
            self._prepare_teacher(model)
        config = self.recovery
        inputs = dict(inputs)
        stored = {key: inputs.pop(key) for key in TEACHER_KEYS if key in inputs}
        labels = inputs["labels"]
        mask = labels[:, 1:].ne(-100)  # logits at t predict the token at t + 1
        denominator = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp_min(1)
        align = config.hidden_alignment > 0 and self.teacher is not None
        pairs = self._pairs(model) if align else []
        forward_inputs = {**inputs, "num_items_in_batch": num_items_in_batch} if num_items_in_batch else inputs
        with record_block_outputs(model, [s for s, _ in pairs]) as student_states:
            outputs = model(**forward_inputs)
        logits = outputs.logits[:, :-1]
        if stored:
            kd = topk_kd_loss(
                logits,
                stored["teacher_topk_values"][:, :-1],
                stored["teacher_topk_indices"][:, :-1],
                stored["teacher_logsumexp"][:, :-1],
                temperature=config.temperature,
                mask=mask,
                reduction="sum",
            )
            teacher_states: dict[int, torch.Tensor] = {}
        else:
            if self.teacher is None:
                raise ConfigError("No teacher and no precomputed teacher logits in the batch.")
            with torch.no_grad(), record_block_outputs(self.teacher, [t for _, t in pairs]) as teacher_states:
                teacher_logits = self.teacher(
                    input_ids=inputs["input_ids"].to(_device(self.teacher)),
                    attention_mask=inputs.get("attention_mask"),
                ).logits
            kd = kd_loss(logits, teacher_logits[:, :-1].to(logits.device), config.temperature, mask, "sum")
        alpha = config.resolved_alpha
        loss = (1.0 - alpha) * kd / denominator
        if alpha > 0:
            loss = loss + alpha * outputs.loss  # the model's LM loss, already divided by num_items_in_batch
        if align:
            alignment = hidden_alignment_loss(
                [student_states[s][:, :-1] for s, _ in pairs],
                [teacher_states[t][:, :-1].to(student_states[s].device) for s, t in pairs],
                mask=mask,
                kind=config.hidden_alignment_kind,
                reduction="sum",
            )
            loss = loss + config.hidden_alignment * alignment / denominator
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # the Trainer averages over processes afterwards
        return (loss, outputs) if return_outputs else loss


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
