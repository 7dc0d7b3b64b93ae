"""Provenance of pruned models: which original blocks survive, where they came from, and how they were chosen.

The values live on the model's config (and so in ``config.json``) under the keys of
:data:`optimum_depth.modeling.pruned_layout.PROVENANCE_KEYS`; this module reads and composes them.
"""

from __future__ import annotations

from typing import Any

from .errors import ProvenanceError
from .modeling.pruned_layout import provenance_problem
from .privacy import public_model_source
from .version import __version__

__all__ = ["original_layer_indices", "record_block_removal", "record_pruning_event", "source_num_layers"]


def _check_source_count_known(config) -> None:
    """Refuses ``surviving_layers`` without ``source_num_hidden_layers``: the original block count is then unknown
    (blocks after the last survivor may have been removed), and guessing it would write a wrong one forward."""
    surviving = getattr(config, "surviving_layers", None)
    if surviving is None or getattr(config, "source_num_hidden_layers", None) is not None:
        return
    recorded = set(surviving if isinstance(surviving, (list, tuple)) else [])
    event = getattr(config, "pruning", None)
    for step in [*(event or {}).get("history", []), event or {}] if isinstance(event, dict) else []:
        recorded |= set(step.get("removed_layers") or [])
    hint = f"; its pruning record suggests {max(recorded) + 1}" if recorded else ""
    raise ProvenanceError(
        f"The model config records surviving_layers={list(surviving)} but not source_num_hidden_layers, so the "
        f'original number of blocks is unknown{hint}. Add "source_num_hidden_layers": <blocks of the original '
        "model> to its config.json."
    )


def source_num_layers(config) -> int:
    """Number of blocks of the original (unpruned) model.

    Raises:
        ProvenanceError: If ``source_num_hidden_layers`` is not a positive integer, or is missing from a pruned
            model's config (it is not guessed).
    """
    problem = provenance_problem(None, config.num_hidden_layers, getattr(config, "source_num_hidden_layers", None))
    if problem is not None:
        raise ProvenanceError(f"Inconsistent pruning provenance in the model config: {problem}.")
    _check_source_count_known(config)
    value = getattr(config, "source_num_hidden_layers", None)
    return int(config.num_hidden_layers) if value is None else int(value)


def original_layer_indices(config) -> list[int]:
    """Original index of each current decoder block, checked for consistency.

    Every reader of the provenance goes through this function, so an inconsistent ``config.json`` is refused
    wherever it is used (pruning, cards, resuming), never carried forward.

    Args:
        config: A model config, pruned or not.

    Returns:
        ``config.surviving_layers`` for a pruned model, else ``range(num_hidden_layers)``.

    Raises:
        ProvenanceError: If ``surviving_layers`` does not have one entry per block, is not strictly increasing, or
            names blocks beyond ``source_num_hidden_layers`` (see
            :func:`~optimum_depth.modeling.pruned_layout.provenance_problem`).
    """
    surviving = getattr(config, "surviving_layers", None)
    problem = provenance_problem(
        surviving, config.num_hidden_layers, getattr(config, "source_num_hidden_layers", None)
    )
    if problem is not None:
        raise ProvenanceError(
            f"Inconsistent pruning provenance in the model config: {problem}. The checkpoint's config.json was "
            "edited or corrupted; refusing to use it."
        )
    _check_source_count_known(config)
    if surviving is None:
        return list(range(config.num_hidden_layers))
    return [int(i) for i in surviving]


def record_block_removal(config, kept_positions: list[int]) -> None:
    """Composes ``surviving_layers`` (and fills ``source_*``) after the blocks at ``kept_positions`` were kept.

    Must be called before ``num_hidden_layers`` is updated. Pruning an already pruned model composes back to the
    original model's numbering.

    Args:
        config: The model config, modified in place.
        kept_positions: Positions (current numbering) of the kept blocks, in order.
    """
    original = original_layer_indices(config)
    config.source_num_hidden_layers = source_num_layers(config)
    if getattr(config, "source_model", None) is None:
        # A Hub id as it is; a local folder by its name and digest (its path stays on this machine, see privacy).
        name, digest = public_model_source(getattr(config, "_name_or_path", None) or None)
        config.source_model = name
        if digest is not None:
            config.source_model_digest = digest
    config.surviving_layers = [original[p] for p in kept_positions]


def record_pruning_event(config, event: dict[str, Any]) -> None:
    """Stores what the last pruning did under ``config.pruning``, keeping earlier events in ``history``.

    Args:
        config: The model config, modified in place.
        event: Criterion, target, calibration spec, seed, removed indices, ...
    """
    previous = getattr(config, "pruning", None)
    history = []
    if isinstance(previous, dict):
        history = list(previous.get("history", []))
        history.append({k: v for k, v in previous.items() if k != "history"})
    record = {**event, "optimum_depth_version": __version__}
    if history:
        record["history"] = history
    config.pruning = record
