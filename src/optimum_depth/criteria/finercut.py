"""FinerCut (Zhang et al., 2024): remove the attention / MLP sublayers whose absence changes the outputs least.

Candidates are all attention and MLP sublayers. The default greedy search removes, one at a time, the candidate
whose removal (together with those already removed) gives the smallest distance between the pruned and the dense
model's next-token distributions on the calibration data; ``sublayer_search="one_shot"`` ranks every candidate once
by its removal alone. See :mod:`optimum_depth.sublayers.search` and :mod:`optimum_depth.algorithms.output_distances`.
"""

from __future__ import annotations

from ..algorithms.output_distances import get_distance
from ..sublayers.engine import SublayerEngine
from ..sublayers.search import StopRule, greedy_search, one_shot_search
from .base import Criterion, CriterionResult, ScoringContext, register_criterion


def _stop_rule(engine: SublayerEngine, context: ScoringContext) -> StopRule:
    wanted = context.num_to_remove
    if wanted is not None:
        return lambda order: len(order) >= wanted
    budget = int(context.config.target_num_params or 0)
    total = sum(p.numel() for p in context.model.parameters())
    return lambda order: total - sum(engine.sublayer_params(c) for c in order) <= budget


def finercut_criterion(context: ScoringContext) -> CriterionResult:
    """Scores every sublayer by the output distance its removal causes (higher = more important).

    Args:
        context: Model, config (``distance``, ``sublayer_search``, ``batch_size``), calibration, target and the
            protected candidate positions.

    Returns:
        Per-candidate distances, the removal order and search statistics in ``extra``.
    """
    if context.calibration is None:
        raise ValueError("FinerCut needs calibration data.")
    config = context.config
    engine = SublayerEngine(context.model, context.calibration, get_distance(config.distance), config.batch_size)
    engine.capture()
    protected = set(context.protected)
    if config.sublayer_search == "one_shot":
        result = one_shot_search(engine, protected)
    else:
        stop = _stop_rule(engine, context)
        result = greedy_search(
            engine, protected, stop, use_bound=config.early_exit, expected_removals=context.num_to_remove
        )
    batches = len(engine.batches)
    extra = {
        "distance": config.distance,
        "search": config.sublayer_search,
        "values": "mean distance to the dense outputs when the candidate is removed (higher = more important)",
        "step_distances": result.step_distances,
        "lower_bound_candidates": result.lower_bounds,
        "evaluations": result.evaluations,
        "evaluations_cut_short": result.cut_short,
        "sublayer_runs": engine.sublayer_runs,
        "head_runs": engine.head_runs,
        "forward_equivalents": engine.work / (engine.forward_work * max(1, batches)),
    }
    return CriterionResult(values=result.values, removal_order=result.removal_order, extra=extra)


FINERCUT = register_criterion(
    Criterion("finercut", finercut_criterion, granularity="sublayer", needs_calibration=True)
)
