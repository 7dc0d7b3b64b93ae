"""The ``granularity="sublayer"`` steps of :class:`optimum_depth.DepthPruner`: check, score, plan and apply.

Candidates are the attention and MLP sublayers present in the model (:func:`optimum_depth.sublayers.list_sublayers`);
targets count them (``pruning_ratio`` of the sublayers, ``num_layers_to_remove`` sublayers) or their parameters.
"""

from __future__ import annotations

import logging

from torch import nn

from .architectures import unwrap_model
from .calibration import CalibrationData
from .config import DepthPruningConfig, PruningTargetError
from .criteria import ScoringContext
from .plan import PruningPlan
from .provenance import original_layer_indices, source_num_layers
from .scores import LayerScores
from .scoring import check_calibration, count_parameters, run_criterion
from .sublayer_surgery import (
    check_conversion_to_pruned_class,
    is_sublayer_pruned,
    pruned_model_class,
    remove_sublayers,
)
from .sublayers import ATTENTION, MLP, list_sublayers, protected_sublayers, sublayer_num_params

logger = logging.getLogger(__name__)

__all__ = ["apply_sublayer_plan", "check_sublayer_target", "plan_sublayers", "score_sublayers"]


def check_sublayer_target(model: nn.Module, config: DepthPruningConfig) -> None:
    """Validates a sublayer-pruning config against ``model`` without changing anything.

    Raises:
        UnsupportedArchitectureError: If the family has no pruned model class.
        PruningTargetError: If the target cannot be met with the unprotected sublayers.
        RuntimeError: If a wrapped stock model cannot be converted to its pruned class in place.
    """
    inner = unwrap_model(model)
    pruned_model_class(inner)  # raises UnsupportedArchitectureError, naming the supported families
    if model is not inner and not is_sublayer_pruned(model):
        check_conversion_to_pruned_class(model)  # a wrapped stock model is converted in place by `apply`
    sublayers = list_sublayers(model)
    protected = set(protected_sublayers(config, model, sublayers))
    removable = [i for i in range(len(sublayers)) if i not in protected]
    if not any(sublayers[i].kind == ATTENTION for i in protected):
        attention = [i for i in removable if sublayers[i].kind == ATTENTION]
        removable = [i for i in removable if i not in attention[:1]]  # one attention sublayer must stay
    wanted = config.num_to_remove(len(sublayers))
    if wanted is not None:
        if wanted > len(removable):
            raise PruningTargetError(
                f"The target removes {wanted} of {len(sublayers)} sublayers but only {len(removable)} may go "
                f"({len(protected)} protected, and one attention sublayer must stay)."
            )
        return
    total = count_parameters(inner)
    target = int(config.target_num_params or 0)
    if target >= total:
        raise PruningTargetError(f"The model already has {total} <= target_num_params={target} parameters.")
    floor = total - sum(sublayer_num_params(model, sublayers[i]) for i in removable)
    if target < floor:
        raise PruningTargetError(
            f"target_num_params={target} is unreachable: removing every removable sublayer leaves {floor} parameters."
        )


def score_sublayers(model: nn.Module, config: DepthPruningConfig, calibration: CalibrationData | None) -> LayerScores:
    """Runs the sublayer criterion ``config.criterion`` and packages its result.

    Args:
        model: The model (checked with :func:`check_sublayer_target`).
        config: The pruning config.
        calibration: Calibration data.

    Returns:
        Scores with one candidate per sublayer (``sublayers`` gives the kinds, ``layer_indices`` the original blocks).
    """
    check_calibration(config, calibration)
    inner = unwrap_model(model)
    sublayers = list_sublayers(model)
    protected = protected_sublayers(config, model, sublayers)
    context = ScoringContext(
        model=inner,
        config=config,
        calibration=calibration,
        num_to_remove=config.num_to_remove(len(sublayers)),
        protected=frozenset(protected),
    )
    result, elapsed = run_criterion(context)
    logger.info("Scored %d sublayers with %r in %.2fs.", len(sublayers), config.criterion, elapsed)
    return LayerScores(
        criterion=config.criterion,
        layer_indices=[s.original_block for s in sublayers],
        values=[float(v) for v in result.values],
        sublayers=[s.kind for s in sublayers],
        num_params=[sublayer_num_params(model, s) for s in sublayers],
        total_params=count_parameters(inner),
        protected=protected,
        removal_order=result.removal_order,
        calibration=dict(calibration.spec) if calibration is not None else {},
        elapsed_seconds=elapsed,
        extra={**result.extra, "source_num_hidden_layers": source_num_layers(inner.config)},
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
        source_num_hidden_layers=scores.extra.get("source_num_hidden_layers"),
        criterion=scores.criterion,
        reason={
            "removal_order": [scores.candidate_name(i) for i in chosen],
            "scores": {scores.candidate_name(i): scores.values[i] for i in chosen},
            "protected": sorted({scores.layer_indices[i] for i in protected}),
            "order": "criterion removal order" if scores.removal_order is not None else "lowest importance",
        },
    )


def apply_sublayer_plan(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Removes the sublayers of ``plan`` (original numbering) from ``model``.

    Args:
        model: The model the plan was made for.
        plan: A sublayer plan.

    Returns:
        ``model`` itself, pruned in place (a stock model is converted to its pruned class in place first).

    Raises:
        ValueError: If the plan does not fit the model; nothing is changed then.
    """
    if plan.granularity != "sublayer":
        raise ValueError("apply_sublayer_plan takes sublayer plans.")
    config = unwrap_model(model).config
    if plan.source_num_hidden_layers is not None and plan.source_num_hidden_layers != source_num_layers(config):
        raise ValueError(
            f"The plan refers to a model with {plan.source_num_hidden_layers} original blocks; this model descends "
            f"from one with {source_num_layers(config)}."
        )
    original = original_layer_indices(config)
    named = set(plan.removed_blocks) | set(plan.removed_attention) | set(plan.removed_mlp)
    missing = sorted(i for i in named if i not in original)
    if missing:
        raise ValueError(f"Blocks {missing} of the plan are not in this model (it has original blocks {original}).")
    present = {(s.original_block, s.kind) for s in list_sublayers(model)}
    attention = sorted(set(plan.removed_attention) | {b for b in plan.removed_blocks if (b, ATTENTION) in present})
    mlp = sorted(set(plan.removed_mlp) | {b for b in plan.removed_blocks if (b, MLP) in present})
    return remove_sublayers(model, [original.index(b) for b in attention], [original.index(b) for b in mlp])
