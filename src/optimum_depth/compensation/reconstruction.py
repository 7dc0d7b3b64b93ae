"""Training-light reconstruction: train copies of kept blocks to reproduce the dense hidden state after a cut.

After a cut's linear map is folded (:mod:`.linear_maps`), the kept block(s) before the cut are trained, on cached
calibration activations, so that the pruned model's hidden state after them reproduces the dense model's hidden
state after the cut: input = the pruned model's state entering the first trained block, target = the dense state
after the cut, both cached by the compensation walk (:mod:`.walk`). Only copies are trained; their parameters are
returned and later loaded into the pruned model, which keeps its plain architecture (no new module, unlike
LLM-Streamline's replacement layer).

The loss (``reconstruct_loss``) compares the trained blocks' output with the target on a batch of sequences:
``final_norm_cosine`` (1 - cosine after the model's final norm, i.e. per token and in the space the LM head reads,
weighted by the final norm's gain), ``token_mse`` (squared error relative to each target token's squared norm: every
token counts alike, so the huge first-token states of most LLMs do not dominate) or ``mse`` (relative to the
batch's mean squared norm). Adam with a *relative* learning rate (below), cosine decay to zero, gradient norm
clipped at 1. The loss on held-out calibration sequences is measured before training
and at regular intervals; the parameters with the lowest held-out loss are kept, so training never leaves the cut
worse, on held-out text, than the linear map alone.

The learning rate is relative to each parameter tensor's root-mean-square value at the start (Adafactor's relative
step size, Shazeer & Stern 2018): Adam moves every parameter by about its learning rate, so an absolute rate that
suits SmolLM2-135M (weight RMS 0.19) is five times too large for Gemma-3-270M (weight RMS 0.035), and the best
absolute rates measured on the two differ by that factor; relative to the weights' scale one rate serves both.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..blocks.replay import call_block

logger = logging.getLogger(__name__)

__all__ = ["ReconstructionSettings", "TrainedChain", "reconstruction_loss", "train_chain"]

EVALUATIONS = 8
"""Held-out evaluations during one chain's training (plus one before it)."""
GRADIENT_CLIP = 1.0


@dataclass(frozen=True)
class ReconstructionSettings:
    """How one chain of blocks is trained.

    Args:
        steps: Adam steps.
        learning_rate: Peak learning rate relative to each parameter tensor's initial RMS (cosine decay to zero).
        loss: ``"token_mse"``, ``"mse"`` or ``"final_norm_cosine"``.
        batch_size: Sequences per step.
        max_seconds: CPU-seconds (process time) after which training stops, or ``None``.
        seed: Seed of the batch sampling.
    """

    steps: int
    learning_rate: float
    loss: str = "final_norm_cosine"
    batch_size: int = 8
    max_seconds: float | None = None
    seed: int = 0


@dataclass
class TrainedChain:
    """The outcome of :func:`train_chain`.

    Args:
        states: Per trained block (position in the chain), its trained parameters and buffers (CPU, block dtype).
        steps: Steps taken (fewer than asked when the time ran out).
        best_step: The step whose parameters were kept (0: the untrained blocks were best on held-out text).
        heldout_before: Held-out loss before training.
        heldout_after: Held-out loss of the kept parameters.
        seconds: CPU-seconds spent.
        history: ``(step, held-out loss)`` of every evaluation.
    """

    states: list[dict[str, torch.Tensor]] = field(repr=False)
    steps: int
    best_step: int
    heldout_before: float
    heldout_after: float
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)


def reconstruction_loss(
    output: torch.Tensor, target: torch.Tensor, kind: str, final_norm: nn.Module | None = None
) -> torch.Tensor:
    """The reconstruction loss of ``output`` against ``target`` (both ``(batch, seq_len, hidden)``).

    Args:
        output: The trained blocks' output.
        target: The dense hidden state to reproduce.
        kind: ``"token_mse"``, ``"mse"`` or ``"final_norm_cosine"``.
        final_norm: The model's final norm (needed by ``"final_norm_cosine"``; its parameters are not trained).

    Returns:
        A scalar tensor.
    """
    if kind == "token_mse":
        error = (output - target).pow(2).sum(-1)
        return (error / target.pow(2).sum(-1).clamp_min(1e-12)).mean()
    if kind == "mse":
        return (output - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)
    if kind == "final_norm_cosine":
        if final_norm is None:
            raise ValueError("The 'final_norm_cosine' loss needs the model's final norm.")
        cosine = nn.functional.cosine_similarity(final_norm(output), final_norm(target), dim=-1)
        return 1.0 - cosine.mean()
    raise ValueError(f"Unknown reconstruction loss {kind!r}.")


def _float32_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The block's call arguments with floating tensors (rotary tables, float masks) in float32."""

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.float()
        if isinstance(value, tuple):
            return tuple(cast(v) for v in value)
        return value

    return {key: cast(value) for key, value in kwargs.items()}


def _run_chain(chain: Sequence[nn.Module], kwargs: Sequence[dict[str, Any]], states: torch.Tensor) -> torch.Tensor:
    hidden = states
    for block, block_kwargs in zip(chain, kwargs, strict=True):
        hidden = call_block(block, hidden, block_kwargs)
    return hidden


@torch.no_grad()
def _heldout_loss(chain, kwargs, inputs, targets, settings, final_norm) -> float:
    total, count = 0.0, 0
    for start in range(0, inputs.shape[0], settings.batch_size):
        stop = start + settings.batch_size
        output = _run_chain(chain, kwargs, inputs[start:stop].float())
        loss = reconstruction_loss(output, targets[start:stop].float(), settings.loss, final_norm)
        total += float(loss) * (min(stop, inputs.shape[0]) - start)
        count += min(stop, inputs.shape[0]) - start
    return total / count


def _relative_groups(params: list[nn.Parameter], learning_rate: float) -> list[dict[str, Any]]:
    """One Adam group per tensor, ``learning_rate`` times the tensor's RMS (a zero tensor: the others' mean RMS)."""
    scales = [float(p.detach().float().pow(2).mean().sqrt()) for p in params]
    nonzero = [s for s in scales if s > 0]
    fallback = sum(nonzero) / len(nonzero) if nonzero else 1.0
    return [
        {"params": [p], "lr": learning_rate * (s if s > 0 else fallback)} for p, s in zip(params, scales, strict=True)
    ]


def _snapshot(chain: Sequence[nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in block.state_dict().items()} for block in chain]


def train_chain(
    blocks: Sequence[nn.Module],
    kwargs: Sequence[dict[str, Any]],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    heldout: int,
    settings: ReconstructionSettings,
    final_norm: nn.Module | None = None,
) -> TrainedChain:
    """Trains float32 copies of ``blocks`` (run in order) to map ``inputs`` to ``targets``; the blocks are unchanged.

    Args:
        blocks: The chain of kept blocks, in model order (the map already folded into the last one).
        kwargs: Each block's call arguments (as the model passes them).
        inputs: Pruned hidden states entering the first block, ``(samples, seq_len, hidden)``.
        targets: Dense hidden states the last block's output must reproduce, same shape.
        heldout: The last ``heldout`` samples are never trained on; they measure the loss and choose the kept step.
        settings: Steps, learning rate, loss, batch size, time cap, seed.
        final_norm: The model's final norm (for ``"final_norm_cosine"``).

    Returns:
        The trained parameters of each block (in the blocks' dtype) and how training went.
    """
    start_time = time.process_time()
    dtypes = [next(iter(block.parameters())).dtype for block in blocks]
    chain = [copy.deepcopy(block).float().eval() for block in blocks]  # eval: no dropout, deterministic
    for block in chain:
        for param in block.parameters():
            param.requires_grad_(True)
    norm = None
    if final_norm is not None:
        norm = copy.deepcopy(final_norm).float().eval().requires_grad_(False)
    kwargs = [_float32_kwargs(k) for k in kwargs]
    fit_rows = inputs.shape[0] - heldout
    held_in, held_out = inputs[fit_rows:], targets[fit_rows:]
    best = (_heldout_loss(chain, kwargs, held_in, held_out, settings, norm), 0, _snapshot(chain))
    history = [(0, best[0])]
    params = [p for block in chain for p in block.parameters()]
    optimizer = torch.optim.Adam(_relative_groups(params, settings.learning_rate))
    peaks = [group["lr"] for group in optimizer.param_groups]
    generator = torch.Generator().manual_seed(settings.seed)
    interval = max(1, math.ceil(settings.steps / EVALUATIONS))
    step = 0
    with torch.enable_grad():
        for step in range(1, settings.steps + 1):
            decay = 0.5 * (1 + math.cos(math.pi * (step - 1) / settings.steps))
            for group, peak in zip(optimizer.param_groups, peaks, strict=True):
                group["lr"] = peak * decay
            rows = torch.randint(0, fit_rows, (min(settings.batch_size, fit_rows),), generator=generator)
            output = _run_chain(chain, kwargs, inputs[rows].float())
            loss = reconstruction_loss(output, targets[rows].float(), settings.loss, norm)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRADIENT_CLIP)
            optimizer.step()
            out_of_time = settings.max_seconds is not None and time.process_time() - start_time >= settings.max_seconds
            if step % interval == 0 or step == settings.steps or out_of_time:
                value = _heldout_loss(chain, kwargs, held_in, held_out, settings, norm)
                history.append((step, value))
                if value < best[0]:
                    best = (value, step, _snapshot(chain))
            if out_of_time:
                break
    states = [
        {k: v.to(dtype) if v.is_floating_point() else v for k, v in s.items()}
        for s, dtype in zip(best[2], dtypes, strict=True)
    ]
    return TrainedChain(
        states=states,
        steps=step,
        best_step=best[1],
        heldout_before=history[0][1],
        heldout_after=best[0],
        seconds=time.process_time() - start_time,
        history=history,
    )
