"""Pure tensor math of weight sparsity: importance scores, per-row ranking, BESA's differentiable masks, N:M masks.

Nothing here touches a model. Conventions: a weight has shape ``(rows, columns)`` = ``(out_features, in_features)``;
a mask is ``1.0`` where a weight is kept and ``0.0`` where it is pruned; "rank" is the position of a column in its
row's ascending importance order (rank 0 = least important, pruned first).

BESA (Xu et al., 2024) learns, per layer (or per row), a distribution over candidate sparsities ``k / K``
(``k = 0..K``). With probabilities ``p_k``, the expected sparsity ``s = sum_k p_k k / K`` picks the hard mask (the
``floor(s * columns)`` least important weights of each row are pruned), and the probability that the weight of rank
``j`` is kept, ``sum_k p_k [j >= floor(columns k / K)]``, is the soft mask whose gradient the straight-through
estimator passes to the probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "candidate_sparsities",
    "candidate_thresholds",
    "candidate_probabilities",
    "column_ranks",
    "expected_sparsity",
    "hard_mask_from_ranks",
    "keep_probabilities",
    "layer_mask",
    "magnitude_importance",
    "n_m_mask",
    "prune_counts",
    "row_mask",
    "soft_mask_from_ranks",
    "solve_monotone",
    "straight_through",
    "wanda_importance",
]


# ------------------------------------------------------------------------------------------------ importance
def wanda_importance(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """Wanda importance ``|W_ij| * ||X_j||_2`` (Sun et al., 2024).

    Args:
        weight: Weight of shape ``(rows, columns)``.
        input_sq_norms: Squared L2 norm of each input feature over the calibration tokens, shape ``(columns,)``.

    Returns:
        Float32 importance of shape ``(rows, columns)``.

    Raises:
        ValueError: If the shapes do not match.
    """
    if weight.dim() != 2 or input_sq_norms.shape != (weight.shape[1],):
        raise ValueError(
            f"wanda_importance needs a 2-D weight and one norm per column; got {tuple(weight.shape)} and "
            f"{tuple(input_sq_norms.shape)}."
        )
    return weight.detach().float().abs() * input_sq_norms.float().clamp_min(0).sqrt().unsqueeze(0)


def magnitude_importance(weight: torch.Tensor) -> torch.Tensor:
    """Magnitude importance ``|W_ij|`` (float32)."""
    return weight.detach().float().abs()


def column_ranks(importance: torch.Tensor) -> torch.Tensor:
    """Rank of every weight within its row, by ascending importance (stable: ties keep column order).

    Args:
        importance: Scores of shape ``(rows, columns)``.

    Returns:
        ``LongTensor`` ``ranks`` with ``ranks[r, i]`` = position of column ``i`` in row ``r``'s ascending order.
    """
    order = torch.argsort(importance, dim=1, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(importance.shape[1], device=importance.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks


# --------------------------------------------------------------------------------------- fixed-ratio masks
def prune_counts(sparsity: torch.Tensor, columns: int) -> torch.Tensor:
    """Number of weights pruned per row for a (continuous) sparsity: ``floor(sparsity * columns)``, as in BESA.

    Args:
        sparsity: Sparsity per row (or a scalar), in ``[0, 1]``.
        columns: Row length.

    Returns:
        ``LongTensor`` of the same shape, in ``[0, columns]``.
    """
    # The small epsilon keeps an exact product such as 0.5 * 64 from flooring to 31 through rounding noise.
    return torch.floor(sparsity.detach().double() * columns + 1e-9).long().clamp(0, columns)


def hard_mask_from_ranks(ranks: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mask pruning the ``counts[r]`` lowest-ranked weights of each row ``r``.

    Args:
        ranks: Ranks from :func:`column_ranks`, shape ``(rows, columns)``.
        counts: Weights to prune per row, shape ``(rows,)``, or a scalar applied to every row.

    Returns:
        Float32 mask of shape ``(rows, columns)``.
    """
    counts = counts.reshape(-1, 1) if counts.dim() > 0 else counts.reshape(1, 1)
    return (ranks >= counts.to(ranks.device)).float()


def row_mask(importance: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Uniform per-row mask (Wanda): prune ``round(sparsity * columns)`` weights of each row.

    Args:
        importance: Scores of shape ``(rows, columns)``.
        sparsity: Fraction pruned in each row, in ``[0, 1]``.

    Returns:
        Float32 mask.
    """
    count = torch.tensor(round(sparsity * importance.shape[1]))
    return hard_mask_from_ranks(column_ranks(importance), count)


def layer_mask(importance: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per-matrix mask (magnitude pruning): prune the ``round(sparsity * numel)`` lowest scores of the whole matrix.

    Args:
        importance: Scores of any shape.
        sparsity: Fraction pruned, in ``[0, 1]``.

    Returns:
        Float32 mask of the same shape.
    """
    flat = importance.reshape(-1)
    count = round(sparsity * flat.numel())
    mask = torch.ones_like(flat, dtype=torch.float32)
    if count > 0:
        mask[torch.argsort(flat, stable=True)[:count]] = 0.0
    return mask.reshape(importance.shape)


def n_m_mask(importance: torch.Tensor, n_kept: int, m: int) -> torch.Tensor:
    """Semi-structured N:M mask: in every group of ``m`` consecutive weights of a row, keep the ``n_kept`` best.

    Args:
        importance: Scores of shape ``(rows, columns)``; ``columns`` must be a multiple of ``m``.
        n_kept: Weights kept per group (2 for 2:4).
        m: Group size.

    Returns:
        Float32 mask.

    Raises:
        ValueError: If the row length is not a multiple of ``m`` or ``n_kept`` is not in ``[0, m]``.
    """
    rows, columns = importance.shape
    if columns % m != 0 or not 0 <= n_kept <= m:
        raise ValueError(f"An {n_kept}:{m} mask needs rows of a multiple of {m} weights; got {columns}.")
    groups = importance.reshape(rows, columns // m, m)
    group_ranks = torch.argsort(torch.argsort(groups, dim=-1, stable=True), dim=-1)
    return (group_ranks >= m - n_kept).float().reshape(rows, columns)


# ------------------------------------------------------------------------------------- BESA's learned masks
def candidate_sparsities(num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Candidate sparsities ``k / num_steps`` for ``k = 0..num_steps`` (``num_steps=100``: 0, 0.01, ..., 1).

    Args:
        num_steps: Number of intervals between 0 and 1.
        device: Device of the result.

    Returns:
        Float32 tensor of ``num_steps + 1`` ascending values.
    """
    return torch.arange(num_steps + 1, device=device, dtype=torch.float64).div(num_steps).float()


def candidate_thresholds(columns: int, num_steps: int) -> torch.Tensor:
    """Weights pruned per row by each candidate: ``floor(columns * k / num_steps)``, in exact integer arithmetic."""
    return (torch.arange(num_steps + 1, dtype=torch.long) * columns).div(num_steps, rounding_mode="floor")


def candidate_probabilities(
    logits: torch.Tensor, prior: torch.Tensor | None = None, sigmoid_smooth: bool = True
) -> torch.Tensor:
    """Softmax over the candidates of ``sigmoid(logits) + prior`` (BESA's smoothing) or of ``logits + prior``.

    Args:
        logits: Learnable scores, shape ``(..., num_candidates)``.
        prior: Fixed log-weights added before the softmax (centres the distribution on the target).
        sigmoid_smooth: Squash the logits with a sigmoid first, as the BESA code does by default.

    Returns:
        Probabilities of the same shape.
    """
    scores = torch.sigmoid(logits) if sigmoid_smooth else logits
    if prior is not None:
        scores = scores + prior
    return torch.softmax(scores, dim=-1)


def expected_sparsity(probabilities: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Expected sparsity ``sum_k p_k c_k`` over the last dimension."""
    return probabilities @ candidates


def keep_probabilities(probabilities: torch.Tensor, thresholds: torch.Tensor, columns: int) -> torch.Tensor:
    """Probability that the weight of rank ``j`` survives: ``sum_k p_k [j >= thresholds_k]``.

    Args:
        probabilities: Candidate probabilities, shape ``(groups, num_candidates)`` (one group for a layer-wise
            allocation, one per row for a row-wise one); candidates ascending.
        thresholds: Weights pruned per row by each candidate (:func:`candidate_thresholds`), nondecreasing.
        columns: Row length.

    Returns:
        Keep probabilities of shape ``(groups, columns)``, indexed by rank.
    """
    positions = torch.arange(columns, device=thresholds.device)
    # Number of candidates pruning at most j weights, minus one: the last candidate that keeps rank j.
    last_keeping = torch.searchsorted(thresholds, positions, right=True) - 1
    cumulative = torch.cumsum(probabilities, dim=-1)
    return cumulative.index_select(-1, last_keeping.to(cumulative.device))


def soft_mask_from_ranks(keep: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Places keep probabilities (indexed by rank) at each weight's position.

    Args:
        keep: Shape ``(rows, columns)`` (row-wise) or ``(1, columns)`` (layer-wise), from :func:`keep_probabilities`.
        ranks: Ranks from :func:`column_ranks`.

    Returns:
        Soft mask of shape ``(rows, columns)``.
    """
    if keep.shape[0] == 1:
        return keep[0][ranks]
    return keep.gather(1, ranks)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: the value of ``hard`` with the gradient of ``soft``."""
    return hard + (soft - soft.detach())


def solve_monotone(
    fn: Callable[[float], float], target: float, low: float = -64.0, high: float = 64.0, iterations: int = 60
) -> float:
    """Finds ``x`` with ``fn(x)`` closest to ``target`` for a nondecreasing ``fn``, by bisection.

    The bracket is widened (up to ``2**20`` times) until it contains the target. ``fn`` may be a step function: the
    end of the final bracket closer to the target is returned.

    Args:
        fn: Nondecreasing function of one float.
        target: Value sought.
        low: Initial lower end of the bracket.
        high: Initial upper end of the bracket.
        iterations: Bisection steps.

    Returns:
        The best ``x`` found.
    """
    for _ in range(20):
        if fn(low) <= target:
            break
        low *= 2.0
    for _ in range(20):
        if fn(high) >= target:
            break
        high *= 2.0
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if fn(middle) < target:
            low = middle
        else:
            high = middle
    return low if abs(fn(low) - target) <= abs(fn(high) - target) else high
