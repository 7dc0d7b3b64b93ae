"""Replaying decoder blocks one at a time: capture their inputs and call arguments, replay them, collect activations.

:func:`capture_block_inputs` records, with forward pre-hooks, the hidden states entering the first block for every
calibration sequence and the keyword arguments (attention mask, position embeddings, ...) that the decoder passes to
*each* block: families with mixed layer types (Qwen3, Gemma2/3, SmolLM3) give different masks or rotary tables to
different blocks. The keyword arguments are recorded on a single sequence, so every tensor in them has batch size one
and broadcasts over any batch of the same length (calibration sequences are unpadded and of equal length).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..architectures import get_decoder_layers, unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["BlockInputs", "capture_block_inputs", "collect_input_sq_norms", "input_device", "run_block"]


class _StopForward(Exception):
    """Raised by a capture hook to end a forward pass early (never escapes this module)."""


@dataclass
class BlockInputs:
    """Hidden states entering the first decoder block and the call arguments of every block.

    Args:
        hidden_states: Shape ``(num_samples, seq_len, hidden_size)``.
        block_kwargs: For each block, the keyword arguments the decoder passes to it (without hidden states).
    """

    hidden_states: torch.Tensor
    block_kwargs: list[dict[str, Any]]


def _hidden_states_of(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _block_kwargs(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 1:
        raise TypeError(
            "A decoder block was called with extra positional arguments; optimum_depth replays keyword arguments "
            "only. Please report this model family."
        )
    return {k: v for k, v in kwargs.items() if k != "hidden_states"}


def input_device(model: nn.Module) -> torch.device:
    """Where ``model``'s input ids go: its embeddings' device (CPU when accelerate offloads them to ``meta``: the
    offload hook moves the ids to its execution device itself)."""
    embeddings: Any = model.get_input_embeddings()  # type: ignore[operator]
    weight = embeddings.weight
    return torch.device("cpu") if weight.device.type == "meta" else weight.device


@torch.no_grad()
def capture_block_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int) -> BlockInputs:
    """Runs the embeddings of ``model`` on the calibration ids and records what each decoder block receives.

    Args:
        model: A supported causal LM (unwrapped or wrapped).
        input_ids: Calibration ids of shape ``(num_samples, seq_len)``.
        batch_size: Sequences per forward pass.

    Returns:
        The first block's inputs and every block's keyword arguments.
    """
    inner = unwrap_model(model)
    layers = get_decoder_layers(model)
    device = input_device(inner)
    recorded: dict[int, dict[str, Any]] = {}

    def record_kwargs(position: int):
        def hook(_module, args, kwargs):
            recorded[position] = _block_kwargs(args, kwargs)
            if position == len(layers) - 1:
                raise _StopForward

        return hook

    handles = [layer.register_forward_pre_hook(record_kwargs(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        inner(input_ids=input_ids[:1].to(device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if len(recorded) != len(layers):
        raise RuntimeError(f"Only {len(recorded)} of {len(layers)} decoder blocks were called during the forward.")

    # Preallocated once the first batch shows the hidden size and dtype (no second copy from concatenation).
    buffer: list[torch.Tensor] = []
    offset = 0

    def record_hidden(_module, args, kwargs):
        hidden = _hidden_states_of(args, kwargs).detach()
        if not buffer:
            buffer.append(hidden.new_empty((input_ids.shape[0], *hidden.shape[1:])))
        buffer[0][offset : offset + hidden.shape[0]] = hidden
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(record_hidden, with_kwargs=True)
    try:
        for batch in torch.split(input_ids, batch_size):
            with suppress(_StopForward):
                inner(input_ids=batch.to(device), use_cache=False)
            offset += batch.shape[0]
    finally:
        handle.remove()
    return BlockInputs(hidden_states=buffer[0], block_kwargs=[recorded[i] for i in range(len(layers))])


def call_block(block: nn.Module, hidden_states: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """Calls one decoder block and returns its output hidden states (whatever tuple convention it follows)."""
    output = block(hidden_states, **kwargs)
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def run_block(
    block: nn.Module,
    inputs: torch.Tensor,
    kwargs: dict[str, Any],
    batch_size: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Runs a block over all samples in batches, without gradients.

    Args:
        block: The decoder block.
        inputs: Hidden states of shape ``(num_samples, seq_len, hidden)``.
        kwargs: The block's keyword arguments (from :class:`BlockInputs`).
        batch_size: Samples per call.
        out: Optional preallocated output buffer (must not alias ``inputs``).

    Returns:
        The block outputs, same shape as ``inputs``.
    """
    out = torch.empty_like(inputs) if out is None else out
    for start in range(0, inputs.shape[0], batch_size):
        stop = start + batch_size
        out[start:stop] = call_block(block, inputs[start:stop], kwargs)
    return out


@contextmanager
def collect_input_sq_norms(linears: dict[str, nn.Linear]) -> Iterator[dict[str, torch.Tensor]]:
    """While active, accumulates ``sum over tokens of x_j^2`` of the input of each linear layer.

    Args:
        linears: The linear layers, by name.

    Yields:
        A dict, filled during the forwards run inside the context, of float32 tensors of shape ``(in_features,)``.
    """
    sums: dict[str, torch.Tensor] = {
        name: torch.zeros(linear.in_features, dtype=torch.float32, device=linear.weight.device)
        for name, linear in linears.items()
    }

    def accumulate(name: str):
        def hook(_module, args):
            features = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            sums[name] += features.pow(2).sum(dim=0)

        return hook

    handles = [linear.register_forward_pre_hook(accumulate(name)) for name, linear in linears.items()]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()
