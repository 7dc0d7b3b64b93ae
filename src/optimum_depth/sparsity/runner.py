"""``sparsify``: the block-by-block loop of BESA, Wanda and magnitude sparsity (orchestration only).

Blocks are processed in order. Each block sees the outputs of the previous, already pruned, block on the calibration
set; its dense outputs on those same inputs are the reconstruction reference, and its pruned outputs become the next
block's inputs. The tensor math lives in :mod:`.masks`, :mod:`.besa` and :mod:`.baselines`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..architectures import get_decoder_layers, unwrap_model
from ..blocks.replay import capture_block_inputs, collect_input_sq_norms, run_block
from ..calibration import resolve_calibration
from ..provenance import original_layer_indices
from ..pruner import DepthPruner
from .baselines import baseline_masks
from .besa import learn_block_allocation
from .config import SparsityConfig
from .report import BlockReport, SparsityResult, record_sparsity
from .targets import check, find_prunable_linears

logger = logging.getLogger(__name__)

__all__ = ["sparsify"]


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


@torch.no_grad()
def _apply_masks(linears: dict[str, nn.Linear], masks: dict[str, torch.Tensor]) -> dict[str, float]:
    achieved = {}
    for name, linear in linears.items():
        mask = masks[name].to(device=linear.weight.device)
        linear.weight.mul_(mask.to(linear.weight.dtype))
        achieved[name] = 1.0 - float(mask.float().mean())
    return achieved


@torch.no_grad()
def _reconstruction(output: torch.Tensor, reference: torch.Tensor, chunk: int = 8) -> float:
    error = torch.zeros(reference.shape[-1], dtype=torch.float64, device=reference.device)
    energy = torch.zeros_like(error)
    for start in range(0, reference.shape[0], chunk):
        ref = reference[start : start + chunk].double().reshape(-1, reference.shape[-1])
        out = output[start : start + chunk].double().reshape(-1, reference.shape[-1])
        error += (out - ref).pow(2).sum(dim=0)
        energy += ref.pow(2).sum(dim=0)
    return float((error / energy.clamp_min(1e-12)).mean())


def _sparsify_block(block, linears, inputs, kwargs, config, buffers) -> tuple[dict[str, float], dict[str, Any]]:
    """Prunes one block in place given its inputs; returns achieved sparsities and the learning record."""
    dense_out, pruned_out = buffers
    with collect_input_sq_norms(linears) as norms:
        run_block(block, inputs, kwargs, config.batch_size, out=dense_out)
    extra: dict[str, Any] = {}
    if config.method == "besa":
        allocation = learn_block_allocation(block, linears, norms, inputs, dense_out, kwargs, config)
        masks = allocation.masks
        extra = {
            "initial_reconstruction": allocation.initial_reconstruction,
            "expected_sparsity": allocation.expected_sparsity,
            "tilt": allocation.tilt,
            "loss_history": allocation.loss_history,
        }
    else:
        masks = baseline_masks(linears, norms, config)
    achieved = _apply_masks(linears, masks)
    run_block(block, inputs, kwargs, config.batch_size, out=pruned_out)
    extra["reconstruction"] = _reconstruction(pruned_out, dense_out)
    return achieved, extra


def _sparsify_blocks(inner, data, config: SparsityConfig, show_progress: bool) -> list[BlockReport]:
    """Sparsifies the blocks in order, each seeing the outputs of the previous, already pruned, block."""
    layers = get_decoder_layers(inner)
    original = original_layer_indices(inner.config)
    reports: list[BlockReport] = []
    captured = capture_block_inputs(inner, data.input_ids, config.batch_size) if data is not None else None
    inputs = captured.hidden_states if captured is not None else None
    buffers = (torch.empty_like(inputs), torch.empty_like(inputs)) if inputs is not None else None
    progress = tqdm(list(enumerate(layers)), desc=f"{config.method} sparsity", disable=not show_progress)
    for position, block in progress:
        linears = find_prunable_linears(block, inner, config.target_modules)
        extra: dict[str, Any] = {"reconstruction": None}
        if captured is None or inputs is None or buffers is None:
            achieved = _apply_masks(linears, baseline_masks(linears, None, config))
        else:
            device = next(block.parameters()).device
            kwargs = _to_device(captured.block_kwargs[position], device)
            if inputs.device != device:
                inputs, buffers = inputs.to(device), (buffers[0].to(device), buffers[1].to(device))
            if linears:
                achieved, extra = _sparsify_block(block, linears, inputs, kwargs, config, buffers)
            else:
                achieved = {}
                run_block(block, inputs, kwargs, config.batch_size, out=buffers[1])
            inputs, buffers = buffers[1], (buffers[0], inputs)
        report = BlockReport(
            block=original[position],
            layer_sparsity=achieved,
            layer_params={name: linear.weight.numel() for name, linear in linears.items()},
            **extra,
        )
        reports.append(report)
        progress.set_postfix(sparsity=f"{report.sparsity:.3f}", recon=f"{extra['reconstruction'] or 0:.3g}")
        logger.info(
            "Block %d: sparsity %.4f, reconstruction error %s", report.block, report.sparsity, report.reconstruction
        )
    return reports


def sparsify(
    model: nn.Module,
    config: SparsityConfig,
    calibration=None,
    tokenizer=None,
    *,
    show_progress: bool = True,
) -> SparsityResult:
    """Sparsifies the linear layers of every decoder block in place (BESA, Wanda or magnitude).

    The weights stay dense tensors with exact zeros, so the model saves and loads natively; the run is recorded as
    ``model.config.sparsity``. With ``config.depth_pruning`` set, the blocks chosen by :class:`DepthPruner` are
    removed first and the sparsity is learned on the surviving blocks.

    Args:
        model: A causal LM of a supported family (a plain transformers model; merge peft adapters first).
        config: What to run.
        calibration: Calibration source (see :func:`optimum_depth.prepare_calibration`) or prepared data; the
            paper's default is 128 sequences of 2048 tokens of C4. Magnitude needs none.
        tokenizer: Tokenizer for text calibration sources.
        show_progress: Show a progress bar over blocks.

    Returns:
        The sparsified model (``result.model``: the same object, except after a sublayer depth pruning of a stock
        model, which changes the model class) and its per-block and per-layer sparsities and reconstruction errors.

    Raises:
        ValueError, TypeError, ImportError, UnsupportedArchitectureError, PruningTargetError: On a request that
            cannot be run; raised before the model is changed.

    Example:
        ```python
        >>> from optimum_depth.sparsity import SparsityConfig, sparsify
        >>> config = SparsityConfig(method="besa", sparsity=0.5, num_samples=32, seq_len=256)
        >>> result = sparsify(model, config, "c4_validation.jsonl", tokenizer)  # doctest: +SKIP
        >>> result.plot("besa_sparsity.png")  # doctest: +SKIP
        ```
    """
    has_calibration = calibration is not None or config.calibration_dataset is not None
    check(model, config, has_calibration)
    pruner = DepthPruner(config.depth_pruning) if config.depth_pruning is not None else None
    if pruner is not None:
        pruner.check(model)
    data = resolve_calibration(config, model, calibration, tokenizer)
    if pruner is not None:
        pruner.prune(model, calibration=calibration, tokenizer=tokenizer)  # in place

    inner = unwrap_model(model)
    was_training = inner.training
    inner.eval()
    start_time = time.perf_counter()
    try:
        reports = _sparsify_blocks(inner, data, config, show_progress)
    finally:
        inner.train(was_training)
    result = SparsityResult(
        model=model,
        config=config,
        blocks=reports,
        calibration=dict(data.spec) if data is not None else {},
        elapsed_seconds=time.perf_counter() - start_time,
    )
    record_sparsity(inner.config, result.record())
    logger.info(
        "Sparsity %s: achieved %.4f in %.1fs.", config.method, result.achieved_sparsity, result.elapsed_seconds
    )
    return result
