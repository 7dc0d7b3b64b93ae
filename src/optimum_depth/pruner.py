"""``DepthPruner``: score -> plan -> apply, with every impossible request refused before the model is touched."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from .architectures import get_architecture, get_decoder_layers, unwrap_model
from .calibration import CalibrationData
from .config import DepthPruningConfig, PruningTargetError
from .criteria import CRITERIA
from .plan import PruningPlan
from .provenance import original_layer_indices, record_pruning_event, source_num_layers
from .scores import LayerScores
from .scoring import count_parameters, resolve_calibration, score_blocks
from .sublayer_pruning import apply_sublayer_plan, check_sublayer_target, plan_sublayers, score_sublayers
from .surgery import remove_layers

logger = logging.getLogger(__name__)

__all__ = ["DepthPruner"]


def _target_description(config: DepthPruningConfig) -> dict[str, Any]:
    for name in ("pruning_ratio", "num_layers_to_remove", "target_num_params"):
        value = getattr(config, name)
        if value is not None:
            return {name: value}
    return {}


class DepthPruner:
    """Removes the least important decoder blocks (or, with ``granularity="sublayer"``, attention/MLP sublayers).

    Args:
        config: What to remove and how to score it.

    Example:
        ```python
        >>> from optimum_depth import DepthPruner, DepthPruningConfig
        >>> pruner = DepthPruner(DepthPruningConfig(criterion="magnitude", pruning_ratio=0.25))
        >>> model = pruner.prune(model)  # doctest: +SKIP
        >>> model.config.surviving_layers  # doctest: +SKIP
        ```
    """

    def __init__(self, config: DepthPruningConfig):
        if not isinstance(config, DepthPruningConfig):
            raise TypeError(f"`config` must be a DepthPruningConfig, got {type(config).__name__}.")
        self.config = config
        self.last_scores: LayerScores | None = None
        self.last_plan: PruningPlan | None = None

    # ------------------------------------------------------------------------------------------------- checks
    def check(self, model: nn.Module) -> None:
        """Validates the config against ``model`` (family, protection, target) without changing anything.

        Raises:
            UnsupportedArchitectureError: If the model family is not supported.
            PruningTargetError: If the target cannot be met with the unprotected blocks.
        """
        get_architecture(model)
        if self.config.granularity == "sublayer":
            check_sublayer_target(model, self.config)
            return
        layers = get_decoder_layers(model)
        num_blocks = len(layers)
        protected = self.config.protected_blocks(num_blocks, original_layer_indices(unwrap_model(model).config))
        removable = num_blocks - len(protected)
        wanted = self.config.num_to_remove(num_blocks)
        if wanted is not None:
            if wanted >= num_blocks:
                raise PruningTargetError(f"Cannot remove {wanted} blocks from a model with {num_blocks} blocks.")
            if wanted > removable:
                raise PruningTargetError(
                    f"The target removes {wanted} blocks but only {removable} of {num_blocks} are unprotected "
                    f"(protected positions {protected}); lower the target or the protection."
                )
            return
        total = count_parameters(unwrap_model(model))
        target = int(self.config.target_num_params or 0)
        if target >= total:
            raise PruningTargetError(f"The model already has {total} <= target_num_params={target} parameters.")
        removable_params = sorted(
            (count_parameters(block) for i, block in enumerate(layers) if i not in set(protected)), reverse=True
        )
        if len(removable_params) == num_blocks:  # at least one block must stay
            removable_params = removable_params[:-1]
        floor = total - sum(removable_params)
        if target < floor:
            raise PruningTargetError(
                f"target_num_params={target} is unreachable: removing every removable block leaves {floor} parameters."
            )

    # ------------------------------------------------------------------------------------------------ pipeline
    def score(self, model: nn.Module, calibration=None, tokenizer=None) -> LayerScores:
        """Scores every block of ``model``.

        Args:
            model: The model, possibly wrapped by peft/DDP.
            calibration: Calibration source (see :func:`optimum_depth.prepare_calibration`), or prepared data.
            tokenizer: Tokenizer for text calibration sources.

        Returns:
            The block scores.
        """
        self.check(model)
        data = calibration if isinstance(calibration, CalibrationData) else None
        if data is None and CRITERIA[self.config.criterion].needs_calibration:
            data = resolve_calibration(self.config, model, calibration, tokenizer)
        if self.config.granularity == "sublayer":
            scores = score_sublayers(model, self.config, data)
        else:
            scores = score_blocks(model, self.config, data)
        self.last_scores = scores
        return scores

    def plan(self, scores: LayerScores) -> PruningPlan:
        """Chooses the blocks to remove from ``scores`` according to the config's target.

        Greedy criteria's own removal order is followed; otherwise the least important unprotected blocks go,
        ties broken by lower index.

        Args:
            scores: Scores from :meth:`score`.

        Returns:
            A frozen plan in original numbering.
        """
        if scores.granularity == "sublayer":
            self.last_plan = plan_sublayers(scores, self.config)
            return self.last_plan
        protected = set(scores.protected)
        if scores.removal_order is not None:
            order = list(scores.removal_order)
        else:
            order = sorted(range(len(scores.values)), key=lambda i: (scores.values[i], i))
        order = [i for i in order if i not in protected]
        wanted = self.config.num_to_remove(len(scores.values))
        if wanted is not None:
            if len(order) < wanted:
                raise PruningTargetError(f"Only {len(order)} removable blocks were scored; the target asks {wanted}.")
            chosen = order[:wanted]
        else:
            budget = int(self.config.target_num_params or 0)
            remaining = scores.total_params
            chosen = []
            for position in order[: len(scores.values) - 1]:
                if remaining <= budget:
                    break
                chosen.append(position)
                remaining -= scores.num_params[position]
            if remaining > budget:
                raise PruningTargetError(f"target_num_params={budget} is unreachable with the unprotected blocks.")
        plan = PruningPlan(
            granularity="block",
            removed_blocks=tuple(scores.layer_indices[i] for i in chosen),
            source_num_hidden_layers=None,
            criterion=scores.criterion,
            reason={
                "target": _target_description(self.config),
                "scores": {str(scores.layer_indices[i]): scores.values[i] for i in chosen},
                "protected": sorted(scores.layer_indices[i] for i in protected),
                "order": "criterion removal order" if scores.removal_order is not None else "lowest importance",
            },
        )
        self.last_plan = plan
        return plan

    def apply(self, model: nn.Module, plan: PruningPlan) -> nn.Module:
        """Removes the blocks of ``plan`` from ``model`` in place and records the provenance in its config.

        Args:
            model: The model the plan was made for (or a copy of it), possibly wrapped by peft.
            plan: A block plan in original numbering.

        Returns:
            ``model`` itself, pruned in place (a sublayer plan converts a stock model to its
            ``Pruned<Family>ForCausalLM`` class in place first).

        Raises:
            ValueError: If the plan does not fit the model; nothing is changed then.
        """
        if plan.granularity == "sublayer":
            apply_sublayer_plan(model, plan)
            scores = self.last_scores
            record_pruning_event(
                unwrap_model(model).config,
                {
                    "granularity": "sublayer",
                    "criterion": plan.criterion,
                    "target": _target_description(self.config),
                    "removed_layers": list(plan.removed_blocks),
                    "removed_attention": list(plan.removed_attention),
                    "removed_mlp": list(plan.removed_mlp),
                    "distance": self.config.distance,
                    "search": self.config.sublayer_search,
                    "protected_layers": plan.reason.get("protected", []),
                    "calibration": dict(scores.calibration) if scores is not None else {},
                    "seed": self.config.seed,
                },
            )
            return model
        config = unwrap_model(model).config
        if plan.source_num_hidden_layers is not None and plan.source_num_hidden_layers != source_num_layers(config):
            raise ValueError(
                f"The plan refers to a model with {plan.source_num_hidden_layers} original blocks; this model "
                f"descends from one with {source_num_layers(config)}."
            )
        original = original_layer_indices(config)
        missing = [i for i in plan.removed_blocks if i not in original]
        if missing:
            raise ValueError(
                f"Blocks {missing} of the plan are not in this model (it has original blocks {original})."
            )
        positions = [original.index(i) for i in plan.removed_blocks]
        remove_layers(model, positions)
        scores = self.last_scores
        record_pruning_event(
            config,
            {
                "granularity": "block",
                "criterion": plan.criterion,
                "target": _target_description(self.config),
                "removed_layers": list(plan.removed_blocks),
                "protected_layers": plan.reason.get("protected", []),
                "calibration": dict(scores.calibration) if scores is not None else {},
                "seed": self.config.seed,
            },
        )
        return model

    def prune(self, model: nn.Module, calibration=None, tokenizer=None) -> nn.Module:
        """Scores, plans and applies in one call.

        Args:
            model: The model to prune in place, possibly wrapped by peft.
            calibration: Calibration source for data-driven criteria.
            tokenizer: Tokenizer for text calibration sources.

        Returns:
            The pruned model (see :meth:`apply`); the scores and plan are kept as ``last_scores`` / ``last_plan``.
        """
        scores = self.score(model, calibration=calibration, tokenizer=tokenizer)
        plan = self.plan(scores)
        return self.apply(model, plan)
