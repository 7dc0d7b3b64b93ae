"""Representation-similarity criteria: Block Influence (ShortGPT) and angular distance (Gromov et al.).

Both need only the hidden states entering each block, from one forward per calibration batch, streamed through the
:class:`~optimum_depth.blocks.engine.BlockwiseEngine` (nothing is cached across batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..architectures import count_parameters, get_decoder_layers
from ..blocks.engine import BlockwiseEngine
from ..errors import PruningTargetError
from .base import Criterion, CriterionResult, ScoringContext, register_criterion


def _engine(context: ScoringContext, name: str) -> BlockwiseEngine:
    if context.calibration is None:
        raise ValueError(f"The {name!r} criterion needs calibration data.")
    return BlockwiseEngine(context.model, context.calibration, batch_size=context.config.batch_size)


# ------------------------------------------------------------------------------------------------ block influence
def summed_token_cosine(first: torch.Tensor, second: torch.Tensor) -> tuple[float, int]:
    """Sum over tokens of ``cos(first_t, second_t)``, in float64, and the number of tokens.

    Args:
        first: ``(..., hidden_size)`` states.
        second: States of the same shape (moved to ``first``'s device).
    """
    cosine = F.cosine_similarity(first.double(), second.to(first.device).double(), dim=-1)
    return float(cosine.sum()), cosine.numel()


def block_influence_criterion(context: ScoringContext) -> CriterionResult:
    """Scores each block by its Block Influence.

    ShortGPT (Men et al., 2024): BI_i = 1 - E_{X, t} [ X_{i,t} . X_{i+1,t} / (||X_{i,t}|| ||X_{i+1,t}||) ], with
    X_i the hidden state entering block i and X_{i+1} the one leaving it, averaged over every token of every
    calibration sequence. A block that barely rotates its input (BI near 0) is redundant; higher BI = more important.

    Args:
        context: Model, calibration data and config.

    Returns:
        BI per block.
    """
    engine = _engine(context, "block_influence")
    sums = [0.0] * engine.num_blocks
    tokens = 0
    for batch in engine.iter_captured(desc="block_influence: forwards"):
        for position in range(engine.num_blocks):
            total, count = summed_token_cosine(batch.hidden[position], batch.hidden[position + 1])
            sums[position] += total
        tokens += count
    values = [1.0 - total / tokens for total in sums]
    extra = {"quantity": "1 - mean token cosine(block input, block output)", "block_forwards": engine.block_forwards}
    return CriterionResult(values=values, extra=extra)


# --------------------------------------------------------------------------------------------- angular distance
def summed_angular_distances(states: list[torch.Tensor], last_token: bool) -> tuple[torch.Tensor, int]:
    """Sums, over tokens, the angular distances between every pair of hidden states of one batch.

    Args:
        states: The ``num_blocks + 1`` states of a batch (inputs of each block, then the last output), each
            ``(batch, seq_len, hidden_size)``.
        last_token: Use only the last token of each sequence (Gromov et al.), else every token.

    Returns:
        ``D`` of shape ``(num_blocks + 1, num_blocks + 1)`` with ``D[a, b] = sum_t arccos(cos(x_a,t, x_b,t)) / pi``,
        and the number of tokens summed.
    """
    device = states[0].device
    rows = [(s[:, -1, :] if last_token else s.reshape(-1, s.shape[-1])).to(device).double() for s in states]
    unit = F.normalize(torch.stack(rows, dim=1), dim=-1)  # (tokens, L + 1, hidden)
    cosine = (unit @ unit.transpose(1, 2)).clamp(-1.0, 1.0)
    return (torch.arccos(cosine) / torch.pi).sum(dim=0).cpu(), unit.shape[0]


def _allowed_windows(num_blocks: int, size: int, protected: frozenset[int]) -> list[int]:
    return [start for start in range(num_blocks - size + 1) if not protected & set(range(start, start + size))]


def choose_window(distances: torch.Tensor, size: int, protected: frozenset[int]) -> tuple[int, float]:
    """The start ``l`` of the unprotected window of ``size`` blocks with the smallest ``d(x_l, x_{l+size})``.

    Args:
        distances: Mean angular distances ``(num_blocks + 1, num_blocks + 1)``.
        size: Number of consecutive blocks to remove.
        protected: Positions that may not be removed.

    Returns:
        The start and its distance (ties go to the earlier window).

    Raises:
        PruningTargetError: If no window of ``size`` consecutive unprotected blocks exists.
    """
    num_blocks = distances.shape[0] - 1
    starts = _allowed_windows(num_blocks, size, protected)
    if not starts:
        raise PruningTargetError(
            f"The angular criterion removes {size} consecutive blocks, but no run of {size} unprotected blocks exists "
            f"among {num_blocks} (protected positions {sorted(protected)})."
        )
    best = min(starts, key=lambda start: (float(distances[start, start + size]), start))
    return best, float(distances[best, best + size])


def _window_size_for_params(context: ScoringContext, distances: torch.Tensor) -> int:
    """Smallest window whose removal (from some allowed start) meets ``target_num_params``."""
    sizes = [count_parameters(block) for block in get_decoder_layers(context.model)]
    total = count_parameters(context.model)
    target = int(context.config.target_num_params or 0)
    for size in range(1, len(sizes)):
        for start in _allowed_windows(len(sizes), size, context.protected):
            if total - sum(sizes[start : start + size]) <= target:
                return size
    raise PruningTargetError(
        f"No run of consecutive unprotected blocks brings the model to target_num_params={target}."
    )


def angular_criterion(context: ScoringContext) -> CriterionResult:
    """Chooses the ``n`` consecutive blocks whose removal changes the representation least (Gromov et al., 2024).

    d(x_l, x_{l+n}) = arccos(x_l . x_{l+n} / (||x_l|| ||x_{l+n}||)) / pi, with x_l the hidden state entering block
    l (x_L the output of the last block), at the last token of each calibration sequence (``angular_last_token``,
    as in the paper; else every token) and averaged over them. The start l* minimising it over the windows free of
    protected blocks gives ``removal_order = [l*, ..., l* + n - 1]``.

    ``n`` is the target's number of blocks; for a ``target_num_params`` target it is the smallest window size for
    which some allowed window reaches the budget.

    ``values[i]`` is the smallest ``d(x_l, x_{l+n})`` over the windows of size ``n`` containing block ``i`` (protection
    ignored): the chosen window's blocks carry the lowest value, and the value reads as "how much the representation
    changes at best when block i goes with its n - 1 best neighbours". ``extra["distances"]`` holds the whole table
    ``d(x_a, x_b)`` (rows a, columns b) for plotting Gromov et al.'s figure.

    Args:
        context: Model, calibration data, config, target and protection.

    Returns:
        Values, the removal window and the distance table.
    """
    engine = _engine(context, "angular")
    last_token = context.config.angular_last_token
    table = torch.zeros(engine.num_blocks + 1, engine.num_blocks + 1, dtype=torch.float64)
    tokens = 0
    for batch in engine.iter_captured(desc="angular: forwards"):
        summed, count = summed_angular_distances(batch.hidden, last_token)
        table += summed
        tokens += count
    distances = table / tokens
    num_blocks = engine.num_blocks
    size = context.num_to_remove if context.num_to_remove is not None else _window_size_for_params(context, distances)
    if not 1 <= size < num_blocks:
        raise PruningTargetError(f"Cannot remove {size} of {num_blocks} blocks.")
    start, distance = choose_window(distances, size, context.protected)
    window_distance = [float(distances[s, s + size]) for s in range(num_blocks - size + 1)]
    values = [
        min(window_distance[s] for s in range(max(0, i - size + 1), min(i, num_blocks - size) + 1))
        for i in range(num_blocks)
    ]
    extra = {
        "quantity": "min angular distance d(x_l, x_{l+n}) over windows of n blocks containing the block",
        "window_start": start,
        "window_size": size,
        "window_distance": distance,
        "last_token": last_token,
        "distances": distances.tolist(),
        "block_forwards": engine.block_forwards,
    }
    return CriterionResult(values=values, removal_order=list(range(start, start + size)), extra=extra)


BLOCK_INFLUENCE = register_criterion(Criterion("block_influence", block_influence_criterion))
ANGULAR = register_criterion(Criterion("angular", angular_criterion))
