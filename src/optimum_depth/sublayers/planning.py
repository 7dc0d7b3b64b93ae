"""Sublayer granularity: whether a target can be met on a model, and which sublayers a set of scores removes.

Candidates are the attention and MLP sublayers present in the model (:func:`.candidates.list_sublayers`); targets
count them (``pruning_ratio`` of the sublayers, ``num_layers_to_remove`` sublayers) or their parameters.
"""

from __future__ import annotations

from torch import nn

from ..architectures import ModelFacts, as_facts, count_parameters
from ..config import DepthPruningConfig, warn_once
from ..errors import PruningTargetError
from ..plan import PruningPlan
from ..scores import LayerScores
from .candidates import ATTENTION, MLP, list_sublayers, protected_sublayers, sublayer_num_params
from .surgery import check_conversion_to_pruned_class, is_sublayer_pruned, pruned_model_class

__all__ = ["check_sublayer_target", "plan_sublayers"]


def check_sublayer_target(model: nn.Module | ModelFacts, config: DepthPruningConfig) -> None:
    """Validates a sublayer-pruning config against a model without changing anything.

    Args:
        model: The model (possibly wrapped by peft/DDP), or its resolved facts.
        config: The pruning config.

    Raises:
        UnsupportedArchitectureError: If the family has no pruned model class.
        PruningTargetError: If the target cannot be met with the unprotected sublayers.
        RuntimeError: If a wrapped stock model cannot be converted to its pruned class in place.
    """
    facts = as_facts(model)
    pruned_model_class(facts.inner)  # raises UnsupportedArchitectureError, naming the supported families
    if not is_sublayer_pruned(facts.inner):
        check_conversion_to_pruned_class(facts.model)  # a stock model is converted in place by `apply`
    sublayers = list_sublayers(facts)
    protected = set(protected_sublayers(config, facts, sublayers))
    removable = [i for i in range(len(sublayers)) if i not in protected]
    if not any(sublayers[i].kind == ATTENTION for i in protected):
        attention = [i for i in removable if sublayers[i].kind == ATTENTION]
        removable = [i for i in removable if i not in attention[:1]]  # one attention sublayer must stay
    wanted = config.num_to_remove(len(sublayers))
    warn_once(config.rounding_note(len(sublayers), "sublayers"))
    if wanted is not None:
        if wanted > len(removable):
            raise PruningTargetError(
                f"The target removes {wanted} of {len(sublayers)} sublayers but only {len(removable)} may go "
                f"({len(protected)} protected, and one attention sublayer must stay)."
            )
        return
    total = count_parameters(facts.inner)
    target = int(config.target_num_params or 0)
    if target >= total:
        raise PruningTargetError(f"The model already has {total} <= target_num_params={target} parameters.")
    floor = total - sum(sublayer_num_params(facts, sublayers[i]) for i in removable)
    if target < floor:
        raise PruningTargetError(
            f"target_num_params={target} is unreachable: removing every removable sublayer leaves {floor} parameters."
        )


def plan_sublayers(scores: LayerScores, config: DepthPruningConfig) -> PruningPlan:
    """Chooses the sublayers to remove: the criterion's removal order (else lowest importance), up to the target.

    Args:
        scores: Sublayer scores from :func:`score_sublayers`.
        config: The config holding the target.

    Returns:
        A frozen plan in original block numbering; blocks losing both sublayers are listed in ``removed_blocks``.

    Raises:
        PruningTargetError: If the target cannot be met with the scored, unprotected candidates.
    """
    if scores.sublayers is None:
        raise ValueError("These scores are for blocks; sublayer plans need sublayer scores.")
    kinds = scores.sublayers
    protected = set(scores.protected)
    if scores.removal_order is not None:
        order = list(scores.removal_order)
    else:
        order = sorted(range(len(scores.values)), key=lambda i: (scores.values[i], i))
    order = [i for i in order if i not in protected]
    attention_left = kinds.count(ATTENTION)
    wanted = config.num_to_remove(len(kinds))
    budget = None if wanted is not None else int(config.target_num_params or 0)
    remaining = scores.total_params
    chosen: list[int] = []
    for position in order:
        if (wanted is not None and len(chosen) >= wanted) or (budget is not None and remaining <= budget):
            break
        if kinds[position] == ATTENTION and attention_left == 1:
            continue  # the last attention sublayer stays
        chosen.append(position)
        attention_left -= kinds[position] == ATTENTION
        remaining -= scores.num_params[position]
    if (wanted is not None and len(chosen) < wanted) or (budget is not None and remaining > budget):
        raise PruningTargetError(f"The scored, unprotected sublayers cannot meet the target {config.num_to_remove}.")
    attention = {scores.layer_indices[i] for i in chosen if kinds[i] == ATTENTION}
    mlp = {scores.layer_indices[i] for i in chosen if kinds[i] == MLP}
    return PruningPlan(
        granularity="sublayer",
        removed_blocks=tuple(sorted(attention & mlp)),
        removed_attention=tuple(sorted(attention - mlp)),
        removed_mlp=tuple(sorted(mlp - attention)),
        source_num_hidden_layers=scores.source_num_hidden_layers,
        source_fingerprint=dict(scores.source_fingerprint),
        criterion=scores.criterion,
        reason={
            "target": config.describe_target(),
            "removal_order": [scores.candidate_name(i) for i in chosen],
            "scores": {scores.candidate_name(i): scores.values[i] for i in chosen},
            "protected": sorted({scores.layer_indices[i] for i in protected}),
            "order": "criterion removal order" if scores.removal_order is not None else "lowest importance",
        },
    )
