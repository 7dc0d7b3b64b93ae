"""The block-by-block pass that fits compensation maps (orchestration; the math lives in :mod:`.linear_maps`).

The calibration sequences go through the dense blocks and, side by side, through the kept blocks of the pruned model
(block by block, the way BESA and SparseGPT walk a model, with the call arguments each block received in a real
forward). At each fold block the MLP output ``M`` and the rest of the block output ``Y`` are kept; when the dense walk
reaches the fold's target, the map ``T`` with ``Y + M T ≈ dense state`` is fitted from streamed ``float64``
statistics (``MᵀM`` and ``Mᵀ(L - Y)``, hidden x hidden), its ridge chosen on held-out sequences, and the pruned walk
continues from the compensated state, so later maps see the earlier ones (sequential fitting).

Only hidden states of the current position are held (dense and pruned, ``samples x seq_len x hidden`` each), never a
stack of activations; the fitted maps are returned, not yet folded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.utils.logging import is_progress_bar_enabled

from ..blocks.replay import call_block
from .cuts import Fold
from .linear_maps import (
    DEFAULT_RELATIVE_RIDGES,
    GramAccumulator,
    fit_cosine_transform,
    ridge_solve,
    ridge_solve_diagonal,
    select_ridge,
)

logger = logging.getLogger(__name__)

__all__ = ["ChainTrainer", "FittedMap", "WalkInputs", "fit_map", "fit_maps", "run_capturing_mlp"]

METHODS = ("linear_ls", "linear_cosine")


@dataclass
class WalkInputs:
    """What the walk runs on.

    Args:
        dense_blocks: Every block of the dense model, by original index.
        kept_blocks: The blocks of the model being compensated, by original index (the same modules as in
            ``dense_blocks`` when the plan is not applied yet).
        mlp_outputs: For each kept block, the module whose output is the block's MLP contribution to the residual
            stream (the MLP down-projection, or the norm after the MLP), by original index.
        block_kwargs: The call arguments of each block, by original index (from a real forward of the dense model).
        hidden_states: Calibration hidden states entering block 0, ``(samples, seq_len, hidden)``.
        heldout: Number of sequences (the last ones) held out to choose the ridge.
        batch_size: Sequences per block call.
        structure: ``"full"`` maps, or ``"diagonal"`` ones (families with a norm after the MLP, see
            :mod:`.sites`).
        train_chain: With reconstruction, called at each fold's target once its map is fitted, as
            ``train_chain(fold, chain, entering, dense, fitted)``: ``chain`` the original indices of the kept blocks to
            train (the fold block and up to ``chain_length - 1`` kept blocks right before it, never a block trained
            for an earlier fold), ``entering`` the pruned state entering the first of them and ``dense`` the dense
            state to reproduce. It returns the pruned state after the trained chain, from which the walk goes on.
        chain_length: The most blocks a trained chain holds.
    """

    dense_blocks: dict[int, nn.Module]
    kept_blocks: dict[int, nn.Module]
    mlp_outputs: dict[int, nn.Module]
    block_kwargs: dict[int, dict[str, Any]]
    hidden_states: torch.Tensor
    heldout: int
    batch_size: int = 8
    structure: str = "full"
    train_chain: ChainTrainer | None = None
    chain_length: int = 1


@dataclass
class FittedMap:
    """A map fitted for one fold, with how well it fits.

    Args:
        fold: The fold.
        transform: ``float64[hidden, hidden]``, acting on the fold block's MLP output rows.
        relative_ridge: The ridge used (relative to the mean eigenvalue of ``MᵀM``).
        heldout_error: Held-out residual with the map, relative to the held-out residual without it (below 1 means
            the map helps on text it was not fitted on).
        heldout_errors: The held-out residual of every candidate ridge (when the ridge was chosen).
        structure: ``"full"`` or ``"diagonal"`` (see :mod:`.sites`).
        folded_into: The weight of the fold block that receives the map (e.g. ``"mlp.down_proj.weight"``).
    """

    fold: Fold
    transform: torch.Tensor = field(repr=False)
    relative_ridge: float | None
    heldout_error: float
    heldout_errors: dict[float, float] = field(default_factory=dict)
    structure: str = "full"
    folded_into: str | None = None

    def record(self) -> dict[str, Any]:
        """JSON record for the provenance (``config.pruning["compensation"]["maps"]``)."""
        record: dict[str, Any] = {
            "fold_block": self.fold.block,
            "target_after_block": self.fold.target,
            "removed": list(self.fold.removed),
            "structure": self.structure,
            "relative_ridge": self.relative_ridge,
            "heldout_relative_error": round(self.heldout_error, 6),
        }
        if self.folded_into is not None:
            record["folded_into"] = self.folded_into
        return record


ChainTrainer = Callable[[Fold, list[int], torch.Tensor, torch.Tensor, FittedMap], torch.Tensor]
"""``(fold, chain, entering state, dense target, fitted map) -> pruned state after the trained chain``."""


def _run(block: nn.Module, states: torch.Tensor, kwargs: dict, batch_size: int) -> torch.Tensor:
    out = torch.empty_like(states)
    for start in range(0, states.shape[0], batch_size):
        out[start : start + batch_size] = call_block(block, states[start : start + batch_size], kwargs)
    return out


def run_capturing_mlp(block, mlp_out: nn.Module, states, kwargs, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs a kept block and returns ``(Y, M)``: its output is ``Y + M`` with ``M`` its MLP contribution."""
    outputs, mlp = torch.empty_like(states), torch.empty_like(states)
    captured: list[torch.Tensor] = []
    handle = mlp_out.register_forward_hook(lambda _m, _args, output: captured.append(output))
    try:
        for start in range(0, states.shape[0], batch_size):
            captured.clear()
            stop = start + batch_size
            outputs[start:stop] = call_block(block, states[start:stop], kwargs)
            mlp[start:stop] = captured[-1]
    finally:
        handle.remove()
    return outputs - mlp, mlp


def _statistics(m: torch.Tensor, target: torch.Tensor, batch_size: int) -> GramAccumulator:
    stats = GramAccumulator(m.shape[-1], target.shape[-1])
    for start in range(0, m.shape[0], batch_size):
        stats.update(m[start : start + batch_size], target[start : start + batch_size])
    return stats


def fit_map(
    fold: Fold,
    m: torch.Tensor,
    y: torch.Tensor,
    dense: torch.Tensor,
    method: str,
    ridge: float | None,
    heldout: int,
    batch_size: int = 8,
    structure: str = "full",
) -> FittedMap:
    """Fits ``Y + M T ≈ dense`` on the fitting rows, ridge chosen (or checked) on the held-out rows.

    Args:
        fold: The fold the map is for.
        m: The fold block's MLP output, ``(samples, seq_len, hidden)``.
        y: The rest of the fold block's output, same shape.
        dense: The dense hidden state to reproduce, same shape.
        method: ``"linear_ls"`` or ``"linear_cosine"``.
        ridge: A fixed relative ridge, or ``None`` to choose it on the held-out rows.
        heldout: Number of sequences (the last ones) held out.
        batch_size: Sequences per statistics update.
        structure: ``"full"`` or ``"diagonal"`` (a diagonal map ``T``, one gain per feature).

    Returns:
        The fitted map.
    """
    if structure not in ("full", "diagonal"):
        raise ValueError(f"`structure` must be 'full' or 'diagonal', got {structure!r}.")
    diagonal = structure == "diagonal"
    fit_rows = m.shape[0] - heldout
    target = dense - y
    fit_stats = _statistics(m[:fit_rows], target[:fit_rows], batch_size)
    held_stats = _statistics(m[fit_rows:], target[fit_rows:], batch_size)
    identity = torch.eye(m.shape[-1], dtype=torch.float64)
    baseline = max(held_stats.residual(identity), 1e-300)

    def solve(stats: GramAccumulator, relative_ridge: float) -> torch.Tensor:
        if diagonal:
            return ridge_solve_diagonal(stats, relative_ridge)
        return ridge_solve(stats, relative_ridge, prior="identity")

    if method == "linear_cosine":
        transform = fit_cosine_transform(m[:fit_rows], dense[:fit_rows], base=y[:fit_rows], diagonal=diagonal)
        return FittedMap(fold, transform, None, held_stats.residual(transform) / baseline, structure=structure)
    if ridge is None:
        selection = select_ridge(fit_stats, held_stats, DEFAULT_RELATIVE_RIDGES, prior="identity", diagonal=diagonal)
        transform = solve(fit_stats.merge(held_stats), selection.relative_ridge)
        errors = {r: e / baseline for r, e in selection.heldout_errors.items()}
        chosen = selection.relative_ridge
        return FittedMap(fold, transform, chosen, errors[chosen], errors, structure=structure)
    error = held_stats.residual(solve(fit_stats, float(ridge))) / baseline
    return FittedMap(fold, solve(fit_stats.merge(held_stats), float(ridge)), float(ridge), error, structure=structure)


@torch.no_grad()
def fit_maps(
    inputs: WalkInputs,
    folds: list[Fold],
    method: str = "linear_ls",
    ridge: float | None = None,
) -> list[FittedMap]:
    """Walks the calibration states through the dense and the pruned blocks and fits one map per fold.

    Args:
        inputs: Blocks, call arguments and calibration states.
        folds: From :func:`~.cuts.plan_folds`.
        method: ``"linear_ls"`` (ridge least squares, shrunk towards the identity) or ``"linear_cosine"`` (ReplaceMe's
            cosine-distance variant, Adam on the rows).
        ridge: A fixed relative ridge, or ``None`` to choose it on the held-out sequences.

    Returns:
        The fitted maps, in fold order.
    """
    removed = {b for fold in folds for b in fold.removed}
    start = min(min(removed), min(f.block for f in folds))
    stop = max(f.target for f in folds)
    by_block = {fold.block: fold for fold in folds}
    pending: dict[int, tuple[Fold, torch.Tensor, torch.Tensor]] = {}
    fitted: list[FittedMap] = []
    entering: dict[int, torch.Tensor] = {}  # pruned state entering the last kept blocks (for trained chains)
    trained: set[int] = set()
    dense = pruned = inputs.hidden_states
    for index in range(start):  # the prefix is the same in both models
        _remember(entering, index, dense, inputs)
        dense = _run(inputs.dense_blocks[index], dense, inputs.block_kwargs[index], inputs.batch_size)
    pruned = dense
    blocks = tqdm(range(start, stop + 1), desc="compensation", leave=False, disable=not is_progress_bar_enabled())
    for index in blocks:
        kwargs = inputs.block_kwargs[index]
        dense = _run(inputs.dense_blocks[index], dense, kwargs, inputs.batch_size)
        if index not in removed:
            _remember(entering, index, pruned, inputs)
        if index in by_block:
            block = inputs.kept_blocks[index]
            y, m = run_capturing_mlp(block, inputs.mlp_outputs[index], pruned, kwargs, inputs.batch_size)
            pending[by_block[index].target] = (by_block[index], y, m)
            pruned = y + m
        elif index not in removed:
            pruned = _run(inputs.kept_blocks[index], pruned, kwargs, inputs.batch_size)
        if index in pending:
            fold, y, m = pending.pop(index)
            result = fit_map(fold, m, y, dense, method, ridge, inputs.heldout, inputs.batch_size, inputs.structure)
            fitted.append(result)
            logger.info("Compensation map for blocks %s: held-out error x%.3f", fold.removed, result.heldout_error)
            if inputs.train_chain is None:
                # Only removed blocks lie between a fold block and its target: the compensated output goes on.
                pruned = y + (m.double() @ result.transform).to(m.dtype)
                continue
            chain = _chain(fold.block, removed, trained, entering, inputs.chain_length)
            trained.update(chain)
            pruned = inputs.train_chain(fold, chain, entering[chain[0]], dense, result)
    return sorted(fitted, key=lambda f: f.fold.block)


def _remember(entering: dict[int, torch.Tensor], index: int, state: torch.Tensor, inputs: WalkInputs) -> None:
    """Keeps the state entering kept block ``index`` while a chain ending later could still start there."""
    if inputs.train_chain is None:
        return
    entering[index] = state
    for old in [i for i in entering if i <= index - inputs.chain_length]:
        del entering[old]


def _chain(fold_block: int, removed: set[int], trained: set[int], entering: dict, length: int) -> list[int]:
    """The fold block and the kept blocks right before it (no removed or already trained block in between)."""
    chain = [fold_block]
    while len(chain) < length:
        previous = chain[0] - 1
        if previous < 0 or previous in removed or previous in trained or previous not in entering:
            break
        chain.insert(0, previous)
    return chain
