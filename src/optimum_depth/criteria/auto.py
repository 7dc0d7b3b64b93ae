"""``criterion="auto"``: try the block criteria and keep the plan whose compensated model is best on held-out text.

No block criterion is best on every model (on SmolLM2-135M Block Influence leads the plain criteria, on a Qwen2 model
magnitude + least squares beat it by far), so the recipe is chosen per model, on calibration text only:

1. one calibration draw is split into *fit* sequences (``auto_fit_samples``; the first ``num_samples`` of them score
   the criteria) and *held-out* ones (``auto_heldout_samples``), and the dense hidden state entering every block is
   cached once for all of them: every candidate shares this cache;
2. each candidate (:data:`~optimum_depth.config.AUTO_CANDIDATES`: a block criterion; ``"window"``, the run of
   consecutive blocks the compensation repairs best, :mod:`.windows`; or ``"aware"``, SLEB's greedy rounds with
   compensation-aware selection) makes its plan for the target, as it would alone (its own protection defaults
   included);
3. the plan is compensated as the run will be (with ``compensation``: one least-squares map per cut, fitted on the
   fit sequences' dense states, independent maps as in the aware selection; without: none) and its mean next-token
   loss on the held-out sequences is computed from the cached states (only the blocks from the first cut on run);
4. the plan with the lowest held-out loss is kept.

Reconstruction (``method="reconstruct"``) is not run per candidate: the candidates are compared with their linear
maps, and the kept plan is then compensated (and reconstructed) by the pruner as usual.

Cost: the candidates run cheapest first; before each, its CPU time is estimated from the measured cost of one block
forward and one LM head per sequence (taken while the cache is built), and a candidate that would take the total
beyond ``auto_max_seconds`` is skipped. Every candidate's plan, held-out loss, estimate and actual CPU time (or why
it was skipped) go into ``LayerScores.extra["auto"]``, which the plan and the model card repeat.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from ..calibration import CalibrationData
from ..config import AUTO_CANDIDATES, DepthPruningConfig
from ..errors import ConfigError, PruningTargetError
from .base import Criterion, CriterionResult, ScoringContext, register_criterion

logger = logging.getLogger(__name__)

__all__ = ["AUTO", "auto_criterion", "estimate_seconds"]


@dataclass(frozen=True)
class UnitCosts:
    """Measured CPU-seconds of one block forward and one LM head + loss, per calibration sequence."""

    block: float
    head: float


def _sleb_block_forwards(num_blocks: int, rounds: int) -> int:
    return num_blocks + sum((num_blocks - r) * (num_blocks - r - 1) // 2 for r in range(rounds))


def estimate_seconds(
    candidate: str, num_blocks: int, rounds: int, config: DepthPruningConfig, fit: int, heldout: int, unit: UnitCosts
) -> float:
    """Upper estimate of a candidate's CPU-seconds: its scoring, then its evaluation (maps + held-out suffix).

    Args:
        candidate: A name of :data:`~optimum_depth.config.AUTO_CANDIDATES`.
        num_blocks: Blocks of the model.
        rounds: Blocks the target removes (greedy rounds).
        config: The pruning config (scoring sequences, compensation settings).
        fit: Fit sequences.
        heldout: Held-out sequences.
        unit: The measured unit costs.

    Returns:
        The estimate (the early exit of PPL/SLEB usually makes them cheaper).
    """
    scoring = min(config.num_samples, fit)
    evaluation = rounds * fit * unit.block + heldout * (num_blocks * unit.block + unit.head)
    if candidate == "magnitude":
        return evaluation
    if candidate in ("block_influence", "angular"):
        return scoring * num_blocks * unit.block + evaluation
    if candidate == "window":
        windows = max(1, num_blocks - rounds + 1)
        screen = max(1, round(0.2 * fit))
        return windows * (fit + screen * num_blocks / 2) * unit.block + evaluation
    if candidate == "taylor":
        return 3 * scoring * (num_blocks * unit.block + unit.head) + evaluation
    if candidate == "ppl":
        forwards = num_blocks + num_blocks * (num_blocks - 1) // 2
        return scoring * (forwards * unit.block + num_blocks * unit.head) + evaluation
    if candidate == "sleb":
        heads = sum(num_blocks - r for r in range(rounds))
        return scoring * (_sleb_block_forwards(num_blocks, rounds) * unit.block + heads * unit.head) + evaluation
    settings = config.compensation  # "aware": SLEB's rounds, each candidate after its own map
    samples = min(settings.selection_samples, fit) if settings is not None else fit
    lazy = settings.selection_candidates if settings is not None else 0
    tried = num_blocks + sum(
        num_blocks - r if lazy == 0 else min(num_blocks - r, lazy + 2 * r) for r in range(1, rounds)
    )
    scorers = max(1, round(0.2 * samples))
    per_candidate = samples * unit.block + scorers * (num_blocks / 2 * unit.block + unit.head)
    return samples * num_blocks * unit.block + tried * per_candidate + evaluation


def _candidate_config(config: DepthPruningConfig, candidate: str) -> DepthPruningConfig:
    """The config a candidate runs with: its criterion, the run's compensation, selection by the criterion (or
    compensation-aware for ``"aware"``)."""
    compensation = config.compensation
    if compensation is not None:
        selection = "aware" if candidate == "aware" else "criterion"
        compensation = dataclasses.replace(compensation, selection=selection)
    criterion = "sleb" if candidate == "aware" else candidate
    return dataclasses.replace(config, criterion=criterion, compensation=compensation, auto_candidates=None)


class _SharedCache:
    """The calibration split and the dense states every candidate uses, with the measured unit costs."""

    def __init__(self, context: ScoringContext):
        from ..architectures import as_facts
        from ..blocks.engine import BlockwiseEngine
        from ..blocks.replay import capture_block_inputs
        from ..compensation.selection import dense_states

        data = context.calibration
        if data is None or data.num_samples < 3:
            raise ConfigError("criterion='auto' needs at least 3 calibration sequences (fit and held out).")
        config = context.config
        total = data.num_samples
        wanted = config.auto_heldout_samples
        self.heldout = wanted if total >= wanted + 2 else max(1, total // 3)  # a short draw: a third held out
        self.fit = total - self.heldout
        self.facts = as_facts(context.model)
        self.batch_size = max(config.batch_size, 8)
        ids = data.input_ids
        self.fit_data = CalibrationData(ids[: self.fit], dict(data.spec))
        self.scoring_data = CalibrationData(ids[: min(config.num_samples, self.fit)], dict(data.spec))
        self.heldout_ids = ids[self.fit :]
        start = time.process_time()
        captured = capture_block_inputs(self.facts.inner, ids, self.batch_size)
        self.kwargs = captured.block_kwargs
        self.states = dense_states(
            self.facts, captured.hidden_states, self.kwargs, self.batch_size, "auto: dense states"
        )
        block_seconds = (time.process_time() - start) / max(1, total * len(self.facts.layers))
        start = time.process_time()
        self.engine = BlockwiseEngine(
            self.facts.inner, CalibrationData(self.heldout_ids, {}), batch_size=self.batch_size
        )
        self.dense_nll = self.heldout_nll([], {}, 0)
        head_seconds = (time.process_time() - start) / max(1, self.heldout)
        self.unit = UnitCosts(block_seconds, head_seconds)
        self.bank = None
        fraction = config.compensation.heldout_fraction if config.compensation is not None else 0.2
        self.screen = min(self.fit - 1, max(1, round(fraction * self.fit)))  # choose the ridges, screen the windows
        if config.compensation is not None:
            from ..compensation.selection import MapBank

            fit_states = [s[: self.fit] for s in self.states]
            self.bank = MapBank(fit_states, self.facts, self.kwargs, self.screen, self.batch_size)

    def scan_windows(self, context: ScoringContext) -> tuple[list[int], list[float], dict[str, Any]]:
        """The ``"window"`` candidate's plan (:mod:`.windows`), scanned on the screening sequences."""
        from ..architectures import count_parameters
        from .windows import scan_windows, window_size

        sizes = [count_parameters(block) for block in self.facts.layers]
        total = count_parameters(self.facts.inner)
        length = window_size(context.num_to_remove, sizes, total, context.config.target_num_params)
        screening = [s[self.fit - self.screen : self.fit] for s in self.states]
        scan = scan_windows(self.facts, screening, self.kwargs, self.bank, length, context.protected, self.batch_size)
        return scan.removed, scan.values, scan.extra

    def heldout_nll(self, removed: list[int], folds: dict, start: int) -> float:
        """Mean next-token NLL on the held-out sequences of the model without ``removed`` (positions), with maps."""
        from ..compensation.selection import SuffixScorer

        scorer = SuffixScorer(
            self.facts,
            self.engine,
            [s[self.fit :] for s in self.states],
            self.kwargs,
            self.heldout_ids,
            self.batch_size,
        )
        if not removed:
            return scorer.mean_nll(self.states[-1][self.fit :])
        return scorer.run(start, set(removed), folds, keep=False)

    def evaluate(self, removed: list[int]) -> float:
        """Held-out mean NLL of the plan removing ``removed`` (positions), compensated when the run is."""
        from ..compensation.cuts import plan_folds

        num_blocks = len(self.facts.layers)
        folds = {}
        if self.bank is not None:
            folds = {f.block: (f, self.bank.transform(f)) for f in plan_folds(removed, num_blocks)}
        start = min([*removed, *folds])
        return self.heldout_nll(removed, folds, start)


def _unavailable(name: str, config: DepthPruningConfig, facts) -> str | None:
    """Why a candidate cannot run on this model (checked before it runs), or ``None``."""
    from .taylor import block_weights, check_differentiable

    if name == "aware" and config.compensation is None:
        return "no compensation: the aware selection needs one"
    if name == "taylor":
        try:
            check_differentiable([w for block in facts.layers for w in block_weights(block)])
        except ValueError as err:  # offloaded or quantized weights: a forward-only candidate must do
            return str(err)
    return None


def _plan_of(context: ScoringContext, candidate_config: DepthPruningConfig, data: CalibrationData):
    """The positions the candidate removes, in its removal order (scored and planned as the candidate alone)."""
    from ..blocks.planning import plan_blocks
    from .scoring import score_blocks

    scores = score_blocks(context.model, candidate_config, data)
    plan = plan_blocks(scores, candidate_config)
    return [scores.layer_indices.index(b) for b in plan.removed_blocks], scores


def auto_criterion(context: ScoringContext) -> CriterionResult:
    """Tries the candidates and keeps the plan whose compensated model has the lowest held-out loss (module docs).

    Args:
        context: Model, calibration data (fit + held-out sequences), config, target and protection.

    Returns:
        The chosen candidate's values and removal order; ``extra["auto"]`` holds every candidate's outcome.
    """
    start = time.process_time()
    config = context.config
    cache = _SharedCache(context)
    num_blocks = len(cache.facts.layers)
    rounds = context.num_to_remove if context.num_to_remove is not None else num_blocks - 1
    names = list(config.auto_candidates or AUTO_CANDIDATES)
    estimates = {
        name: estimate_seconds(name, num_blocks, rounds, config, cache.fit, cache.heldout, cache.unit)
        for name in names
    }
    outcomes: dict[str, dict[str, Any]] = {}
    best: tuple[float, str, list[int], list[float], dict[str, Any]] | None = None
    for name in sorted(names, key=lambda n: (estimates[n], names.index(n))):
        spent = time.process_time() - start
        record: dict[str, Any] = {"estimated_cpu_seconds": round(estimates[name], 1)}
        outcomes[name] = record
        reason = _unavailable(name, config, cache.facts)
        if reason is not None:
            record["skipped"] = reason
            continue
        if spent + estimates[name] > config.auto_max_seconds and best is not None:
            record["skipped"] = f"over the budget (auto_max_seconds={config.auto_max_seconds:g})"
            continue
        began = time.process_time()
        try:
            if name == "window":
                removed, values, extra = cache.scan_windows(context)
            else:
                data = cache.fit_data if name == "aware" else cache.scoring_data
                removed, scores = _plan_of(context, _candidate_config(config, name), data)
                values, extra = list(scores.values), scores.extra
        except PruningTargetError as err:
            record["skipped"] = f"cannot meet the target: {err}"
            continue
        scored = time.process_time()
        nll = cache.evaluate(removed)
        record.update(
            removed_blocks=sorted(cache.facts.original_indices[p] for p in removed),
            heldout_loss=round(nll, 6),
            heldout_perplexity=round(math.exp(nll), 4),
            scoring_cpu_seconds=round(scored - began, 2),
            evaluation_cpu_seconds=round(time.process_time() - scored, 2),
        )
        logger.info("auto: %s removes %s, held-out perplexity %.3f", name, record["removed_blocks"], math.exp(nll))
        if best is None or nll < best[0]:
            best = (nll, name, removed, values, extra)
    if best is None:
        raise PruningTargetError(f"No auto candidate could meet the target: {outcomes}")
    _, chosen, removed, values, chosen_extra = best
    extra = {
        "auto": {
            "chosen": chosen,
            "chosen_by": "lowest mean next-token loss on held-out calibration sequences"
            + (", each plan with its compensation maps" if config.compensation is not None else ""),
            "dense_heldout_perplexity": round(math.exp(cache.dense_nll), 4),
            "fit_samples": cache.fit,
            "heldout_samples": cache.heldout,
            "max_cpu_seconds": config.auto_max_seconds,
            "cpu_seconds": round(time.process_time() - start, 2),
            "unit_cpu_seconds": {"block": cache.unit.block, "lm_head": cache.unit.head},
            "candidates": outcomes,
        },
        "chosen_criterion_extra": chosen_extra,
    }
    return CriterionResult(values=values, removal_order=removed, extra=extra)


AUTO = register_criterion(Criterion("auto", auto_criterion, needs_calibration=True))
