"""BESA's learnable sparsity allocation inside one decoder block (Xu et al., 2024, "Pruning Large Language Models
with Blockwise Parameter-Efficient Sparsity Allocation").

Each linear layer of the block gets learnable logits over the candidate sparsities (one set per layer, or one per
output row). The layer's weight is replaced, through a ``torch.nn.utils.parametrize`` parametrization, by
``W * mask`` where ``mask`` has the value of the hard mask picked by the expected sparsity and the gradient of the
soft keep-probability mask (straight-through). The logits minimise the normalised reconstruction error of the block
output plus ``penalty_weight * ((s - target) / target)^2`` on the block's parameter-weighted expected sparsity ``s``.

Two additions to the reference code, both documented in ``docs/besa.md``: the distributions start centred on the
target (a fixed exponential tilt of the candidates; at a target of 0.5 this is exactly the reference's uniform start),
and with ``match_target`` a final shared tilt makes the block's achieved sparsity the closest reachable to the target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..blocks.replay import call_block
from .config import SparsityConfig
from .masks import (
    candidate_probabilities,
    candidate_sparsities,
    candidate_thresholds,
    column_ranks,
    expected_sparsity,
    hard_mask_from_ranks,
    keep_probabilities,
    prune_counts,
    soft_mask_from_ranks,
    solve_monotone,
    straight_through,
    wanda_importance,
)

logger = logging.getLogger(__name__)

__all__ = ["BlockAllocation", "LearnedSparseMask", "learn_block_allocation", "normalised_reconstruction_error"]


def normalised_reconstruction_error(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """BESA's reconstruction loss: per hidden channel, squared error over tokens divided by the reference's energy,
    averaged over channels.

    Args:
        output: Pruned block output, shape ``(..., hidden)``.
        reference: Dense block output on the same input, same shape.

    Returns:
        A scalar (0 = perfect reconstruction; 1 = as large as the reference itself).
    """
    error = (output.float() - reference.float()).reshape(-1, reference.shape[-1]).pow(2).sum(dim=0)
    energy = reference.float().reshape(-1, reference.shape[-1]).pow(2).sum(dim=0).clamp_min(1e-12)
    return (error / energy).mean()


class LearnedSparseMask(nn.Module):
    """Parametrization ``W -> W * mask`` with a straight-through mask driven by learnable candidate logits.

    Args:
        importance: Wanda importance of the weight, shape ``(rows, columns)``.
        num_steps: Candidates are ``k / num_steps``.
        row_wise: One distribution per row (else one for the layer).
        prior: Fixed log-weights of the candidates added before the softmax, shape ``(num_steps + 1,)``.
        sigmoid_smooth: Squash the logits with a sigmoid (BESA's default).
    """

    ranks: torch.Tensor
    candidates: torch.Tensor
    thresholds: torch.Tensor
    prior: torch.Tensor

    def __init__(
        self, importance: torch.Tensor, num_steps: int, row_wise: bool, prior: torch.Tensor, sigmoid_smooth: bool
    ):
        super().__init__()
        rows, columns = importance.shape
        device = importance.device
        self.columns = columns
        self.sigmoid_smooth = sigmoid_smooth
        self.register_buffer("ranks", column_ranks(importance), persistent=False)
        self.register_buffer("candidates", candidate_sparsities(num_steps, device), persistent=False)
        self.register_buffer("thresholds", candidate_thresholds(columns, num_steps).to(device), persistent=False)
        self.register_buffer("prior", prior.to(device=device, dtype=torch.float32).clone(), persistent=False)
        self.logits = nn.Parameter(torch.zeros(rows if row_wise else 1, num_steps + 1, device=device))

    def probabilities(self, tilt: float = 0.0) -> torch.Tensor:
        """Candidate probabilities, shape ``(groups, num_candidates)``; ``tilt`` adds ``tilt * candidates``."""
        prior = self.prior + tilt * self.candidates if tilt else self.prior
        return candidate_probabilities(self.logits, prior, self.sigmoid_smooth)

    def sparsities(self, tilt: float = 0.0) -> torch.Tensor:
        """Expected sparsity of each group (row, or the whole layer)."""
        return expected_sparsity(self.probabilities(tilt), self.candidates)

    def hard_mask(self, tilt: float = 0.0) -> torch.Tensor:
        """The mask picked by the expected sparsities (no gradient)."""
        with torch.no_grad():
            counts = prune_counts(self.sparsities(tilt), self.columns)
            return hard_mask_from_ranks(self.ranks, counts.squeeze(0) if counts.numel() == 1 else counts)

    def pruned_count(self, tilt: float = 0.0) -> int:
        """Number of weights the hard mask prunes."""
        with torch.no_grad():
            counts = prune_counts(self.sparsities(tilt), self.columns)
        return int(counts.sum()) * (self.ranks.shape[0] if counts.numel() == 1 else 1)

    def mask(self) -> torch.Tensor:
        """Straight-through mask: hard value, gradient of the soft keep probabilities."""
        probabilities = self.probabilities()
        counts = prune_counts(expected_sparsity(probabilities, self.candidates), self.columns)
        hard = hard_mask_from_ranks(self.ranks, counts.squeeze(0) if counts.numel() == 1 else counts)
        soft = soft_mask_from_ranks(keep_probabilities(probabilities, self.thresholds, self.columns), self.ranks)
        return straight_through(hard, soft)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask().to(weight.dtype)


@dataclass
class BlockAllocation:
    """What BESA learned for one block.

    Args:
        masks: Final hard mask of each linear layer, by name.
        expected_sparsity: Parameter-weighted expected sparsity of the block when learning ended (before the tilt).
        tilt: Tilt applied to meet the target (0 without ``match_target``).
        initial_reconstruction: Reconstruction error over the calibration set at the starting allocation.
        loss_history: Loss of every optimisation step.
        reconstruction_history: Reconstruction term of every optimisation step.
    """

    masks: dict[str, torch.Tensor]
    expected_sparsity: float
    tilt: float
    initial_reconstruction: float
    loss_history: list[float] = field(default_factory=list)
    reconstruction_history: list[float] = field(default_factory=list)


def target_prior(target: float, num_steps: int) -> torch.Tensor:
    """Fixed log-weights ``lambda * c_k`` making the start distribution's mean equal ``target``."""
    candidates = candidate_sparsities(num_steps).double()

    def mean(tilt: float) -> float:
        return float(torch.softmax(tilt * candidates, dim=0) @ candidates)

    return (solve_monotone(mean, target) * candidates).float()


def _block_expected_sparsity(masks: dict[str, LearnedSparseMask], numels: dict[str, int]) -> torch.Tensor:
    total = sum(numels.values())
    return sum(masks[n].sparsities().mean() * (numels[n] / total) for n in masks)  # type: ignore[return-value]


def _match_target(masks: dict[str, LearnedSparseMask], numels: dict[str, int], target: float) -> float:
    total = sum(numels.values())

    def achieved(tilt: float) -> float:
        return sum(m.pruned_count(tilt) for m in masks.values()) / total

    return solve_monotone(achieved, target)


def _make_optimizer(parameters: list[nn.Parameter], config: SparsityConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.resolved_learning_rate)
    from prodigyopt import Prodigy  # optional dependency, checked before any change by sparsity.check

    return Prodigy(parameters, lr=config.resolved_learning_rate, weight_decay=0.0)


@torch.no_grad()
def _reconstruction_over(block, inputs, targets, kwargs, batch_size: int) -> float:
    error = torch.zeros(targets.shape[-1], dtype=torch.float64, device=targets.device)
    energy = torch.zeros_like(error)
    for start in range(0, inputs.shape[0], batch_size):
        stop = start + batch_size
        output = call_block(block, inputs[start:stop], kwargs).double()
        reference = targets[start:stop].double()
        error += (output - reference).reshape(-1, reference.shape[-1]).pow(2).sum(dim=0)
        energy += reference.reshape(-1, reference.shape[-1]).pow(2).sum(dim=0)
    return float((error / energy.clamp_min(1e-12)).mean())


def learn_block_allocation(
    block: nn.Module,
    linears: dict[str, nn.Linear],
    input_sq_norms: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kwargs: dict[str, Any],
    config: SparsityConfig,
) -> BlockAllocation:
    """Learns the sparsity allocation of one block; the block's weights are left unchanged.

    Args:
        block: The decoder block.
        linears: Its linear layers to sparsify, by name.
        input_sq_norms: Squared input norms of each linear over the calibration tokens.
        inputs: Block inputs (outputs of the previous, already pruned, block), ``(num_samples, seq_len, hidden)``.
        targets: Dense block outputs on the same inputs.
        kwargs: The block's call arguments.
        config: The sparsity config (target, allocation, optimizer, epochs, loss weights).

    Returns:
        The final masks and the learning record.
    """
    target = float(config.sparsity)
    steps = config.num_candidate_steps
    prior = target_prior(target, steps)
    numels = {name: linear.weight.numel() for name, linear in linears.items()}
    masks: dict[str, LearnedSparseMask] = {}
    frozen = {p: p.requires_grad for p in block.parameters()}
    for param in frozen:
        param.requires_grad_(False)
    try:
        for name, linear in linears.items():
            importance = wanda_importance(linear.weight, input_sq_norms[name])
            masks[name] = LearnedSparseMask(
                importance, steps, config.allocation == "row", prior, config.sigmoid_smooth
            )
            parametrize.register_parametrization(linear, "weight", masks[name])
        initial = _reconstruction_over(block, inputs, targets, kwargs, config.batch_size)
        logits = [m.logits for m in masks.values()]
        optimizer = _make_optimizer(logits, config)
        losses: list[float] = []
        reconstructions: list[float] = []
        with torch.enable_grad():
            for _ in range(config.epochs):
                for start in range(0, inputs.shape[0], config.batch_size):
                    stop = start + config.batch_size
                    output = call_block(block, inputs[start:stop], kwargs)
                    reconstruction = normalised_reconstruction_error(output, targets[start:stop])
                    sparsity = _block_expected_sparsity(masks, numels)
                    penalty = ((sparsity - target) / target) ** 2
                    loss = config.reconstruction_weight * reconstruction + config.penalty_weight * penalty
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
                    reconstructions.append(float(reconstruction.detach()))
        with torch.no_grad():
            learned = float(_block_expected_sparsity(masks, numels))
            tilt = _match_target(masks, numels, target) if config.match_target else 0.0
            final = {name: mask.hard_mask(tilt) for name, mask in masks.items()}
    finally:
        for linear in linears.values():
            if parametrize.is_parametrized(linear, "weight"):
                parametrize.remove_parametrizations(linear, "weight", leave_parametrized=False)
        for param, flag in frozen.items():
            param.requires_grad_(flag)
    return BlockAllocation(
        masks=final,
        expected_sparsity=learned,
        tilt=tilt,
        initial_reconstruction=initial,
        loss_history=losses,
        reconstruction_history=reconstructions,
    )
