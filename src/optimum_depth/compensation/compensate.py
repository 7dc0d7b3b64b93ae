"""Fitting compensation maps for a pruning plan and folding them into the kept weights (orchestration).

Two entry points share one walk (:mod:`.walk`):

* :func:`fit_compensation` on the model *before* the plan is applied (what ``DepthPruner`` does when its config asks
  for compensation): the dense and the pruned walk use the same modules, the pruned one skipping the removed blocks;
* :func:`compensate` on a model whose plan was applied already, given its dense parent.

:func:`fold_compensation` then writes each map into the MLP down-projection of its fold block (``W <- Tᵀ W``, solved
in float64 and cast back, so bf16 weights are fine), and into the ``lora_B`` of a peft adapter on that layer too, so
a wrapped model computes exactly the compensated function.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..architectures import ModelFacts, as_facts, get_layer_parts
from ..blocks.replay import capture_block_inputs
from ..calibration import CalibrationData, prepare_calibration
from ..config import CompensationConfig
from ..errors import ConfigError, UnsupportedArchitectureError
from ..plan import PruningPlan
from .cuts import Fold, plan_folds
from .linear_maps import fold_output_transform, folded_output_weight
from .offloaded import update_weight
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

MLP_OUTPUT_LINEAR = "down_proj"
"""The linear layer whose output is a block's MLP contribution to the residual stream (every family without a norm
after its MLP; Gemma 2/3 have one, so their MLP output is not linear in this layer's weight)."""


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

    def record(self) -> dict[str, Any]:
        """The JSON record stored in the provenance (``config.pruning["compensation"]``)."""
        return {
            "method": self.config.method,
            "settings": {k: v for k, v in self.config.to_dict().items() if k not in ("record_type", "format_version")},
            "calibration": dict(self.calibration),
            "maps": [m.record() for m in self.maps],
            "elapsed_seconds": round(self.elapsed_seconds, 2),
        }


def _base_linear(module: nn.Module) -> Any:
    """The ``nn.Linear`` itself (a peft LoRA layer keeps it as ``base_layer``)."""
    return getattr(module, "base_layer", module)


def mlp_output_module(block: nn.Module, facts: ModelFacts) -> nn.Module:
    """The module whose output is the block's MLP contribution (the down-projection; a peft wrapper of it if any)."""
    if facts.spec.norm_after_mlp:
        raise UnsupportedArchitectureError(
            f"Compensation is not available for {facts.spec.model_type}: a norm follows its MLP, so the MLP output is "
            "not linear in the down-projection."
        )
    mlp = get_layer_parts(block, facts.spec).mlp
    module = getattr(mlp, MLP_OUTPUT_LINEAR, None) if mlp is not None else None
    if not isinstance(module, nn.Module) or not isinstance(_base_linear(module), nn.Linear):
        raise UnsupportedArchitectureError(
            f"Compensation needs each fold block's MLP `{MLP_OUTPUT_LINEAR}` linear layer; block "
            f"{type(block).__name__} has none (sublayer-pruned or an unexpected structure)."
        )
    return module


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
    mlp_outputs: dict[int, nn.Module] = {
        f.block: mlp_output_module(kept_blocks[f.block], kept) for f in folds
    }  # checked first
    captured = capture_block_inputs(dense.inner, data.input_ids, config.batch_size)
    return WalkInputs(
        dense_blocks=dict(enumerate(dense.layers)),
        kept_blocks=kept_blocks,
        mlp_outputs=mlp_outputs,
        block_kwargs=dict(enumerate(captured.block_kwargs)),
        hidden_states=captured.hidden_states,
        heldout=min(data.num_samples - 1, max(1, round(config.heldout_fraction * data.num_samples))),
        batch_size=config.batch_size,
    )


def _fit(dense: ModelFacts, kept: ModelFacts, removed, data: CalibrationData, config: CompensationConfig):
    if data.num_samples < 2:
        raise ConfigError("Compensation needs at least 2 calibration sequences (one is held out).")
    folds = plan_folds(removed, dense.num_layers)
    start = time.perf_counter()
    was_training = dense.inner.training
    dense.inner.eval()
    kept.inner.eval()
    try:
        maps = fit_maps(_walk_inputs(dense, kept, data, config, folds), folds, config.method, config.ridge)
    finally:
        dense.inner.train(was_training)
    return CompensationResult(maps, config, dict(data.spec), time.perf_counter() - start)


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
    ``M`` (its ``down_proj`` output) and the rest of its output ``Y`` (block output minus ``M``) in the pruned model,
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
    if plan.granularity != "block" or plan.source_num_hidden_layers is None:
        raise ConfigError("Compensation applies to block plans made for a known number of blocks.")
    folds = plan_folds(plan.removed_blocks, plan.source_num_hidden_layers)
    missing = [fold.block for fold in folds if fold.block not in activations]
    if missing:
        raise ConfigError(f"No activations for fold block(s) {missing} (the kept block before each removed run).")
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
        maps.append(fit_map(fold, m, y, dense, config.method, config.ridge, heldout, config.batch_size))
    calibration = {"source": "captured activations", "num_samples": int(activations[folds[0].block][0].shape[0])}
    return CompensationResult(maps, config, calibration, time.perf_counter() - start)


def on_main_rank(fit: Callable[[], CompensationResult]) -> CompensationResult:
    """Runs ``fit`` on rank 0 only and gives every rank its maps (several processes), or just runs it.

    Rank 0's error reaches every rank (no process waits in a collective); the maps travel as tensors.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return fit()
    payload: list[Any] = [None]
    result: CompensationResult | None = None
    if dist.get_rank() == 0:
        try:
            result = fit()
            payload[0] = {"record": result.record(), "shape": list(result.maps[0].transform.shape)}
        except BaseException as err:
            payload[0] = {"error": f"{type(err).__name__}: {err}"}
            dist.broadcast_object_list(payload, src=0)
            raise
    dist.broadcast_object_list(payload, src=0)
    message = payload[0]
    if "error" in message:
        raise RuntimeError(f"Rank 0 failed while fitting the compensation: {message['error']}")
    record = message["record"]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    if result is not None:
        for fitted in result.maps:
            dist.broadcast(fitted.transform.to(device).contiguous(), src=0)
        return result
    transforms = []
    for _ in record["maps"]:
        tensor = torch.empty(message["shape"], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        transforms.append(tensor.cpu())
    config = CompensationConfig.from_dict(record["settings"])
    maps = [
        FittedMap(
            Fold(m["fold_block"], m["target_after_block"], tuple(m["removed"])),
            transform,
            m["relative_ridge"],
            m["heldout_relative_error"],
        )
        for m, transform in zip(record["maps"], transforms, strict=True)
    ]
    return CompensationResult(maps, config, record["calibration"], record["elapsed_seconds"])


@torch.no_grad()
def fold_compensation(model: nn.Module, result: CompensationResult) -> None:
    """Folds the fitted maps into the MLP down-projections of their fold blocks, in place.

    Args:
        model: The pruned model (the plan applied), possibly wrapped by peft.
        result: From :func:`fit_compensation` or :func:`compensate`.
    """
    facts = as_facts(model)
    position = {original: p for p, original in enumerate(facts.original_indices)}
    modules = [mlp_output_module(facts.layers[position[fitted.fold.block]], facts) for fitted in result.maps]
    for module in modules:  # checked before any weight changes
        bias = _base_linear(module).bias
        if bias is not None and bias.device.type == "meta":
            raise UnsupportedArchitectureError(
                "Compensation cannot fold into an offloaded down-projection with a bias."
            )
    for fitted, module in zip(result.maps, modules, strict=True):
        base, fold = _base_linear(module), partial(folded_output_weight, transform=fitted.transform)
        if base.weight.device.type == "meta":  # accelerate-offloaded: the weight lives in the hook's weights map
            update_weight(facts.inner, base, fold)
        else:
            fold_output_transform(base, fitted.transform)
        for lora_b in getattr(module, "lora_B", {}).values():  # peft: the adapter's output is mapped too (T^T B)
            update_weight(facts.inner, lora_b, fold)


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
