"""Magnitude criterion (Shortened LLaMA's Mag / Mag+): data-free block importance from weight magnitudes."""

from __future__ import annotations

import torch

from ..architectures import get_decoder_layers
from .base import Criterion, CriterionResult, ScoringContext, register_criterion


def block_weight_magnitude(block: torch.nn.Module, p: float = 1.0) -> float:
    """Importance of one block: the sum of ``|W|^p`` over the elements of its weight matrices.

    Shortened LLaMA (Kim et al., 2024), "Mag": I = sum_k sum_{i,j} |W^k_{ij}|^p over the block's linear weights
    (p = 1). Norm gains and biases (1-D parameters) are not counted. A LoRA adapter's own weights are skipped.

    Args:
        block: A decoder block.
        p: The exponent.

    Returns:
        The block importance.
    """
    total = torch.zeros((), dtype=torch.float64)
    for name, param in block.named_parameters():
        if param.dim() < 2 or "lora_" in name:
            continue
        total += param.detach().abs().double().pow(p).sum().cpu()
    return float(total)


def magnitude_criterion(context: ScoringContext) -> CriterionResult:
    """Scores each block by :func:`block_weight_magnitude`; larger blocks weights = more important."""
    p = context.config.magnitude_p
    values = [block_weight_magnitude(block, p) for block in get_decoder_layers(context.model)]
    return CriterionResult(values=values, extra={"p": p})


MAGNITUDE = register_criterion(Criterion("magnitude", magnitude_criterion, needs_calibration=False))
