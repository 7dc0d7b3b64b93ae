"""Block surgery: remove decoder blocks in place and leave a model that is correct on every path.

After :func:`remove_layers` the model's attention ``layer_idx`` values are renumbered (so KV caches index the right
slots: the k-th block that has attention uses slot k, see :mod:`optimum_depth.modeling.pruned_layout`),
``num_hidden_layers`` and every per-layer config field match the kept blocks, the provenance is composed, and the
removed parameters are released.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable
from typing import Any

from torch import nn

from ..architectures import (
    ArchitectureSpec,
    ModelFacts,
    as_facts,
    get_architecture,
    get_decoder_layers,
    set_decoder_layers,
    unwrap_model,
)
from ..errors import LayerIndexError
from ..modeling.pruned_layout import block_layer_types, cache_layer_types
from ..plan import PruningPlan
from ..provenance import original_layer_indices, record_block_removal

logger = logging.getLogger(__name__)

__all__ = ["LayerIndexError", "apply_block_plan", "remove_layers", "renumber_layer_indices", "validate_layer_indices"]


def validate_layer_indices(indices: Iterable[int], num_layers: int) -> list[int]:
    """Checks block indices for removal and returns them sorted.

    Args:
        indices: Positions of the blocks to remove (current numbering).
        num_layers: Number of blocks of the model.

    Returns:
        The indices, sorted.

    Raises:
        LayerIndexError: On a non-integer, out-of-range or duplicate index, an empty list, or removing every block.
    """
    indices = list(indices)
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise LayerIndexError(f"Block indices must be integers, got {bad}.")
    out_of_range = [i for i in indices if not 0 <= i < num_layers]
    if out_of_range:
        raise LayerIndexError(f"Block indices {out_of_range} are out of range for a model with {num_layers} blocks.")
    if len(set(indices)) != len(indices):
        dupes = sorted({i for i in indices if indices.count(i) > 1})
        raise LayerIndexError(f"Block indices {dupes} are given more than once.")
    if not indices:
        raise LayerIndexError("No block index given for removal.")
    if len(indices) >= num_layers:
        raise LayerIndexError(f"Cannot remove all {num_layers} blocks of the model.")
    return sorted(indices)


def renumber_layer_indices(layers: nn.ModuleList, spec: ArchitectureSpec) -> None:
    """Gives the attention of the k-th block that has one ``layer_idx = k``: the KV-cache slot it indexes.

    In a model without removed attention this is the block's position.

    Args:
        layers: The decoder blocks, in their new order.
        spec: The family's facts (where a block keeps its attention).
    """
    slot = 0
    for block in layers:
        attention = getattr(block, spec.attention_attr, None)
        if attention is None:
            continue
        for module in attention.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = slot  # type: ignore[assignment]
        if isinstance(getattr(block, "layer_idx", None), int):  # blocks that record their index (Gemma)
            block.layer_idx = slot  # type: ignore[assignment]
        slot += 1


def _remap_per_layer_config(config, spec: ArchitectureSpec, kept: list[int], num_layers: int) -> dict:
    """Computes the new values of the per-layer config fields (nothing is written)."""
    updates: dict = {"num_hidden_layers": len(kept)}
    for name in spec.per_layer_sequences:
        values = getattr(config, name, None)
        if values is None:
            continue
        if name == "layer_types" and getattr(config, "skipped_attention", None):  # attention-first layout
            block_types = block_layer_types(config)
            updates[name] = cache_layer_types([block_types[i] for i in kept])
            continue
        if len(values) != num_layers:
            raise ValueError(f"config.{name} has {len(values)} entries but the model has {num_layers} blocks.")
        updates[name] = [values[i] for i in kept]
    position = {old: new for new, old in enumerate(kept)}
    for name in spec.per_layer_index_lists:
        values = getattr(config, name, None)
        if values is not None:
            updates[name] = [position[i] for i in values if i in position]
    if getattr(config, "max_window_layers", None) is not None:
        # Qwen2/3: blocks with index >= max_window_layers use sliding attention (layer_types is authoritative).
        updates["max_window_layers"] = sum(1 for i in kept if i < config.max_window_layers)
    return updates


def _remap_heterogeneous(config, kept: list[int]) -> dict | None:
    if not getattr(config, "is_heterogeneous", False):
        return None
    overrides = config._heterogeneity_spec.per_layer_overrides
    return {new: dict(overrides[old]) for new, old in enumerate(kept) if old in overrides}


def remove_layers(model: nn.Module, indices: Iterable[int]) -> nn.Module:
    """Removes decoder blocks in place (all-or-nothing).

    Works on plain transformers causal LMs of the supported families and on peft-wrapped ones (LoRA adapters inside
    a removed block go with it).

    Args:
        model: The model to prune, possibly wrapped by peft.
        indices: Positions (current numbering) of the blocks to remove.

    Returns:
        The same ``model`` object, pruned.

    Raises:
        LayerIndexError: If the indices are invalid; the model is then left untouched.
        UnsupportedArchitectureError: If the model's family is not supported.
    """
    spec = get_architecture(model)
    inner = unwrap_model(model)
    config: Any = inner.config
    layers = get_decoder_layers(model)
    num_layers = len(layers)
    if config.num_hidden_layers != num_layers:
        raise ValueError(
            f"config.num_hidden_layers={config.num_hidden_layers} does not match the {num_layers} decoder blocks."
        )
    removed = validate_layer_indices(indices, num_layers)
    kept = [i for i in range(num_layers) if i not in set(removed)]
    # Compute everything that can fail before the first change.
    updates = _remap_per_layer_config(config, spec, kept, num_layers)
    heterogeneous = _remap_heterogeneous(config, kept)
    original = original_layer_indices(config)

    new_layers = nn.ModuleList([layers[i] for i in kept])
    renumber_layer_indices(new_layers, spec)
    set_decoder_layers(model, new_layers)
    record_block_removal(config, kept)
    if heterogeneous is not None:
        config.per_layer_config = None
    for name, value in updates.items():
        setattr(config, name, value)
    if heterogeneous is not None:
        config.per_layer_config = heterogeneous
    del layers
    gc.collect()
    logger.info(
        "Removed %d of %d blocks (original indices %s); %d blocks remain.",
        len(removed),
        num_layers,
        [original[i] for i in removed],
        len(kept),
    )
    return model


def apply_block_plan(model: nn.Module | ModelFacts, plan: PruningPlan) -> None:
    """Removes the blocks of a block plan (original numbering) from the model, in place.

    The plan must already have been checked against the model (``DepthPruner.apply`` does).

    Args:
        model: The model (possibly wrapped by peft/DDP), or its resolved facts.
        plan: A block plan.
    """
    facts = as_facts(model)
    positions = [facts.original_indices.index(i) for i in plan.removed_blocks]
    remove_layers(facts.model, positions)
