"""``DepthPruner``: score -> plan -> apply, with every impossible request refused before the model is touched.

A thin dispatcher over the two granularities, which have the same steps: a target check, scoring
(:mod:`optimum_depth.criteria.scoring`), planning and surgery (:mod:`optimum_depth.blocks`,
:mod:`optimum_depth.sublayers`). The checks both share live here: the model is a
supported, fully loaded causal LM with consistent provenance, and a plan is applied only to the model it was made
for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .architectures import ModelFacts, resolve_model
from .blocks.planning import check_block_target, plan_blocks
from .blocks.surgery import apply_block_plan
from .calibration import CalibrationData, SharedCalibration, prepare_calibration, resolve_calibration
from .compensation.compensate import (
    compensation_calibration,
    fit_compensation,
    fold_compensation,
    record_compensation,
)
from .config import DepthPruningConfig
from .criteria import CRITERIA
from .criteria.scoring import score_blocks, score_sublayers
from .errors import ConfigError, PlanMismatchError
from .finiteness import check_finite_maps, check_finite_scores, check_finite_weights
from .plan import PruningPlan
from .provenance import record_pruning_event
from .scores import LayerScores
from .sublayers.planning import check_sublayer_target, plan_sublayers
from .sublayers.surgery import apply_sublayer_plan

logger = logging.getLogger(__name__)

__all__ = ["DepthPruner"]


@dataclass(frozen=True)
class _Granularity:
    """The steps of one granularity."""

    check: Callable[[ModelFacts, DepthPruningConfig], None]
    score: Callable[[ModelFacts, DepthPruningConfig, CalibrationData | None], LayerScores]
    plan: Callable[[LayerScores, DepthPruningConfig], PruningPlan]
    apply: Callable[[ModelFacts, PruningPlan], None]


GRANULARITY_STEPS: dict[str, _Granularity] = {
    "block": _Granularity(check_block_target, score_blocks, plan_blocks, apply_block_plan),
    "sublayer": _Granularity(check_sublayer_target, score_sublayers, plan_sublayers, apply_sublayer_plan),
}


def _check_loaded(facts: ModelFacts) -> None:
    """Refuses a model whose weights are on the ``meta`` device without an accelerate offload hook."""
    for name, module in facts.inner.named_modules():
        if getattr(module, "_hf_hook", None) is not None:
            continue  # accelerate offload: the weights are brought in at forward time
        own = [n for n, p in module.named_parameters(recurse=False) if p.device.type == "meta"]
        if own:
            raise ConfigError(
                f"The model's weights are not loaded: {name + '.' if name else ''}{own[0]} is on the 'meta' device "
                "(an empty model, e.g. built under `init_empty_weights()`). Load the weights first."
            )


def check_plan_fits(facts: ModelFacts, plan: PruningPlan) -> None:
    """Checks that ``plan`` was made for this model and names only blocks it still has.

    Args:
        facts: The model's resolved facts.
        plan: The plan.

    Raises:
        PlanMismatchError: If the plan was made for a model with another block count or config fingerprint, or
            removes blocks this model no longer has.
    """
    if plan.source_num_hidden_layers != facts.source_num_layers:
        raise PlanMismatchError(
            f"The plan was made for a model with {plan.source_num_hidden_layers} original blocks; this model "
            f"descends from one with {facts.source_num_layers}."
        )
    fingerprint = facts.fingerprint
    differing = {
        key: (value, fingerprint.get(key))
        for key, value in plan.source_fingerprint.items()
        if key in fingerprint and fingerprint[key] != value
    }
    if differing:
        shown = ", ".join(f"{k}: plan {a!r} vs model {b!r}" for k, (a, b) in differing.items())
        raise PlanMismatchError(f"The plan was made for another model ({shown}).")
    named = set(plan.removed_blocks) | set(plan.removed_attention) | set(plan.removed_mlp)
    missing = sorted(i for i in named if i not in facts.original_indices)
    if missing:
        raise PlanMismatchError(
            f"Blocks {missing} of the plan are not in this model (it has original blocks {facts.original_indices})."
        )


def auto_calibration(source: Any, tokenizer: Any, model: nn.Module, config: DepthPruningConfig) -> CalibrationData:
    """The calibration draw of ``criterion="auto"``: ``auto_fit_samples + auto_heldout_samples`` sequences.

    Raises:
        ConfigError: If there is no calibration source.
    """
    if source is None:
        raise ConfigError(
            "criterion='auto' compares the candidates on held-out calibration text: pass `calibration=` or set "
            "`calibration_dataset`."
        )
    total = config.auto_fit_samples + config.auto_heldout_samples
    return prepare_calibration(
        source, tokenizer, model=model, num_samples=total, seq_len=config.seq_len, seed=config.seed
    )


def shared_calibration(calibration: Any, config: DepthPruningConfig, tokenizer: Any = None) -> Any:
    """``calibration`` (default: ``config.calibration_dataset``) wrapped for the draws of one run, so that scoring and
    compensation read and tokenize it once (a prepared :class:`CalibrationData`, or nothing, is returned as it is)."""
    source = calibration if calibration is not None else config.calibration_dataset
    if source is None or isinstance(source, (CalibrationData, SharedCalibration)):
        return calibration
    return SharedCalibration(source, tokenizer)


class DepthPruner:
    """Removes the least important decoder blocks (or, with ``granularity="sublayer"``, attention/MLP sublayers).

    Args:
        config: What to remove and how to score it.

    Example:
        ```python
        >>> from optimum_depth import DepthPruner, DepthPruningConfig
        >>> pruner = DepthPruner(DepthPruningConfig(criterion="magnitude", pruning_ratio=0.25))
        >>> pruner.prune(model)  # doctest: +SKIP
        >>> model.config.surviving_layers  # doctest: +SKIP
        ```
    """

    def __init__(self, config: DepthPruningConfig):
        if not isinstance(config, DepthPruningConfig):
            raise TypeError(f"`config` must be a DepthPruningConfig, got {type(config).__name__}.")
        self.config = config
        self.steps = GRANULARITY_STEPS[config.granularity]
        self.last_scores: LayerScores | None = None
        self.last_plan: PruningPlan | None = None

    def _facts(self, model: nn.Module) -> ModelFacts:
        facts = resolve_model(model)
        _check_loaded(facts)
        return facts

    def check(self, model: nn.Module) -> None:
        """Validates the config against ``model`` (family, weights, provenance, target) without changing anything.

        Raises:
            UnsupportedArchitectureError: If the model family is not supported.
            ProvenanceError: If the model's recorded provenance is inconsistent.
            ConfigError: If the model's weights are not loaded (``meta`` device).
            PruningTargetError: If the target cannot be met with the unprotected candidates.
        """
        self.steps.check(self._facts(model), self.config)

    def score(self, model: nn.Module, calibration: Any = None, tokenizer: Any = None) -> LayerScores:
        """Scores every candidate (block or sublayer) of ``model``.

        Args:
            model: The model, possibly wrapped by peft/DDP.
            calibration: Calibration source (see :func:`optimum_depth.prepare_calibration`), or prepared data. The
                compensation-aware selection samples it with the compensation's settings (a few hundred sequences).
            tokenizer: Tokenizer for text calibration sources.

        Returns:
            The scores.

        Raises:
            NonFiniteError: If a weight, or a score, is NaN or infinite (the block and tensor are named).
        """
        facts = self._facts(model)
        self.steps.check(facts, self.config)
        check_finite_weights(facts, action="score it")
        data = calibration if isinstance(calibration, CalibrationData) else None
        settings = self.config.compensation
        if data is None and self.config.criterion == "auto":
            source = calibration if calibration is not None else self.config.calibration_dataset
            data = auto_calibration(source, tokenizer, facts.inner, self.config)
        elif data is None and settings is not None and settings.selection == "aware":
            source = calibration if calibration is not None else self.config.calibration_dataset
            data = compensation_calibration(source, tokenizer, facts.inner, settings)
        elif data is None and CRITERIA[self.config.criterion].needs_calibration:
            data = resolve_calibration(self.config, facts.inner, calibration, tokenizer)
        scores = self.steps.score(facts, self.config, data)
        check_finite_scores(scores, facts, data.input_ids if data is not None else None)
        self.last_scores = scores
        return scores

    def plan(self, scores: LayerScores) -> PruningPlan:
        """Chooses what to remove from ``scores`` according to the config's target.

        A greedy criterion's own removal order is followed; otherwise the least important unprotected candidates
        go, ties broken by lower index.

        Args:
            scores: Scores from :meth:`score`.

        Returns:
            A frozen plan in original numbering, recording the model it was made for.
        """
        if scores.granularity != self.config.granularity:
            raise ConfigError(
                f"These are {scores.granularity} scores; this pruner's config has granularity "
                f"{self.config.granularity!r}."
            )
        self.last_plan = self.steps.plan(scores, self.config)
        return self.last_plan

    def _event(self, plan: PruningPlan) -> dict[str, Any]:
        scores = self.last_scores
        event: dict[str, Any] = {
            "granularity": plan.granularity,
            "criterion": plan.criterion,
            "target": self.config.describe_target(),
            "removed_layers": list(plan.removed_blocks),
        }
        if plan.granularity == "sublayer":
            event.update(
                removed_attention=list(plan.removed_attention),
                removed_mlp=list(plan.removed_mlp),
                distance=self.config.distance,
                search=self.config.sublayer_search,
            )
        event.update(
            protected_layers=plan.reason.get("protected", []),
            calibration=dict(scores.calibration) if scores is not None else {},
            seed=self.config.seed,
        )
        return event

    def apply(self, model: nn.Module, plan: PruningPlan, calibration: Any = None, tokenizer: Any = None) -> nn.Module:
        """Removes what ``plan`` names from ``model``, in place, and records the provenance in its config.

        With ``config.compensation``, the compensation maps are fitted on the model before anything is removed, and
        folded into the kept blocks after (see :mod:`optimum_depth.compensation`).

        Args:
            model: The model the plan was made for (or a copy of it), possibly wrapped by peft or DDP.
            plan: A plan in original numbering.
            calibration: Calibration source of the compensation (default: ``config.calibration_dataset``); only used
                with ``config.compensation``.
            tokenizer: Tokenizer for text calibration sources.

        Returns:
            ``model`` itself, pruned (a sublayer plan converts a stock model to its ``Pruned<Family>ForCausalLM``
            class in place first).

        Raises:
            PlanMismatchError: If the plan was made for another model; nothing is changed then.
            ConfigError: If the plan's granularity differs from the config's.
            NonFiniteError: If a weight the pruned model keeps, or a compensation map, is NaN or infinite.
        """
        if not isinstance(plan, PruningPlan):
            raise ConfigError(f"`plan` must be a PruningPlan, got {type(plan).__name__}.")
        facts = self._facts(model)
        check_plan_fits(facts, plan)
        kept = [i for i in facts.original_indices if i not in set(plan.removed_blocks)]
        check_finite_weights(facts, blocks=kept, action="prune it")
        compensation = self._fit_compensation(facts, plan, calibration, tokenizer)
        if compensation is not None:
            check_finite_maps(compensation)
        GRANULARITY_STEPS[plan.granularity].apply(facts, plan)
        record_pruning_event(facts.inner.config, self._event(plan))
        if compensation is not None:
            fold_compensation(model, compensation)
            record_compensation(facts.inner.config, compensation)
        return model

    def _fit_compensation(self, facts: ModelFacts, plan: PruningPlan, calibration: Any, tokenizer: Any):
        settings = self.config.compensation
        if settings is None:
            return None
        source = calibration if calibration is not None else self.config.calibration_dataset
        data = compensation_calibration(source, tokenizer, facts.inner, settings)
        return fit_compensation(facts, plan, data, settings)

    def prune(self, model: nn.Module, calibration: Any = None, tokenizer: Any = None) -> nn.Module:
        """Scores, plans and applies in one call.

        The calibration source is read and tokenized once for the scoring and the compensation, and a draw both ask
        for (the compensation-aware selection's, which is the compensation fit's) is made once
        (:class:`~optimum_depth.calibration.SharedCalibration`).

        Args:
            model: The model to prune in place, possibly wrapped by peft.
            calibration: Calibration source for data-driven criteria.
            tokenizer: Tokenizer for text calibration sources.

        Returns:
            ``model`` itself, pruned; the scores and plan are kept as ``last_scores`` / ``last_plan``.
        """
        calibration = shared_calibration(calibration, self.config, tokenizer)
        scores = self.score(model, calibration=calibration, tokenizer=tokenizer)
        return self.apply(model, self.plan(scores), calibration=calibration, tokenizer=tokenizer)
