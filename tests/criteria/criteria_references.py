"""Straightforward reference implementations the criteria tests compare against (slow but obvious)."""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from optimum_depth.architectures import get_architecture
from optimum_depth.blocks.surgery import remove_layers


@contextmanager
def blocks_deleted(model, removed):
    """Temporarily deletes the blocks ``removed`` from the decoder's layer list and per-layer config (no copy)."""
    decoder, config = model.model, model.config
    kept = [i for i in range(len(decoder.layers)) if i not in set(removed)]
    fields = ["num_hidden_layers", *get_architecture(model).per_layer_sequences]
    saved = {name: getattr(config, name, None) for name in fields}
    layers = decoder.layers
    decoder.layers = nn.ModuleList([layers[i] for i in kept])
    config.num_hidden_layers = len(kept)
    for name in fields[1:]:  # e.g. Qwen2 picks each block's mask by config.layer_types[position]
        if saved[name] is not None:
            setattr(config, name, [saved[name][i] for i in kept])
    try:
        yield model
    finally:
        decoder.layers = layers
        for name, value in saved.items():
            setattr(config, name, value)


def naive_removal_nll(model, input_ids: torch.Tensor, batch_size: int, removed: list[int], surgery=False) -> float:
    """Mean token NLL of ``model`` with the blocks ``removed`` deleted, by running the whole model.

    With ``surgery`` the blocks are removed from a deep copy by :func:`remove_layers` (renumbered, config remapped);
    otherwise they are only left out of the decoder's layer list for the forward (faster, same result).
    """
    if surgery:
        pruned = copy.deepcopy(model)
        if removed:
            remove_layers(pruned, removed)
        context = nullcontext(pruned)
    else:
        context = blocks_deleted(model, removed)
    total, tokens = 0.0, 0
    with context as pruned, torch.no_grad():
        for batch in torch.split(input_ids, batch_size):
            count = batch.shape[0] * (batch.shape[1] - 1)
            total += float(pruned(input_ids=batch, labels=batch, use_cache=False).loss) * count
            tokens += count
    return total / tokens


def naive_perplexities(model, input_ids: torch.Tensor, batch_size: int) -> list[float]:
    """Perplexity of the model without each block, one full forward of a pruned copy per block."""
    num_blocks = model.config.num_hidden_layers
    return [math.exp(naive_removal_nll(model, input_ids, batch_size, [i])) for i in range(num_blocks)]


def naive_sleb(model, input_ids: torch.Tensor, batch_size: int, rounds: int, protected=()) -> list[int]:
    """SLEB's greedy loop on pruned copies: each round, the block whose removal gives the lowest loss goes."""
    removed: list[int] = []
    for _ in range(rounds):
        candidates = [i for i in range(model.config.num_hidden_layers) if i not in removed and i not in protected]
        losses = {}
        for candidate in candidates:
            losses[candidate] = naive_removal_nll(model, input_ids, batch_size, removed + [candidate])
        removed.append(min(candidates, key=lambda c: (losses[c], c)))
    return removed


def block_states(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states entering each block plus the last block's output, from ``output_hidden_states`` and a hook."""
    outputs = []
    handle = model.model.layers[-1].register_forward_hook(lambda module, args, out: outputs.append(out))
    try:
        with torch.no_grad():
            hidden = model(input_ids=input_ids, output_hidden_states=True, use_cache=False).hidden_states
    finally:
        handle.remove()
    last = outputs[0][0] if isinstance(outputs[0], tuple) else outputs[0]
    return [*hidden[: model.config.num_hidden_layers], last]
