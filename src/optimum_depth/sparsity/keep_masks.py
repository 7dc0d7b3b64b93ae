"""Keeping a sparsified model sparse during recovery training (full fine-tuning, or after merging LoRA adapters).

An optimizer step fills the zeros of a sparsified weight back in. :class:`SparsityMaskCallback` records which weights
are zero when it is created and multiplies them back to zero after every optimizer step of a ``transformers.Trainer``
(or whenever :meth:`SparsityMaskCallback.apply` is called, e.g. after ``merge_and_unload()`` of LoRA adapters, which
adds a dense update to the frozen sparse weights).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import TrainerCallback

from ..architectures import get_decoder_layers, unwrap_model
from .targets import find_prunable_linears

logger = logging.getLogger(__name__)

__all__ = ["SparsityMaskCallback"]


class SparsityMaskCallback(TrainerCallback):
    """Re-applies the zero pattern of the sparsified linear layers after every optimizer step.

    Create it on the sparsified model, before wrapping it with peft (LoRA wrappers are skipped if it is already
    wrapped: the masks apply to the base weights).

    Args:
        model: The sparsified causal LM.
        target_modules: Optional restriction to some linear layers (as in ``SparsityConfig.target_modules``).

    Example:
        ```python
        >>> callback = SparsityMaskCallback(model)
        >>> trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
        ```
    """

    def __init__(self, model: nn.Module, target_modules: list[str] | None = None):
        inner = unwrap_model(model)
        self.masks: list[tuple[nn.Linear, torch.Tensor]] = []
        for block in get_decoder_layers(inner):
            for name, linear in find_prunable_linears(block, inner, target_modules).items():
                if "lora_" in name:
                    continue
                zeros = linear.weight == 0
                if bool(zeros.any()):
                    self.masks.append((linear, ~zeros))
        pruned = sum(int((~mask).sum()) for _, mask in self.masks)
        logger.info("Keeping %d zero weights in %d linear layers.", pruned, len(self.masks))

    @torch.no_grad()
    def apply(self) -> None:
        """Sets the recorded zero positions of every tracked weight back to zero."""
        for linear, keep in self.masks:
            linear.weight.mul_(keep.to(device=linear.weight.device, dtype=linear.weight.dtype))

    def on_step_end(self, args, state, control, **kwargs):
        """Trainer hook: runs after each optimizer step."""
        self.apply()
        return control
