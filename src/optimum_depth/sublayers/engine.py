"""Cached sublayer-wise forwards: evaluate "the current model without sublayer ``c``" by running only its suffix.

The block engine (:class:`optimum_depth.blocks.engine.BlockwiseEngine`) records, with one real forward per calibration
batch, the input and the exact arguments of every decoder block. This engine splits each block into its attention
and MLP residual branches (``h + post(attention(pre(h)))`` and ``h + post(mlp(pre(h)))``, ``post`` only for Gemma's
sandwich norms), checks that the split reproduces the recorded block outputs, and caches the hidden state entering
every sublayer of the *current* model (the dense model minus the sublayers already removed by the search).

Removing candidate ``c`` leaves everything before ``c`` unchanged, so its evaluation starts from the cached state
entering ``c`` and runs only the sublayers after it, then the final norm and LM head, and compares the logits with
the cached dense reference. Committing a removal recomputes the cached states after it.

Cost accounting (machine-independent): ``sublayer_runs`` counts sublayer executions on one batch, ``head_runs``
final norm + LM head + distance evaluations; ``work`` weighs each by its parameter count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..algorithms.output_distances import OutputDistance
from ..architectures import get_architecture, get_decoder_layers, get_layer_parts
from ..blocks.engine import BlockCall, BlockwiseEngine, progress_bar
from ..calibration import CalibrationData
from ..errors import UnsupportedArchitectureError
from .candidates import ATTENTION, Sublayer, list_sublayers

logger = logging.getLogger(__name__)

__all__ = ["Evaluation", "SublayerEngine"]

_SPLIT_TOLERANCE = 1e-4
"""Largest relative difference allowed between a recorded block output and its attention+MLP split."""


@dataclass
class _Step:
    module: nn.Module
    pre_norm: nn.Module | None
    post_norm: nn.Module | None
    is_attention: bool
    block: int
    params: int


@dataclass
class _Batch:
    input_ids: torch.Tensor
    calls: list[BlockCall]
    states: list[torch.Tensor]
    reference: torch.Tensor


@dataclass
class Evaluation:
    """Distance of "the current model without one candidate" to the dense model.

    Args:
        candidate: Sublayer position.
        total: Sum of the distance terms over the evaluated batches (a lower bound of the full sum when the
            evaluation stopped early because it already exceeded the bound).
    """

    candidate: int
    total: float


class SublayerEngine:
    """Sublayer-wise evaluation of removals over calibration batches.

    Args:
        model: A causal LM of a supported family (possibly already sublayer-pruned), in eval mode.
        calibration: The calibration token batches.
        distance: How pruned outputs are compared with the dense ones.
        batch_size: Calibration sequences per forward.

    Raises:
        UnsupportedArchitectureError: If the attention/MLP split does not reproduce the model's blocks.
    """

    def __init__(self, model: nn.Module, calibration: CalibrationData, distance: OutputDistance, batch_size: int = 1):
        self.blocks = BlockwiseEngine(model, calibration, batch_size=batch_size)
        self.distance = distance
        self.sublayers: list[Sublayer] = list_sublayers(model)
        spec = get_architecture(model)
        layers = get_decoder_layers(model)
        self._steps: list[_Step] = []
        for sublayer in self.sublayers:
            parts = get_layer_parts(layers[sublayer.block], spec)
            is_attention = sublayer.kind == ATTENTION
            module = parts.attention if is_attention else parts.mlp
            norms = parts.attention_norms if is_attention else parts.mlp_norms
            if module is None:
                raise RuntimeError(f"Internal error: listed sublayer {sublayer.name} is missing from its block.")
            params = sum(p.numel() for m in (module, *norms) for p in m.parameters())
            pre, post = (norms + [None, None])[:2]
            self._steps.append(_Step(module, pre, post, is_attention, sublayer.block, params))
        self.head_params = sum(
            p.numel() for m in (self.blocks.final_norm, self.blocks.lm_head) for p in m.parameters()
        )
        self.removed: set[int] = set()
        self.batches: list[_Batch] = []
        self.num_terms = 0
        self.sublayer_runs = 0
        self.head_runs = 0
        self.work = 0

    # ------------------------------------------------------------------------------------------------ tensor math
    @property
    def num_sublayers(self) -> int:
        """Number of candidate sublayers."""
        return len(self._steps)

    @property
    def forward_work(self) -> int:
        """Parameter-weighted work of one full forward (all sublayers + head) on one batch."""
        return sum(step.params for step in self._steps) + self.head_params

    def sublayer_params(self, position: int) -> int:
        """Parameters of a candidate sublayer, its norms included."""
        return self._steps[position].params

    def apply_sublayer(self, position: int, hidden: torch.Tensor, call: BlockCall) -> torch.Tensor:
        """Runs one residual branch: ``hidden + post(sublayer(pre(hidden)))``."""
        step = self._steps[position]
        self.sublayer_runs += 1
        self.work += step.params
        branch = step.pre_norm(hidden) if step.pre_norm is not None else hidden
        branch = step.module(hidden_states=branch, **call.kwargs)[0] if step.is_attention else step.module(branch)
        if step.post_norm is not None:
            branch = step.post_norm(branch)
        return hidden + branch

    def head_distance(self, hidden: torch.Tensor, reference: torch.Tensor) -> float:
        """Distance terms of one batch from the output of the last sublayer."""
        self.head_runs += 1
        self.work += self.head_params
        return self.distance.batch_sum(reference, self.logits(hidden))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm, LM head and (Gemma) logit soft-capping, as the causal LM applies them."""
        logits = self.blocks.lm_head(self.blocks.final_norm(hidden))
        if self.blocks.softcap is not None:
            logits = torch.tanh(logits / self.blocks.softcap) * self.blocks.softcap
        return logits

    def _run(self, batch: _Batch, start: int, hidden: torch.Tensor, skip: set[int]) -> torch.Tensor:
        for position in range(start, self.num_sublayers):
            if position not in skip:
                hidden = self.apply_sublayer(position, hidden, batch.calls[self._steps[position].block])
        return hidden

    # ------------------------------------------------------------------------------------------------ capture
    @torch.no_grad()
    def capture(self) -> None:
        """Records every batch, builds the sublayer states, checks the split and caches the dense reference."""
        self.batches = []
        for input_ids in progress_bar(self.blocks.batches, desc="capturing sublayer inputs"):
            captured = self.blocks.capture_batch(input_ids)
            self.work += self.forward_work - self.head_params  # the recording forward (decoder only)
            if any(call.args for call in captured.calls):
                raise UnsupportedArchitectureError(
                    "Decoder blocks called with positional arguments are not supported."
                )
            batch = _Batch(input_ids, captured.calls, [], torch.empty(0))
            hidden = captured.hidden[0]
            for position, step in enumerate(self._steps):
                batch.states.append(hidden)
                hidden = self.apply_sublayer(position, hidden, batch.calls[step.block])
            batch.states.append(hidden)
            self._check_split(batch, captured.hidden)
            self.head_runs += 1
            self.work += self.head_params
            batch.reference = self.distance.reference(self.logits(hidden))
            self.num_terms += self.distance.terms(input_ids)
            self.batches.append(batch)

    def _check_split(self, batch: _Batch, block_states: list[torch.Tensor]) -> None:
        first_of_block: dict[int, int] = {}
        for position, step in enumerate(self._steps):
            first_of_block.setdefault(step.block, position)
        pairs = [(block_states[b], batch.states[p]) for b, p in first_of_block.items()]
        pairs.append((block_states[-1], batch.states[-1]))
        for recorded, rebuilt in pairs:
            scale = float(recorded.abs().max()) or 1.0
            error = float((recorded - rebuilt).abs().max()) / scale
            if error > _SPLIT_TOLERANCE:
                raise UnsupportedArchitectureError(
                    f"Splitting the blocks of {type(self.blocks.model).__name__} into attention and MLP branches does "
                    f"not reproduce them (relative error {error:.2e}); sublayer scoring is not supported for it."
                )

    def _require_batches(self) -> list[_Batch]:
        if not self.batches:
            raise RuntimeError("Call `capture()` before evaluating removals.")
        return self.batches

    # ------------------------------------------------------------------------------------------------ removals
    @torch.no_grad()
    def evaluate(self, candidate: int, bound: float | None = None) -> Evaluation:
        """Distance of the current model without ``candidate``, running only the sublayers after it.

        Args:
            candidate: Position of a sublayer not removed yet.
            bound: Stop as soon as the partial sum exceeds it (the candidate cannot be the best any more).

        Returns:
            The evaluation.
        """
        total = 0.0
        num_batches = len(self._require_batches())
        for index in range(num_batches):
            total += self.batch_term(candidate, index)
            if bound is not None and total > bound and index < num_batches - 1:
                return Evaluation(candidate, total)
        return Evaluation(candidate, total)

    @torch.no_grad()
    def batch_term(self, candidate: int, index: int) -> float:
        """Distance terms of calibration batch ``index`` for the current model without ``candidate``.

        Only the sublayers after ``candidate`` run, from the cached state entering it.
        """
        if candidate in self.removed or not 0 <= candidate < self.num_sublayers:
            raise ValueError(f"Sublayer {candidate} is not a remaining candidate.")
        batch = self._require_batches()[index]
        hidden = self._run(batch, candidate + 1, batch.states[candidate], self.removed | {candidate})
        return self.head_distance(hidden, batch.reference)

    @torch.no_grad()
    def commit(self, candidate: int) -> None:
        """Removes ``candidate`` from the engine's current model and recomputes the cached states after it."""
        if candidate in self.removed or not 0 <= candidate < self.num_sublayers:
            raise ValueError(f"Sublayer {candidate} is not a remaining candidate.")
        self.removed.add(candidate)
        for batch in self._require_batches():
            hidden = batch.states[candidate]
            for position in range(candidate + 1, self.num_sublayers):
                batch.states[position] = hidden
                if position not in self.removed:
                    hidden = self.apply_sublayer(position, hidden, batch.calls[self._steps[position].block])
            batch.states[-1] = hidden

    def mean(self, total: float) -> float:
        """A total of distance terms as the mean per token (per sequence for ``norm``)."""
        return total / max(1, self.num_terms)
