"""Block granularity: whether a target can be met on a model, and which blocks a set of scores removes."""

from __future__ import annotations

from torch import nn

from ..architectures import ModelFacts, as_facts, count_parameters
from ..config import DepthPruningConfig, warn_once
from ..errors import PruningTargetError
from ..plan import PruningPlan
from ..scores import LayerScores

__all__ = ["check_block_target", "plan_blocks"]


def check_block_target(model: nn.Module | ModelFacts, config: DepthPruningConfig) -> None:
    """Checks that the config's target can be met by removing unprotected blocks of the model.

    Args:
        model: The model (possibly wrapped by peft/DDP), or its resolved facts.
        config: The pruning config.

    Raises:
        PruningTargetError: If the target cannot be met with the unprotected blocks.
    """
    facts = as_facts(model)
    num_blocks = facts.num_layers
    protected = config.protected_blocks(num_blocks, facts.original_indices)
    removable = num_blocks - len(protected)
    wanted = config.num_to_remove(num_blocks)
    warn_once(config.rounding_note(num_blocks))
    if wanted is not None:
        if wanted >= num_blocks:
            raise PruningTargetError(f"Cannot remove {wanted} blocks from a model with {num_blocks} blocks.")
        if wanted > removable:
            raise PruningTargetError(
                f"The target removes {wanted} blocks but only {removable} of {num_blocks} are unprotected "
                f"(protected positions {protected}); lower the target or the protection."
            )
        return
    total = count_parameters(facts.inner)
    target = int(config.target_num_params or 0)
    if target >= total:
        raise PruningTargetError(f"The model already has {total} <= target_num_params={target} parameters.")
    removable_params = sorted(
        (count_parameters(block) for i, block in enumerate(facts.layers) if i not in set(protected)), reverse=True
    )
    if len(removable_params) == num_blocks:  # at least one block must stay
        removable_params = removable_params[:-1]
    floor = total - sum(removable_params)
    if target < floor:
        raise PruningTargetError(
            f"target_num_params={target} is unreachable: removing every removable block leaves {floor} parameters."
        )


def plan_blocks(scores: LayerScores, config: DepthPruningConfig) -> PruningPlan:
    """Chooses the blocks to remove from ``scores`` according to the config's target.

    A greedy criterion's own removal order is followed; otherwise the least important unprotected blocks go, ties
    broken by lower index.

    Args:
        scores: Block scores.
        config: The config holding the target.

    Returns:
        A frozen plan in original numbering, recording the model the scores were taken on.

    Raises:
        PruningTargetError: If the target cannot be met with the scored, unprotected blocks.
    """
    protected = set(scores.protected)
    if scores.removal_order is not None:
        order = list(scores.removal_order)
    else:
        order = sorted(range(len(scores.values)), key=lambda i: (scores.values[i], i))
    order = [i for i in order if i not in protected]
    wanted = config.num_to_remove(len(scores.values))
    if wanted is not None:
        if len(order) < wanted:
            raise PruningTargetError(f"Only {len(order)} removable blocks were scored; the target asks {wanted}.")
        chosen = order[:wanted]
    else:
        budget = int(config.target_num_params or 0)
        remaining = scores.total_params
        chosen = []
        for position in order[: len(scores.values) - 1]:
            if remaining <= budget:
                break
            chosen.append(position)
            remaining -= scores.num_params[position]
        if remaining > budget:
            raise PruningTargetError(f"target_num_params={budget} is unreachable with the unprotected blocks.")
    reason: dict = {
        "target": config.describe_target(),
        "scores": {str(scores.layer_indices[i]): scores.values[i] for i in chosen},
        "protected": sorted(scores.layer_indices[i] for i in protected),
        "order": "criterion removal order" if scores.removal_order is not None else "lowest importance",
    }
    if "auto" in scores.extra:  # criterion="auto": the choice and every candidate's held-out loss
        reason["auto"] = scores.extra["auto"]
    return PruningPlan(
        granularity="block",
        removed_blocks=tuple(scores.layer_indices[i] for i in chosen),
        source_num_hidden_layers=scores.source_num_hidden_layers,
        source_fingerprint=dict(scores.source_fingerprint),
        criterion=scores.criterion,
        reason=reason,
    )
