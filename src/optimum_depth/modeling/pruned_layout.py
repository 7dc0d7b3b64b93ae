"""How a pruned checkpoint's ``config.json`` describes its blocks: provenance and the attention layout.

Pure Python (no torch, no transformers): the package reads it without paying for transformers' config machinery,
and it is copied beside every sublayer-pruned checkpoint with the other ``trust_remote_code`` files.

**Attention-first layout.** A sublayer-pruned model may have blocks without attention. Transformers builds its KV
caches from ``config.layer_types`` (one cache slot per entry), and ``Cache.get_seq_length()`` - which ``generate()``
calls without a layer index - reads slot 0. So the config lists the attention types of the blocks that still have
attention first, in block order, then one :data:`NO_ATTENTION_LAYER_TYPE` entry per attention-free block; the
attention module of the k-th block with attention indexes cache slot k. Slot 0 then always belongs to a real
attention, on every transformers release, with any cache built from the config or grown lazily, and the
attention-free slots at the end are never touched. A block's own type is recovered with :func:`block_layer_types`.

Checkpoints of optimum-depth 0.1 / 0.2 listed ``layer_types`` in block order (``"mlp"`` / ``"moe"`` at the
attention-free blocks): :func:`block_layer_types` reads both, and loading re-writes them attention-first.
"""

from __future__ import annotations

from typing import Any

PROVENANCE_KEYS = ("surviving_layers", "source_model", "source_num_hidden_layers", "pruning")
"""Config keys recording where a pruned checkpoint comes from."""

SUBLAYER_KEYS = ("skipped_attention", "skipped_mlp")
"""Config keys listing the blocks (current numbering) that lost their attention / MLP sublayer."""

NO_ATTENTION_LAYER_TYPE = "moe"
"""``layer_types`` entry of an attention-free cache slot. It is the one entry transformers both accepts in any config
(``PreTrainedConfig`` validates ``layer_types``; nemotron_h uses it for its attention-free layers) and gives a cache
slot that stores nothing (a ``DummyLayer``). Because the entry is valid for plain transformers, a tool that reads the
checkpoint's ``config.json`` without the pruned classes (``AutoTokenizer``, a generic ``PreTrainedConfig``) does not
reject it."""

LEGACY_NO_ATTENTION_LAYER_TYPES = ("mlp",)
"""Entries that marked attention-free blocks in checkpoints of optimum-depth 0.1; read as
:data:`NO_ATTENTION_LAYER_TYPE`."""


def provenance_problem(surviving_layers: Any, num_hidden_layers: int, source_num_hidden_layers: Any) -> str | None:
    """What is wrong with a config's pruning provenance, or ``None`` when it is consistent.

    Consistent means: ``source_num_hidden_layers`` is a positive integer (or absent), and ``surviving_layers`` (when
    present) is a strictly increasing list of ``num_hidden_layers`` integers within the source model's blocks.

    Args:
        surviving_layers: ``config.surviving_layers``.
        num_hidden_layers: ``config.num_hidden_layers``.
        source_num_hidden_layers: ``config.source_num_hidden_layers``.

    Returns:
        A sentence naming the problem, or ``None``.
    """

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    source = source_num_hidden_layers
    if source is not None and (not is_int(source) or source < 1):
        return f"source_num_hidden_layers={source!r} is not a positive integer"
    if surviving_layers is None:
        return None
    source = num_hidden_layers if source is None else source
    values = surviving_layers
    if not isinstance(values, (list, tuple)) or not all(is_int(i) for i in values):
        return f"surviving_layers={values!r} is not a list of integers"
    if len(values) != num_hidden_layers:
        return f"surviving_layers has {len(values)} entries for num_hidden_layers={num_hidden_layers}"
    if any(values[i + 1] <= values[i] for i in range(len(values) - 1)):
        return f"surviving_layers={list(values)} is not strictly increasing (duplicates or wrong order)"
    if values and (values[0] < 0 or values[-1] >= source):
        return f"surviving_layers={list(values)} names blocks outside the source model's {source} blocks"
    return None


def default_layer_type(config: Any) -> str:
    """The attention type of a family without ``layer_types``: sliding when the config sets a window, else full."""
    return "sliding_attention" if getattr(config, "sliding_window", None) is not None else "full_attention"


def block_layer_types(config: Any) -> list[str]:
    """The attention type of every block, in block order, with :data:`NO_ATTENTION_LAYER_TYPE` for attention-free ones.

    Reads the attention-first layout and the block-order layout of optimum-depth <= 0.2 alike.

    Args:
        config: A (pruned or plain) model config.

    Returns:
        One entry per block.

    Raises:
        ValueError: If ``layer_types`` has the wrong length or its attention-free entries do not match
            ``skipped_attention`` in either layout.
    """
    num_blocks = config.num_hidden_layers
    skipped = sorted({int(i) for i in (getattr(config, "skipped_attention", None) or [])})
    stored = getattr(config, "layer_types", None)
    if stored is None:
        default = default_layer_type(config)
        return [NO_ATTENTION_LAYER_TYPE if i in skipped else default for i in range(num_blocks)]
    stored = [NO_ATTENTION_LAYER_TYPE if kind in LEGACY_NO_ATTENTION_LAYER_TYPES else kind for kind in stored]
    if len(stored) != num_blocks:
        raise ValueError(f"`layer_types` has {len(stored)} entries but the model has {num_blocks} blocks.")
    marked = [i for i, kind in enumerate(stored) if kind == NO_ATTENTION_LAYER_TYPE]
    if marked == skipped:  # block order (or the attention-free blocks are the last ones: both layouts agree)
        return stored
    if marked == list(range(num_blocks - len(skipped), num_blocks)):  # attention-first
        attention_types = iter(stored[: num_blocks - len(skipped)])
        return [NO_ATTENTION_LAYER_TYPE if i in skipped else next(attention_types) for i in range(num_blocks)]
    raise ValueError(
        f"`layer_types` marks entries {marked} as {NO_ATTENTION_LAYER_TYPE!r} but `skipped_attention` is {skipped}: "
        "neither the attention-first layout nor the block order."
    )


def cache_layer_types(block_types: list[str]) -> list[str]:
    """The attention-first ``layer_types`` of blocks whose own types are ``block_types`` (see the module docstring).

    Args:
        block_types: :func:`block_layer_types` of the model.

    Returns:
        The attention types of the blocks with attention, in order, then one :data:`NO_ATTENTION_LAYER_TYPE` per
        attention-free block.
    """
    attention = [kind for kind in block_types if kind != NO_ATTENTION_LAYER_TYPE]
    return attention + [NO_ATTENTION_LAYER_TYPE] * (len(block_types) - len(attention))


def attention_cache_slots(block_types: list[str]) -> list[int | None]:
    """The KV-cache slot of every block: its rank among the blocks with attention, ``None`` without attention.

    Args:
        block_types: :func:`block_layer_types` of the model.

    Returns:
        One entry per block.
    """
    slots: list[int | None] = []
    rank = 0
    for kind in block_types:
        slots.append(None if kind == NO_ATTENTION_LAYER_TYPE else rank)
        rank += kind != NO_ATTENTION_LAYER_TYPE
    return slots
