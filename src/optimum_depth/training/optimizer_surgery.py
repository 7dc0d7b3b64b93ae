"""Keeping an optimizer consistent with a model that lost parameters (pruned blocks or sublayers).

After surgery the removed parameters must leave the optimizer's param groups and its per-parameter state (Adam
moments, ...), otherwise the optimizer keeps them alive and steps tensors that no longer belong to the model. The
param groups themselves are kept, even when one becomes empty, so a learning-rate scheduler (which holds one
learning rate per group) stays valid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

logger = logging.getLogger(__name__)

__all__ = ["unwrap_optimizer", "remove_parameters_from_optimizer", "optimizer_parameters"]


def unwrap_optimizer(optimizer) -> torch.optim.Optimizer:
    """Returns the ``torch.optim.Optimizer`` under accelerate's ``AcceleratedOptimizer`` (and similar wrappers).

    Args:
        optimizer: A torch optimizer, possibly wrapped.

    Returns:
        The innermost optimizer.

    Raises:
        TypeError: If no ``torch.optim.Optimizer`` is found.
    """
    seen = 0
    while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer") and seen < 8:
        optimizer = optimizer.optimizer
        seen += 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"Expected a torch.optim.Optimizer (possibly wrapped), got {type(optimizer).__name__}.")
    return optimizer


def optimizer_parameters(optimizer) -> list[torch.Tensor]:
    """All parameters held by the optimizer's param groups, in group order."""
    inner = unwrap_optimizer(optimizer)
    return [param for group in inner.param_groups for param in group["params"]]


def remove_parameters_from_optimizer(optimizer, parameters: Iterable[torch.Tensor]) -> int:
    """Removes ``parameters`` from the optimizer's param groups and drops their state, in place.

    The order of the remaining parameters inside each group is kept, so the optimizer's ``state_dict()`` matches the
    one of a fresh optimizer built on the pruned model (that is what makes checkpoints resumable). Param groups are
    never removed, so learning-rate schedulers keep one entry per group.

    Args:
        optimizer: The optimizer (a torch optimizer or accelerate's ``AcceleratedOptimizer``).
        parameters: The parameters that left the model.

    Returns:
        How many parameters were removed from the param groups.
    """
    inner = unwrap_optimizer(optimizer)
    removed_ids = {id(p) for p in parameters}
    if not removed_ids:
        return 0
    count = 0
    for group in inner.param_groups:
        kept = [p for p in group["params"] if id(p) not in removed_ids]
        count += len(group["params"]) - len(kept)
        group["params"] = kept
    stale = [p for p in inner.state if isinstance(p, torch.Tensor) and id(p) in removed_ids]
    for param in stale:
        del inner.state[param]
    logger.info("Removed %d parameters (and %d states) from the optimizer.", count, len(stale))
    return count
