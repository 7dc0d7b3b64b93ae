"""Refusing NaN and infinite values before anything is computed from them or written.

One NaN in a weight makes every later block's score NaN; sorting NaN scores then removes arbitrary blocks, a NaN
compensation map is folded into the kept weights, and the saved checkpoint produces NaN logits. So the pruner checks,
before it scores or changes anything, that the weights it uses are finite; then that the scores it got are (an
overflow can make them NaN with finite weights: the block whose output is the first to go non-finite on the
calibration text is named); and that every compensation map is, before it is folded. Each refusal is one
:class:`~optimum_depth.errors.NonFiniteError` naming the block and the tensor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .architectures import ModelFacts
from .blocks.replay import input_device
from .errors import NonFiniteError

logger = logging.getLogger(__name__)

__all__ = ["check_finite_maps", "check_finite_scores", "check_finite_weights", "first_non_finite_output"]

_CHUNK = 1 << 24
"""Elements checked at once (bounds the temporary boolean tensor on big embedding matrices)."""


def _is_finite(tensor: torch.Tensor) -> bool:
    if not tensor.is_floating_point() or tensor.device.type == "meta":
        return True  # integer (quantized) storage holds no NaN; offloaded weights are checked where they live
    flat = tensor.detach().reshape(-1)
    return all(bool(torch.isfinite(flat[i : i + _CHUNK]).all()) for i in range(0, flat.numel(), _CHUNK))


def _count_non_finite(tensor: torch.Tensor) -> int:
    return int((~torch.isfinite(tensor.detach())).sum())


def _named_weights(facts: ModelFacts, blocks: Iterable[int] | None) -> Iterable[tuple[str, torch.Tensor]]:
    """``(description, tensor)`` of the weights outside the blocks, then of the blocks asked (original indices)."""
    in_blocks = {id(p) for layer in facts.layers for p in layer.parameters()}
    for name, param in facts.inner.named_parameters():
        if id(param) not in in_blocks:
            yield f"`{name}`", param
    wanted = set(facts.original_indices if blocks is None else blocks)
    for original, layer in zip(facts.original_indices, facts.layers, strict=True):
        if original in wanted:
            for name, param in layer.named_parameters():
                yield f"block {original} `{name}`", param


def check_finite_weights(facts: ModelFacts, blocks: Iterable[int] | None = None, action: str = "prune it") -> None:
    """Refuses a model holding NaN or infinite weights.

    Args:
        facts: The model's resolved facts.
        blocks: Original indices of the blocks to check (default: all); the weights outside the blocks are always
            checked.
        action: What is refused, for the message (e.g. ``"score it"``).

    Raises:
        NonFiniteError: Naming the block (original numbering) and the tensor.
    """
    for where, tensor in _named_weights(facts, blocks):
        if not _is_finite(tensor):
            raise NonFiniteError(
                f"The model's weights hold NaN or infinite values: {where} has {_count_non_finite(tensor)} of "
                f"{tensor.numel()} non-finite. Refusing to {action}; nothing was changed or written."
            )


@torch.no_grad()
def first_non_finite_output(facts: ModelFacts, input_ids: torch.Tensor) -> str | None:
    """Where the forward pass on ``input_ids`` first goes NaN or infinite: a block (original numbering), the
    embeddings or the logits; ``None`` when everything is finite.

    Args:
        facts: The model's resolved facts.
        input_ids: Calibration ids (the first sequence is used).
    """
    found: list[str] = []

    def watch(description: str):
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if not found and isinstance(tensor, torch.Tensor) and not _is_finite(tensor):
                found.append(description)

        return hook

    embeddings = facts.inner.get_input_embeddings()
    handles = [embeddings.register_forward_hook(watch("the embeddings"))]
    handles += [
        layer.register_forward_hook(watch(f"the output of block {original}"))
        for original, layer in zip(facts.original_indices, facts.layers, strict=True)
    ]
    try:
        logits = facts.inner(input_ids=input_ids[:1].to(input_device(facts.inner)), use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    if not found and not _is_finite(logits):
        found.append("the logits")
    return found[0] if found else None


def check_finite_scores(scores: Any, facts: ModelFacts | None = None, input_ids: torch.Tensor | None = None) -> None:
    """Refuses scores holding NaN or infinite values (they would choose blocks at random).

    Args:
        scores: The :class:`~optimum_depth.LayerScores`.
        facts: The scored model, to name where its activations go non-finite (optional).
        input_ids: Calibration ids the scores were computed on (optional, with ``facts``).

    Raises:
        NonFiniteError: Naming the candidates with non-finite scores, and the first non-finite activation.
    """
    bad = [
        f"{index}{'' if kind is None else f' {kind}'}"
        for index, kind, value in zip(
            scores.layer_indices, scores.sublayers or [None] * len(scores.values), scores.values, strict=True
        )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ]
    if not bad:
        return
    where = ""
    if facts is not None and input_ids is not None:
        location = first_non_finite_output(facts, input_ids)
        if location is not None:
            where = f"; on the calibration text, {location} is the first non-finite activation"
    raise NonFiniteError(
        f"The {scores.criterion} scores of candidates {bad} are NaN or infinite{where}. Refusing to plan from them; "
        "nothing was changed or written."
    )


def check_finite_maps(result: Any) -> None:
    """Refuses compensation maps holding NaN or infinite values (they would be folded into the kept weights).

    Args:
        result: The :class:`~optimum_depth.compensation.CompensationResult`.

    Raises:
        NonFiniteError: Naming the cut and the block it would be folded into.
    """
    for fitted in result.maps:
        if not (_is_finite(fitted.transform) and math.isfinite(fitted.heldout_error)):
            raise NonFiniteError(
                f"The compensation map for the cut of blocks {list(fitted.fold.removed)} (to be folded into block "
                f"{fitted.fold.block}'s `down_proj`) is NaN or infinite: the calibration activations are not finite. "
                "Refusing to fold it; nothing was changed or written."
            )
