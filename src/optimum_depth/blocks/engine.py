"""Cached block-wise forward passes over calibration data: the engine behind the forward-only criteria.

One real forward of the decoder per calibration batch records, for every decoder block, the hidden state entering it
and the exact arguments the model passed to it (the attention mask of its layer type, its rotary position
embeddings, position ids, ...), captured with forward pre-hooks. "The model without block ``p``" is then evaluated by
running only the blocks after ``p`` from the cached input of ``p``, then the final norm, the LM head and the loss:
the blocks before ``p`` are never recomputed. Because each block is re-called with the very arguments the model gave
it, the result equals deleting the block and running the whole model, for every family (mixes of sliding and full
attention, Gemma 3's local and global rotary embeddings, NoPE layers). Accelerate hooks (``device_map``, CPU or disk
offload) and quantized layers (bitsandbytes) run exactly as in a normal forward.

Greedy elimination (SLEB) commits a removal with :meth:`BlockwiseEngine.commit_removal`: the cached prefix is kept,
and the states the winning candidate's evaluation already computed become the new cached suffix.

Memory: the cache holds ``num_samples * seq_len * hidden_size * (num_blocks + 1)`` activations (91 MiB for
SmolLM2-135M with 10 x 128 tokens in float32), on the devices where the model produced them unless ``cache_device`` is
given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers.utils.logging import is_progress_bar_enabled

from ..algorithms.best_first import BestFirstOutcome, best_first
from ..algorithms.head_bounds import bound_tokens, head_supports_bounds, subset_nll_lower_bound
from ..architectures import get_architecture, get_decoder_layers, unwrap_model
from ..calibration import CalibrationData
from ..errors import UnsupportedArchitectureError
from .replay import input_device

logger = logging.getLogger(__name__)

__all__ = ["BlockCall", "BlockwiseEngine", "CapturedBatch", "RemovalResult", "counted", "progress_bar"]

DEFAULT_BOUND_SIZE = 128
"""Dense-model tokens per position in the vocabulary subset of the cheap NLL bound (plus the target)."""

FINAL_NORM_ATTR = "norm"
"""Attribute of the decoder holding the final norm (the same in every supported family)."""


def progress_bar(iterable, desc: str, total: int | None = None):
    """A ``tqdm`` bar that follows transformers' global progress-bar switch (``disable_progress_bar()``)."""
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not is_progress_bar_enabled())


def counted(fn: Callable[[int, int], float], bar) -> Callable[[int, int], float]:
    """``fn`` that also advances ``bar`` by one per call (candidate-batch evaluations of the best-first search).

    The bar's total is the number of candidate-batches, an upper bound: the early exit usually ends before it.
    """

    def wrapped(candidate: int, index: int) -> float:
        bar.update(1)
        return fn(candidate, index)

    return wrapped


@dataclass
class BlockCall:
    """The arguments a decoder block received besides its hidden state.

    Args:
        args: Positional arguments after the hidden state.
        kwargs: Keyword arguments (attention mask, position embeddings, position ids, ...).
    """

    args: tuple
    kwargs: dict[str, Any]


@dataclass
class CapturedBatch:
    """What one decoder forward over a calibration batch recorded.

    Args:
        input_ids: The batch's token ids (also the labels).
        hidden: ``num_blocks + 1`` tensors: the hidden state entering each block, then the output of the last block
            (before the final norm).
        calls: The arguments each block received.
    """

    input_ids: torch.Tensor
    hidden: list[torch.Tensor]
    calls: list[BlockCall]


@dataclass
class RemovalResult:
    """Calibration loss of the current model with one block removed.

    Args:
        position: Position of the removed block in the engine's current block list (``-1`` for the full model).
        nll: Sum of the token negative log-likelihoods over the calibration data.
        num_tokens: Number of predicted tokens.
        tail_states: Per batch, the states the evaluation computed after the removed block (kept on request, used
            by :meth:`BlockwiseEngine.commit_removal`).
    """

    position: int
    nll: float
    num_tokens: int
    tail_states: list[list[torch.Tensor]] | None = field(default=None, repr=False)

    @property
    def mean_nll(self) -> float:
        """Mean token negative log-likelihood (the causal-LM loss)."""
        return self.nll / self.num_tokens

    @property
    def perplexity(self) -> float:
        """``exp(mean_nll)``."""
        return math.exp(self.mean_nll)


def _first_tensor(output) -> torch.Tensor:
    """Decoder blocks return a tensor (transformers 5) or a tuple whose first item is the hidden state."""
    return output[0] if isinstance(output, (tuple, list)) else output


class BlockwiseEngine:
    """Block-wise forwards of a causal LM over calibration batches, with the block inputs cached.

    Args:
        model: A causal LM of a supported family, possibly wrapped (peft, DDP) or dispatched with accelerate.
        calibration: The calibration token batches.
        batch_size: Calibration sequences per forward.
        cache_device: Where cached hidden states are kept (``None``: where the model produced them).

    Raises:
        UnsupportedArchitectureError: If the model has no final norm or no output embeddings.
    """

    def __init__(
        self,
        model: nn.Module,
        calibration: CalibrationData,
        batch_size: int = 1,
        cache_device: str | torch.device | None = None,
    ):
        inner = unwrap_model(model)
        spec = get_architecture(inner)
        self.model = inner
        self.decoder: nn.Module = attrgetter(spec.decoder_path)(inner)
        final_norm = getattr(self.decoder, FINAL_NORM_ATTR, None)
        lm_head = inner.get_output_embeddings()
        if not isinstance(final_norm, nn.Module) or not isinstance(lm_head, nn.Module):
            raise UnsupportedArchitectureError(
                f"{type(inner).__name__} has no final norm `{spec.decoder_path}.{FINAL_NORM_ATTR}` or no LM head."
            )
        self.final_norm: nn.Module = final_norm
        self.lm_head: nn.Module = lm_head
        self.softcap = getattr(inner.config, "final_logit_softcapping", None)
        self.blocks: list[nn.Module] = list(get_decoder_layers(inner))
        self.block_ids: list[int] = list(range(len(self.blocks)))
        """Position each current block had when the engine was created (removals shift positions)."""
        self.batches = calibration.batches(batch_size)
        self.cache_device = torch.device(cache_device) if cache_device is not None else None
        self.cached: list[CapturedBatch] | None = None
        self.block_forwards = 0
        """Decoder-block forwards run so far (one block on one calibration batch), capture included."""
        self.head_forwards = 0
        """Final norm + LM head + loss evaluations run so far (one per calibration batch)."""
        self.bound_evaluations = 0
        """Cheap NLL lower bounds computed (:meth:`removal_batch_bound`)."""
        self.bound_size = DEFAULT_BOUND_SIZE
        """Reference tokens per position in the cheap bound's vocabulary subset."""
        self._bound_tokens: list[torch.Tensor] | None = None
        self._pending: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def num_blocks(self) -> int:
        """Number of blocks of the current (possibly already reduced) model."""
        return len(self.blocks)

    # ------------------------------------------------------------------------------------------------- capture
    def _to_cache(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.cache_device is None else tensor.to(self.cache_device)

    @torch.no_grad()
    def capture_batch(self, input_ids: torch.Tensor) -> CapturedBatch:
        """Runs the decoder once on ``input_ids`` and records every block's input, arguments and the last output.

        Args:
            input_ids: ``(batch, seq_len)`` token ids.

        Returns:
            The captured batch.

        Raises:
            RuntimeError: If some block was not called by the decoder's forward.
        """
        count = self.num_blocks
        hidden: list[torch.Tensor | None] = [None] * (count + 1)
        calls: list[BlockCall | None] = [None] * count

        def pre_hook(position: int):
            def hook(module, args, kwargs):
                kwargs = dict(kwargs)
                if args:
                    state, rest = args[0], tuple(args[1:])
                else:
                    state, rest = kwargs.pop("hidden_states"), ()
                hidden[position] = self._to_cache(state)
                calls[position] = BlockCall(rest, kwargs)

            return hook

        def last_hook(module, args, output):
            hidden[count] = self._to_cache(_first_tensor(output))

        handles = [
            block.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, block in enumerate(self.blocks)
        ]
        handles.append(self.blocks[-1].register_forward_hook(last_hook))
        try:
            self.decoder(input_ids=input_ids.to(input_device(self.model)), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        if any(h is None for h in hidden) or any(c is None for c in calls):
            missing = [i for i, c in enumerate(calls) if c is None]
            raise RuntimeError(f"The decoder's forward did not call blocks {missing}; cannot cache their inputs.")
        self.block_forwards += count
        return CapturedBatch(input_ids=input_ids, hidden=list(hidden), calls=list(calls))  # type: ignore[arg-type]

    def iter_captured(self, desc: str = "capturing block inputs") -> Iterator[CapturedBatch]:
        """Captures the calibration batches one at a time, without keeping them (streaming statistics)."""
        for input_ids in progress_bar(self.batches, desc=desc):
            yield self.capture_batch(input_ids)

    def capture(self) -> None:
        """Captures and caches every calibration batch (needed by :meth:`removal_loss`)."""
        self.cached = list(self.iter_captured())
        if self.cached:
            numel = sum(t.numel() * t.element_size() for batch in self.cached for t in batch.hidden)
            logger.info(
                "Cached %d block inputs of %d batches (%.1f MiB).", self.num_blocks, len(self.cached), numel / 2**20
            )

    def _require_cache(self) -> list[CapturedBatch]:
        if self.cached is None:
            raise RuntimeError("Call `capture()` before evaluating removals.")
        return self.cached

    # ------------------------------------------------------------------------------------------------- forwards
    def run_block(self, position: int, hidden: torch.Tensor, call: BlockCall) -> torch.Tensor:
        """Runs the current block at ``position`` on ``hidden`` with the arguments the model gave it."""
        self.block_forwards += 1
        return _first_tensor(self.blocks[position](hidden, *call.args, **call.kwargs))

    def sequence_nll(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> tuple[float, int]:
        """Summed next-token negative log-likelihood from the output of the last block.

        Applies the final norm, the LM head and (Gemma) the final logit soft-capping, as the causal LM does, then the
        cross-entropy in float32 against the shifted ``input_ids``.

        Args:
            hidden: Output of the last block, ``(batch, seq_len, hidden_size)``.
            input_ids: The batch's token ids.

        Returns:
            The summed negative log-likelihood and the number of predicted tokens.
        """
        nll, tokens, _ = self._head(hidden, input_ids)
        return nll, tokens

    def _head(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> tuple[float, int, torch.Tensor]:
        self.head_forwards += 1
        logits = self.lm_head(self.final_norm(hidden[:, :-1]))
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        logits = logits.float()
        labels = input_ids[:, 1:].to(logits.device)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")
        return float(nll), labels.numel(), logits

    @torch.no_grad()
    def dense_loss(self) -> RemovalResult:
        """Calibration loss of the current model (nothing removed), from the cached last-block outputs."""
        total, count = 0.0, 0
        tokens_for_bounds = []
        for batch in self._require_cache():
            nll, tokens, logits = self._head(batch.hidden[-1], batch.input_ids)
            total, count = total + nll, count + tokens
            tokens_for_bounds.append(bound_tokens(logits, batch.input_ids[:, 1:], self.bound_size))
        self._bound_tokens = tokens_for_bounds
        return RemovalResult(position=-1, nll=total, num_tokens=count)

    @property
    def supports_bounds(self) -> bool:
        """Whether :meth:`removal_batch_bound` is available (a plain LM head, and :meth:`dense_loss` was run)."""
        return self._bound_tokens is not None and head_supports_bounds(self.lm_head)

    def _tail(self, batch: CapturedBatch, position: int, keep: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        state = batch.hidden[position]
        states: list[torch.Tensor] = []
        for later in range(position + 1, self.num_blocks):
            state = self.run_block(later, state, batch.calls[later])
            if keep:
                states.append(self._to_cache(state))
        return state, states

    @torch.no_grad()
    def removal_loss(self, position: int, keep_states: bool = False) -> RemovalResult:
        """Calibration loss of the current model without the block at ``position``.

        Only the blocks after ``position`` run, from the cached input of ``position``.

        Args:
            position: Position in the current block list.
            keep_states: Keep the computed states so that :meth:`commit_removal` needs no recomputation.

        Returns:
            The loss (and the states when asked).
        """
        self._check_position(position)
        total, count = 0.0, 0
        tails: list[list[torch.Tensor]] | None = [] if keep_states else None
        for batch in self._require_cache():
            state, states = self._tail(batch, position, keep_states)
            nll, tokens = self.sequence_nll(state, batch.input_ids)
            total, count = total + nll, count + tokens
            if tails is not None:
                tails.append(states)
        return RemovalResult(position=position, nll=total, num_tokens=count, tail_states=tails)

    @torch.no_grad()
    def removal_batch_nll(self, position: int, index: int) -> float:
        """Summed token NLL of calibration batch ``index`` for the current model without the block at ``position``.

        The per-batch term of :meth:`removal_loss` (whose ``nll`` is the sum of these over the batches, in order),
        for the best-first early exit (:func:`optimum_depth.algorithms.best_first.best_first`).

        Args:
            position: Position in the current block list.
            index: Calibration batch index.

        Returns:
            The batch's summed negative log-likelihood (non-negative).
        """
        self._check_position(position)
        batch = self._require_cache()[index]
        state = self._pending.pop((position, index), None)
        if state is None:
            state, _ = self._tail(batch, position, keep=False)
        return self.sequence_nll(state, batch.input_ids)[0]

    @torch.no_grad()
    def removal_batch_bound(self, position: int, index: int) -> float:
        """A cheap lower bound of :meth:`removal_batch_nll` (same arguments), without the full LM head.

        Runs the blocks after ``position`` and bounds the batch NLL with the head rows of a vocabulary subset: the
        union of the dense model's top :attr:`bound_size` tokens at every position of the batch, plus the targets
        (:func:`~optimum_depth.algorithms.head_bounds.subset_nll_lower_bound`). The final state is kept (one
        ``batch x seq_len x hidden`` tensor per candidate-batch, until :meth:`removal_batch_nll` or
        :meth:`release_pending`), so a later :meth:`removal_batch_nll` of the same batch only runs the head.

        Raises:
            RuntimeError: If bounds are unavailable (see :attr:`supports_bounds`).
        """
        if not self.supports_bounds or self._bound_tokens is None:
            raise RuntimeError("Cheap bounds need a plain LM head and `dense_loss()` first.")
        self._check_position(position)
        batch = self._require_cache()[index]
        state, _ = self._tail(batch, position, keep=False)
        self._pending[(position, index)] = state
        self.bound_evaluations += 1
        normed = self.final_norm(state[:, :-1])
        labels = batch.input_ids[:, 1:]
        weight = cast(torch.Tensor, self.lm_head.weight)
        return subset_nll_lower_bound(normed, weight, self._bound_tokens[index], labels, self.softcap)

    def best_first_removals(
        self, positions: list[int], enough: Callable[[list[int]], bool], desc: str
    ) -> BestFirstOutcome:
        """Best-first evaluation (:func:`~optimum_depth.algorithms.best_first.best_first`) of removing each block at ``positions``.

        A candidate's total is its summed calibration NLL (:meth:`removal_batch_nll` per batch); the cheap bounds of
        :meth:`removal_batch_bound` are used when :attr:`supports_bounds`. A progress bar counts candidate-batches.

        Args:
            positions: Positions in the current block list.
            enough: Given the candidates completed so far (ascending totals), whether the caller needs no more.
            desc: Progress-bar label.

        Returns:
            The outcome (exact totals of the completed candidates, lower bounds of the others). Kept final states
            stay until :meth:`removal_batch_nll` of the same batch or :meth:`release_pending`.
        """
        num_batches = len(self.batches)
        with progress_bar(None, desc=desc, total=len(positions) * num_batches) as bar:
            bound = counted(self.removal_batch_bound, bar) if self.supports_bounds else None
            term = self.removal_batch_nll if bound is not None else counted(self.removal_batch_nll, bar)
            return best_first(positions, num_batches, term, enough, bound=bound)

    def release_pending(self) -> None:
        """Drops the final states kept by :meth:`removal_batch_bound`."""
        self._pending.clear()

    @property
    def num_tokens(self) -> int:
        """Predicted tokens over all calibration batches."""
        return sum(batch[:, 1:].numel() for batch in self.batches)

    def _check_position(self, position: int) -> None:
        if not 0 <= position < self.num_blocks:
            raise IndexError(f"Block position {position} is out of range for {self.num_blocks} blocks.")

    @torch.no_grad()
    def commit_removal(self, result: RemovalResult | int) -> None:
        """Removes a block from the engine's current model, keeping the cached prefix.

        The model itself is not modified: only the engine's view of it.

        Args:
            result: A :meth:`removal_loss` result evaluated with ``keep_states=True`` on the current model (its
                states become the new cached suffix), or a bare position (the suffix is then recomputed).
        """
        cached = self._require_cache()
        self.release_pending()  # positions shift
        position = result if isinstance(result, int) else result.position
        tails = None if isinstance(result, int) else result.tail_states
        self._check_position(position)
        if tails is not None and len(tails) != len(cached):
            raise ValueError("The removal result does not come from this engine's calibration batches.")
        for index, batch in enumerate(cached):
            suffix = tails[index] if tails is not None else self._tail(batch, position, keep=True)[1]
            if len(suffix) != self.num_blocks - 1 - position:
                raise ValueError("The removal result was computed on a different block list; re-evaluate it.")
            batch.hidden = batch.hidden[: position + 1] + suffix
            del batch.calls[position]
        del self.blocks[position]
        del self.block_ids[position]
