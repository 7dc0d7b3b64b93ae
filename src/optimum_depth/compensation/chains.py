"""The reconstruction step of the compensation walk (orchestration; the training itself is :mod:`.reconstruction`).

With ``CompensationConfig(method="reconstruct")`` the walk (:mod:`.walk`) calls a :class:`ChainReconstructor` at each
cut once its least-squares map is fitted: the map is folded into a copy of the fold block, the chain of kept blocks
ending there is trained to reproduce the dense state after the cut, and the walk goes on from the trained chain's
output, so later cuts are fitted (and trained) after the earlier ones. The steps (and the optional CPU-seconds cap)
are shared by the cuts in proportion to how many blocks each removes; time a cut leaves unused passes to the next.
The trained parameters are kept in :class:`TrainedCut` records and loaded into the pruned model by
:func:`~optimum_depth.compensation.fold_compensation`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..architectures import ModelFacts
from ..blocks.replay import run_block
from ..compensation_config import CompensationConfig
from ..errors import ConfigError
from .cuts import Fold
from .reconstruction import ReconstructionSettings, train_chain
from .sites import FoldSite, fold_map
from .walk import FittedMap

logger = logging.getLogger(__name__)

__all__ = ["ChainReconstructor", "TrainedCut", "check_trainable"]


@dataclass
class TrainedCut:
    """The blocks trained for one cut.

    Args:
        fold: The cut's fold.
        blocks: Original indices of the trained blocks, in model order.
        states: Their trained parameters and buffers (CPU, the model's dtype), as ``state_dict`` of each block.
        summary: Steps, held-out loss before/after, the kept step, CPU-seconds.
    """

    fold: Fold
    blocks: list[int]
    states: list[dict[str, torch.Tensor]] = field(repr=False)
    summary: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """JSON record for the provenance (``config.pruning["compensation"]["reconstruction"]["cuts"]``)."""
        return {"removed": list(self.fold.removed), "trained_blocks": list(self.blocks), **self.summary}


def check_trainable(blocks: dict[int, nn.Module]) -> None:
    """Refuses, before anything changes, blocks that cannot be trained: offloaded, quantized or peft-wrapped.

    Raises:
        ConfigError: Naming the first such block.
    """
    for index, block in blocks.items():
        for name, param in block.named_parameters():
            if param.device.type == "meta" or not param.is_floating_point():
                raise ConfigError(
                    f"Reconstruction trains the kept blocks, but block {index}'s `{name}` is offloaded or quantized; "
                    "load the model in memory in a floating dtype, or use compensation='linear_ls'."
                )
            if "lora_" in name:
                raise ConfigError(
                    f"Reconstruction trains whole kept blocks; block {index} carries peft adapters (`{name}`). "
                    "Reconstruct before adding adapters, or use compensation='linear_ls'."
                )


class ChainReconstructor:
    """The walk's ``train_chain`` callback (see :class:`~optimum_depth.compensation.walk.WalkInputs`).

    Args:
        facts: The model being compensated (its kept blocks, its final norm).
        kept_blocks: Its kept blocks, by original index.
        block_kwargs: Every block's call arguments, by original index.
        sites: The fold site of each fold block (in ``kept_blocks``), by original index.
        folds: Every fold of the plan (to share the budget).
        config: The compensation settings.
        heldout: Sequences held out (the last ones).
    """

    def __init__(
        self,
        facts: ModelFacts,
        kept_blocks: dict[int, nn.Module],
        block_kwargs: dict[int, dict[str, Any]],
        sites: dict[int, FoldSite],
        folds: list[Fold],
        config: CompensationConfig,
        heldout: int,
    ):
        self.kept_blocks, self.block_kwargs, self.sites = kept_blocks, block_kwargs, sites
        self.config, self.heldout = config, heldout
        self.final_norm = getattr(facts.inner, facts.spec.decoder_path).norm
        self.remaining_removed = sum(len(fold.removed) for fold in folds)
        self.remaining_steps = config.reconstruct_steps
        self.remaining_seconds = config.reconstruct_max_seconds
        self.cuts: list[TrainedCut] = []

    def _budget(self, fold: Fold) -> tuple[int, float | None]:
        share = len(fold.removed) / self.remaining_removed
        steps = max(1, round(self.remaining_steps * share))
        seconds = None if self.remaining_seconds is None else max(0.0, self.remaining_seconds) * share
        return steps, seconds

    def _chain_copies(self, chain: list[int], fitted: FittedMap) -> list[nn.Module]:
        """Copies of the chain's blocks, the map folded into the fold block's copy."""
        copies = [copy.deepcopy(self.kept_blocks[index]) for index in chain]
        site = self.sites[fitted.fold.block]
        path = site.name.removesuffix(".weight")
        local = FoldSite(copies[-1].get_submodule(path), site.name, site.structure, site.gain_offset)
        fold_map(copies[-1], local, fitted.transform)
        return copies

    def __call__(
        self, fold: Fold, chain: list[int], entering: torch.Tensor, dense: torch.Tensor, fitted: FittedMap
    ) -> torch.Tensor:
        """Trains the chain for ``fold`` and returns the pruned state after it."""
        start = time.process_time()
        steps, seconds = self._budget(fold)
        copies = self._chain_copies(chain, fitted)
        settings = ReconstructionSettings(
            steps=steps,
            learning_rate=self.config.reconstruct_lr,
            loss=self.config.reconstruct_loss,
            batch_size=self.config.batch_size,
            max_seconds=seconds,
            seed=self.config.seed,
        )
        kwargs = [self.block_kwargs[index] for index in chain]
        outcome = train_chain(copies, kwargs, entering, dense, self.heldout, settings, self.final_norm)
        hidden = entering
        with torch.no_grad():
            for block, state, block_kwargs in zip(copies, outcome.states, kwargs, strict=True):
                block.load_state_dict(state)
                hidden = run_block(block, hidden, block_kwargs, self.config.batch_size)
        summary = {
            "steps": outcome.steps,
            "kept_step": outcome.best_step,
            "heldout_loss_before": round(outcome.heldout_before, 6),
            "heldout_loss_after": round(outcome.heldout_after, 6),
            "cpu_seconds": round(outcome.seconds, 2),
        }
        states = [{k: v.detach().cpu() for k, v in state.items()} for state in outcome.states]
        self.cuts.append(TrainedCut(fold, list(chain), states, summary))
        logger.info(
            "Reconstruction of the cut %s (blocks %s): held-out loss %.4f -> %.4f in %d steps",
            fold.removed,
            chain,
            outcome.heldout_before,
            outcome.heldout_after,
            outcome.steps,
        )
        self.remaining_removed -= len(fold.removed)
        self.remaining_steps = max(0, self.remaining_steps - steps)
        if self.remaining_seconds is not None:
            self.remaining_seconds -= time.process_time() - start
        return hidden
