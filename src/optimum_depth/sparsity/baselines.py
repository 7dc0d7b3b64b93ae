"""The fixed-ratio baselines BESA is measured against, as masks for one block's linear layers.

* Wanda (Sun et al., 2024): importance ``|W_ij| * ||X_j||_2``; the same fraction of each output row is pruned.
* Magnitude: importance ``|W_ij|``; the fraction is pruned over each whole matrix (the usual per-layer magnitude
  baseline of the Wanda and SparseGPT papers).

With an ``N:M`` structure both keep the N most important weights of every M consecutive inputs of a row.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SparsityConfig
from .masks import layer_mask, magnitude_importance, n_m_mask, row_mask, wanda_importance

__all__ = ["baseline_masks"]


def baseline_masks(
    linears: dict[str, nn.Linear], input_sq_norms: dict[str, torch.Tensor] | None, config: SparsityConfig
) -> dict[str, torch.Tensor]:
    """Masks of the Wanda or magnitude baseline for the linear layers of one block.

    Args:
        linears: The linear layers to sparsify, by name.
        input_sq_norms: Squared input norms per linear (required by Wanda; ignored by magnitude).
        config: The sparsity config (``method`` ``"wanda"`` or ``"magnitude"``, target, structure).

    Returns:
        A float32 mask per linear (1 = keep).

    Raises:
        ValueError: For another method, or Wanda without input norms.
    """
    if config.method not in ("wanda", "magnitude"):
        raise ValueError(f"baseline_masks handles 'wanda' and 'magnitude', not {config.method!r}.")
    if config.method == "wanda" and input_sq_norms is None:
        raise ValueError("Wanda needs the input norms of every linear layer.")
    norms = input_sq_norms if input_sq_norms is not None else {}
    masks: dict[str, torch.Tensor] = {}
    for name, linear in linears.items():
        if config.method == "wanda":
            importance = wanda_importance(linear.weight, norms[name])
        else:
            importance = magnitude_importance(linear.weight)
        pattern = config.n_m
        if pattern is not None:
            masks[name] = n_m_mask(importance, pattern[0], pattern[1])
        elif config.method == "wanda":
            masks[name] = row_mask(importance, config.sparsity)
        else:
            masks[name] = layer_mask(importance, config.sparsity)
    return masks
