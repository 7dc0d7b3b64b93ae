"""Fitting compensation maps for a pruning plan and folding them into the kept weights (orchestration).

Two entry points share one walk (:mod:`.walk`):

* :func:`fit_compensation` on the model *before* the plan is applied (what ``DepthPruner`` does when its config asks
  for compensation): the dense and the pruned walk use the same modules, the pruned one skipping the removed blocks;
* :func:`compensate` on a model whose plan was applied already, given its dense parent.

:func:`fold_compensation` then writes each map into its fold block's fold site (:mod:`.sites`): the MLP
down-projection (``W <- Tᵀ W``, solved in float64 and cast back, so bf16 weights are fine, and into the ``lora_B`` of
a peft adapter on that layer too, so a wrapped model computes exactly the compensated function), or, for families
with a norm after the MLP (Gemma 2/3), that norm's gain (a diagonal map).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..architectures import ModelFacts, as_facts
from ..blocks.replay import capture_block_inputs
from ..calibration import CalibrationData, prepare_calibration
from ..compensation_config import CompensationConfig
from ..errors import ConfigError
from ..plan import PruningPlan
from ..ranks import decide_on_main_rank
from .chains import ChainReconstructor, TrainedCut, check_trainable
from .cuts import Fold, plan_folds
from .sites import check_foldable, fold_map, fold_site, map_structure
from .walk import FittedMap, WalkInputs, fit_map, fit_maps

logger = logging.getLogger(__name__)

__all__ = [
    "CompensationResult",
    "compensate",
    "compensation_calibration",
    "compensation_from_activations",
    "fit_compensation",
    "fold_compensation",
]


@dataclass
class CompensationResult:
    """The maps fitted for one plan, and how they were fitted.

    Args:
        maps: One fitted map per fold, in model order.
        config: The settings used.
        calibration: Provenance of the calibration data.
        elapsed_seconds: Wall time of the fit.
    """

    maps: list[FittedMap]
    config: CompensationConfig
    calibration: dict[str, Any] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    trained: list[TrainedCut] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The JSON record stored in the provenance (``config.pruning["compensation"]``)."""
        record = {
            "method": self.config.method,
            "settings": {k: v for k, v in self.config.to_dict().items() if k not in ("record_type", "format_version")},
            "calibration": dict(self.calibration),
            "maps": [m.record() for m in self.maps],
            "elapsed_seconds": round(self.elapsed_seconds, 2),
        }
        if self.config.reconstructs:
            record["reconstruction"] = {
                "loss": self.config.reconstruct_loss,
                "learning_rate": self.config.reconstruct_lr,
                "steps": sum(int(cut.summary.get("steps", 0)) for cut in self.trained),
                "cpu_seconds": round(sum(float(cut.summary.get("cpu_seconds", 0.0)) for cut in self.trained), 2),
                "cuts": [cut.record() for cut in self.trained],
            }
        return record


def compensation_calibration(source: Any, tokenizer: Any, model: nn.Module, config: CompensationConfig):
    """The calibration data of a compensation fit: ``config.num_samples`` sequences from ``source``.

    A :class:`~optimum_depth.CalibrationData` is used as it is (with a warning when it is short of what least squares
    needs); any other source is sampled with the compensation's own size and seed.
    """
    if isinstance(source, CalibrationData):
        if source.num_samples < 64:
            logger.warning(
                "Compensation fitted on %d sequences: least squares over-fits below a few hundred.", source.num_samples
            )
        return source
    if source is None:
        raise ConfigError(
            "Compensation needs calibration text (a few hundred sequences): pass `calibration=` or set "
            "`calibration_dataset`."
        )
    return prepare_calibration(
        source,
        tokenizer,
        model=model,
        num_samples=config.num_samples,
        seq_len=config.seq_len,
        seed=config.seed,
        heldout=config.heldout_samples,  # held-out windows share no text with the fitted ones
    )


def _walk_inputs(dense: ModelFacts, kept: ModelFacts, data: CalibrationData, config: CompensationConfig, folds):
    kept_blocks = dict(zip(kept.original_indices, kept.layers, strict=True))
    sites = {f.block: fold_site(kept_blocks[f.block], kept) for f in folds}  # checked first
    if config.reconstructs:
        check_trainable(kept_blocks)
    captured = capture_block_inputs(dense.inner, data.input_ids, config.batch_size)
    inputs = WalkInputs(
        dense_blocks=dict(enumerate(dense.layers)),
        kept_blocks=kept_blocks,
        mlp_outputs={block: site.module for block, site in sites.items()},
        block_kwargs=dict(enumerate(captured.block_kwargs)),
        hidden_states=captured.hidden_states,
        heldout=min(data.num_samples - 1, max(1, round(config.heldout_fraction * data.num_samples))),
        batch_size=config.batch_size,
        structure=map_structure(kept.spec.model_type),
        chain_length=config.reconstruct_blocks,
    )
    reconstructor = None
    if config.reconstructs:
        reconstructor = ChainReconstructor(
            kept, kept_blocks, inputs.block_kwargs, sites, folds, config, inputs.heldout
        )
        inputs.train_chain = reconstructor
    return inputs, sites, reconstructor


def _fit(dense: ModelFacts, kept: ModelFacts, removed, data: CalibrationData, config: CompensationConfig):
    if data.num_samples < 2:
        raise ConfigError("Compensation needs at least 2 calibration sequences (one is held out).")
    folds = plan_folds(removed, dense.num_layers)
    start = time.perf_counter()
    was_training = dense.inner.training
    dense.inner.eval()
    kept.inner.eval()
    try:
        inputs, sites, reconstructor = _walk_inputs(dense, kept, data, config, folds)
        maps = fit_maps(inputs, folds, config.map_method, config.ridge)
    finally:
        dense.inner.train(was_training)
    for fitted in maps:
        fitted.folded_into = sites[fitted.fold.block].name
    trained = reconstructor.cuts if reconstructor is not None else []
    return CompensationResult(maps, config, dict(data.spec), time.perf_counter() - start, trained)


def fit_compensation(
    model: nn.Module | ModelFacts, plan: PruningPlan, calibration: CalibrationData, config: CompensationConfig
) -> CompensationResult:
    """Fits the compensation of ``plan`` on ``model`` *before* the plan is applied (nothing is changed).

    Args:
        model: The unpruned (by this plan) model, possibly wrapped.
        plan: A block plan made for it.
        calibration: Calibration sequences (see :func:`compensation_calibration`).
        config: The compensation settings.

    Returns:
        The fitted maps; fold them with :func:`fold_compensation` once the plan is applied.
    """
    if plan.granularity != "block":
        raise ConfigError("Compensation applies to block plans.")
    facts = as_facts(model)
    if facts.num_layers != facts.source_num_layers:
        raise ConfigError(
            "Compensation of a model pruned before is not supported by this path (the dense states of its removed "
            "blocks are gone); use `compensate(pruned_model, calibration, dense_model=...)` with the original model."
        )
    return on_main_rank(lambda: _fit(facts, facts, plan.removed_blocks, calibration, config))


def compensation_from_activations(
    plan: PruningPlan,
    activations: Mapping[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    config: CompensationConfig | None = None,
) -> CompensationResult:
    """Fits the maps of ``plan`` from activations captured elsewhere (no model needed); fold them afterwards.

    For each fold block ``f`` of the plan (:func:`~optimum_depth.compensation.cuts.plan_folds`: the kept block before
    each removed run), ``activations[f]`` is ``(M, Y, L)``, each ``(samples, seq_len, hidden)``: the block's MLP output
    ``M`` (its ``down_proj`` output; for Gemma 2/3 the output of the norm after its MLP, and the maps are then
    diagonal) and the rest of its output ``Y`` (block output minus ``M``) in the pruned model,
    and ``L``, the dense model's hidden state after the fold's target block. The last ``heldout_fraction`` of the
    sequences choose the ridge, as in :func:`fit_compensation`. Captured from the uncompensated pruned model, several
    maps are fitted independently (the walk of :func:`fit_compensation` fits each after the earlier ones).

    Args:
        plan: The block plan.
        activations: ``{fold block: (M, Y, L)}`` for every fold block.
        config: The compensation settings (default: least squares, ridge chosen held-out).

    Returns:
        The fitted maps (fold them with :func:`fold_compensation` into the pruned model).

    Raises:
        ConfigError: If a fold block's activations are missing or their shapes differ.
    """
    config = config or CompensationConfig()
    if config.reconstructs:
        raise ConfigError("Reconstruction trains the kept blocks, so it needs the model: use `compensate` instead.")
    if plan.granularity != "block" or plan.source_num_hidden_layers is None:
        raise ConfigError("Compensation applies to block plans made for a known number of blocks.")
    folds = plan_folds(plan.removed_blocks, plan.source_num_hidden_layers)
    missing = [fold.block for fold in folds if fold.block not in activations]
    if missing:
        raise ConfigError(f"No activations for fold block(s) {missing} (the kept block before each removed run).")
    structure = map_structure(plan.source_fingerprint.get("model_type"))
    start = time.perf_counter()
    maps = []
    for fold in folds:
        m, y, dense = activations[fold.block]
        if not (m.shape == y.shape == dense.shape and m.dim() == 3 and m.shape[0] >= 2):
            raise ConfigError(
                f"Activations of block {fold.block} must be three (samples >= 2, seq_len, hidden) tensors of one "
                f"shape, got {tuple(m.shape)}, {tuple(y.shape)}, {tuple(dense.shape)}."
            )
        heldout = min(m.shape[0] - 1, max(1, round(config.heldout_fraction * m.shape[0])))
        maps.append(fit_map(fold, m, y, dense, config.map_method, config.ridge, heldout, config.batch_size, structure))
    calibration = {"source": "captured activations", "num_samples": int(activations[folds[0].block][0].shape[0])}
    return CompensationResult(maps, config, calibration, time.perf_counter() - start)


def _result_to_json(result: CompensationResult) -> dict[str, Any]:
    """What travels as JSON from rank 0: the record, and each trained cut without its tensors (their keys in order)."""
    return {
        "record": result.record(),
        "trained": [
            {
                "fold": [cut.fold.block, cut.fold.target, list(cut.fold.removed)],
                "blocks": list(cut.blocks),
                "keys": [list(state) for state in cut.states],
                "summary": cut.summary,
            }
            for cut in result.trained
        ],
    }


def _result_tensors(result: CompensationResult) -> list[torch.Tensor]:
    """The tensors that travel apart: every map's transform, then every trained block's parameters, in key order."""
    tensors = [fitted.transform for fitted in result.maps]
    return tensors + [tensor for cut in result.trained for state in cut.states for tensor in state.values()]


def _result_from_json(data: dict[str, Any], tensors: list[torch.Tensor]) -> CompensationResult:
    """Rebuilds rank 0's result from :func:`_result_to_json` and :func:`_result_tensors` on the other ranks."""
    record = data["record"]
    arrived = iter(tensors)
    maps = [
        FittedMap(
            Fold(m["fold_block"], m["target_after_block"], tuple(m["removed"])),
            next(arrived),
            m["relative_ridge"],
            m["heldout_relative_error"],
            structure=m.get("structure", "full"),
            folded_into=m.get("folded_into"),
        )
        for m in record["maps"]
    ]
    trained = [
        TrainedCut(
            Fold(cut["fold"][0], cut["fold"][1], tuple(cut["fold"][2])),
            list(cut["blocks"]),
            [{key: next(arrived) for key in keys} for keys in cut["keys"]],
            dict(cut["summary"]),
        )
        for cut in data["trained"]
    ]
    config = CompensationConfig.from_dict(record["settings"])
    return CompensationResult(maps, config, record["calibration"], record["elapsed_seconds"], trained)


def on_main_rank(fit: Callable[[], CompensationResult]) -> CompensationResult:
    """Runs ``fit`` on rank 0 only and gives every rank its maps (several processes), or just runs it.

    One helper serves every rank-0 decision of the library (:func:`optimum_depth.ranks.decide_on_main_rank`): rank 0's
    error reaches every rank (no process waits in a collective); the record travels as JSON, the maps and the blocks a
    reconstruction trained as tensors.
    """
    return decide_on_main_rank(
        fit,
        to_json=_result_to_json,
        from_json=_result_from_json,
        action="fitting the compensation",
        tensors=_result_tensors,
    )


@torch.no_grad()
def fold_compensation(model: nn.Module, result: CompensationResult) -> None:
    """Folds the fitted maps into the fold sites of their fold blocks (:mod:`.sites`), and loads the blocks trained
    by a reconstruction, in place.

    Args:
        model: The pruned model (the plan applied), possibly wrapped by peft.
        result: From :func:`fit_compensation` or :func:`compensate`.
    """
    facts = as_facts(model)
    position = {original: p for p, original in enumerate(facts.original_indices)}
    sites = [fold_site(facts.layers[position[fitted.fold.block]], facts) for fitted in result.maps]
    for site, fitted in zip(sites, result.maps, strict=True):  # checked before any weight changes
        check_foldable(site)
        if site.structure != fitted.structure:
            raise ConfigError(
                f"The map for block {fitted.fold.block} is {fitted.structure}; this model's fold site takes "
                f"{site.structure} maps (it was fitted for another family)."
            )
    trained = [
        (facts.layers[position[b]], state)
        for cut in result.trained
        for b, state in zip(cut.blocks, cut.states, strict=True)
    ]
    for block, state in trained:
        if set(block.state_dict()) != set(state):
            raise ConfigError("The trained block parameters do not match this model's blocks (another model?).")
    for fitted, site in zip(result.maps, sites, strict=True):
        fold_map(facts.inner, site, fitted.transform)
    for block, state in trained:  # the trained parameters hold their cut's map already
        block.load_state_dict(state)


def compensate(
    model: nn.Module,
    calibration: Any,
    tokenizer: Any = None,
    *,
    dense_model: nn.Module,
    config: CompensationConfig | None = None,
) -> CompensationResult:
    """Compensates a model whose blocks were removed already, given its dense parent, in place.

    Args:
        model: The pruned model (``config.surviving_layers`` names its kept blocks), possibly wrapped by peft.
        calibration: Calibration source (see :func:`optimum_depth.prepare_calibration`) or prepared data.
        tokenizer: Tokenizer for text sources.
        dense_model: The model it was pruned from (unchanged).
        config: The compensation settings (default: least squares on 256 x 128 tokens, ridge chosen held-out).

    Returns:
        The fitted maps (also recorded in ``model.config.pruning["compensation"]``).

    Raises:
        ConfigError: If ``dense_model`` is not the pruned model's parent.
    """
    config = config or CompensationConfig()
    dense, kept = as_facts(dense_model), as_facts(model)
    if dense.source_num_layers != kept.source_num_layers or dense.num_layers != dense.source_num_layers:
        raise ConfigError(
            f"`dense_model` must be the unpruned parent: it has {dense.num_layers} blocks, the pruned model descends "
            f"from one with {kept.source_num_layers}."
        )
    if dense.fingerprint != kept.fingerprint:
        raise ConfigError("`dense_model` is another model (its config fingerprint differs from the pruned model's).")
    removed = sorted(set(range(dense.num_layers)) - set(kept.original_indices))
    if not removed:
        raise ConfigError("The model has all the blocks of `dense_model`: nothing to compensate.")
    data = compensation_calibration(calibration, tokenizer, dense.inner, config)
    result = _fit(dense, kept, removed, data, config)
    fold_compensation(model, result)
    record_compensation(kept.inner.config, result)
    return result


def record_compensation(model_config: Any, result: CompensationResult) -> None:
    """Stores ``result.record()`` under ``config.pruning["compensation"]`` (the latest pruning event)."""
    pruning = dict(getattr(model_config, "pruning", None) or {})
    pruning["compensation"] = result.record()
    model_config.pruning = pruning
