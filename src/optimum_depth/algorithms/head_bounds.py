"""Cheap exact lower bounds of a causal LM's summed NLL, from a few rows of the LM head (pure tensor math).

For one token with logits ``z`` and target ``y`` the NLL is ``logsumexp(z) - z_y``. A log-sum-exp over any subset
``S`` of the vocabulary that contains ``y`` is at most the full one, so ``logsumexp(z_S) - z_y`` is a lower bound
of the NLL that needs only ``|S|`` rows of the head instead of all of them. Here ``S`` is, per calibration batch,
the union of the tokens a reference model (the dense one) ranks in its top ``k`` at any position, plus every
target: the bound is close to the exact value for any model whose predictions resemble the reference's, and costs
one small matrix product. The PPL and SLEB criteria use it to skip the full LM head for candidates it already rules
out (:mod:`optimum_depth.algorithms.best_first`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BOUND_MARGIN_PER_TOKEN", "bound_tokens", "head_supports_bounds", "subset_nll_lower_bound"]

BOUND_MARGIN_PER_TOKEN = 1e-3
"""Nats subtracted per token so that float32 rounding can never lift the bound above the exact float32 NLL."""


def head_supports_bounds(lm_head: nn.Module) -> bool:
    """Whether the head is a plain bias-free linear layer whose rows can be gathered (not offloaded, not quantized).

    Args:
        lm_head: The model's output embeddings.
    """
    weight = getattr(lm_head, "weight", None)
    return (
        type(lm_head) is nn.Linear
        and lm_head.bias is None
        and isinstance(weight, torch.Tensor)
        and type(weight) in (torch.Tensor, nn.Parameter)
        and weight.device.type != "meta"
        and weight.is_floating_point()
    )


def bound_tokens(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The vocabulary subset ``S`` of one batch: every token in the reference's top ``k`` somewhere, and the targets.

    Args:
        logits: Reference logits ``(batch, positions, vocab)``.
        labels: Targets ``(batch, positions)``.
        k: Tokens taken from the reference at each position (fewer if the vocabulary is smaller).

    Returns:
        Sorted distinct token ids.
    """
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    return torch.unique(torch.cat([top.reshape(-1), labels.to(top.device).reshape(-1)]))


def subset_nll_lower_bound(
    normed: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    softcap: float | None = None,
) -> float:
    """A lower bound of ``sum_t [logsumexp(z_t) - z_t[y_t]]`` from the head rows of ``tokens`` only.

    Args:
        normed: Final-normed hidden states of the predicting positions ``(batch, positions, hidden)``.
        weight: LM head weight ``(vocab, hidden)``.
        tokens: :func:`bound_tokens` of the batch (sorted, distinct, containing every label).
        labels: Targets ``(batch, positions)``.
        softcap: Final logit soft-capping (Gemma), applied as the model does.

    Returns:
        The bound (float64), with :data:`BOUND_MARGIN_PER_TOKEN` per token subtracted, never below 0.
    """
    tokens = tokens.to(weight.device)
    logits = (normed.to(weight.device, weight.dtype) @ weight[tokens].T).float()  # (batch, positions, |S|)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    where = torch.searchsorted(tokens, labels.to(weight.device).contiguous())
    target = logits.gather(-1, where[..., None])[..., 0]
    per_token = torch.logsumexp(logits, dim=-1) - target
    margin = BOUND_MARGIN_PER_TOKEN * per_token.numel()
    return max(0.0, float(per_token.double().sum()) - margin)
