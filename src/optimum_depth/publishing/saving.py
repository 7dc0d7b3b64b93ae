"""Writing pruned checkpoints and their records: safetensors only, staged, all-or-nothing, never touching other files.

Every save of the library goes through :func:`write_into_directory`. The files are first written into a hidden
staging folder on the target's filesystem (beside the target, or inside it when its parent cannot be written),
checked, and then moved into the target with a journal (:mod:`.replacement`). So:

* only the files the save writes are added or replaced; a file is removed only when an earlier save of this library
  provably wrote it (its manifest lists it, unchanged, see :mod:`.ownership`) and the new checkpoint no longer has it.
  A user's ``notes.txt``, ``optimizer.pt`` or ``backup.ckpt`` is never touched, whatever its extension;
* the target is, at every moment, the old checkpoint, the new one, or (during the moves) no checkpoint at all: a
  failure while moving puts the old files back at once, and a save killed half-way is undone by the next save or
  load of the folder;
* a failure or an interruption while writing leaves the target exactly as it was and removes the staging folder;
  a target that cannot be written (permissions, read-only filesystem, disk full) is one :class:`OutputError`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..constants import (
    CARD_NAME,
    CONFIG_NAME,
    MANIFEST_NAME,
    MODEL_CONFIG_NAME,
    PICKLE_SUFFIXES,
    PLAN_NAME,
    PLOT_NAME,
    RESULTS_NAME,
    SCORES_NAME,
)
from ..errors import ConfigError, OutputError
from ..persistence import write_text_atomically
from ..privacy import public_model_config, public_record
from .legacy_format import add_legacy_keys
from .ownership import file_entry, manifest_text, owned_files
from .plotting import plot_layer_scores
from .replacement import create_staging, recover_interrupted_saves, replace_files

logger = logging.getLogger(__name__)

__all__ = ["check_writable", "resolve_target", "save_pruned_model", "save_pruning_records", "write_into_directory"]

OUTPUT_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
}
"""Failures of a write that are the output location's, not a bug: reported as one :class:`OutputError` line."""


def resolve_target(save_directory: str | os.PathLike) -> Path:
    """The absolute target folder of ``save_directory`` (``~`` expanded)."""
    return Path(os.fspath(save_directory)).expanduser().absolute()


def _check_target(target: Path) -> None:
    """Refuses a target that is a file, or whose parent path runs through a file."""
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{str(target)!r} exists and is not a directory.")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"Cannot create {str(target)!r}: {str(parent)!r} is a file, not a directory.")
            break


def check_writable(save_directory: str | os.PathLike) -> Path:
    """Checks, before any work, that a save into ``save_directory`` can write there.

    Args:
        save_directory: The target folder (it may not exist yet).

    Returns:
        The absolute target folder.

    Raises:
        ConfigError: If the target, or a folder on its path, is a file.
        OutputError: If the target (or, when it is missing, the folder it would be created in) cannot be written.
    """
    target = resolve_target(save_directory)
    _check_target(target)
    if target.exists():
        if not os.access(target, os.W_OK | os.X_OK):
            raise OutputError(f"Cannot write into {str(target)!r}: permission denied (or a read-only file system).")
        return target
    ancestor = next(p for p in target.parents if p.exists())
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(
            f"Cannot create {str(target)!r}: {str(ancestor)!r} is not writable (permission denied or read-only)."
        )
    return target


def _raise_output_error(target: Path, err: OSError) -> None:
    """Raises one :class:`OutputError` line for a write that failed because of the output location (else returns)."""
    if isinstance(err, OutputError):
        return
    reason = OUTPUT_ERRNOS.get(err.errno or 0)
    if reason is None:
        return
    where = f" ({err.filename})" if err.filename else ""
    raise OutputError(f"Cannot write into {str(target)!r}: {reason}{where}. Nothing was changed.") from err


def _staged_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _manifest(target: Path, staged: Path, files: list[str], owned: list[str], replaces_checkpoint: bool) -> str:
    """The manifest after the save: the files it writes, plus (for a partial save) the earlier ones it keeps."""
    entries = {name: file_entry(staged / name) for name in files}
    if not replaces_checkpoint:
        entries.update({name: file_entry(target / name) for name in owned if name not in entries})
    return manifest_text(entries)


def _stage_and_replace(target: Path, staging, write: Callable[[Path], None], replaces_checkpoint: bool) -> None:
    write(staging.new)
    files = [name for name in _staged_files(staging.new) if name != MANIFEST_NAME]
    pickles = [name for name in files if Path(name).suffix in PICKLE_SUFFIXES]
    if pickles:
        raise RuntimeError(f"Refusing to write pickled weights {pickles}; only safetensors are written.")
    owned = owned_files(target)
    stale = [name for name in owned if name not in files] if replaces_checkpoint else []
    manifest = _manifest(target, staging.new, files, owned, replaces_checkpoint)
    (staging.new / MANIFEST_NAME).write_text(manifest, encoding="utf-8")
    replace_files(staging, [*files, MANIFEST_NAME], stale)
    for name in stale:
        logger.info("Removed %s from an earlier save (not part of this one).", target / name)


def write_into_directory(
    save_directory: str | os.PathLike, write: Callable[[Path], None], replaces_checkpoint: bool = False
) -> Path:
    """Calls ``write(staging_folder)`` and moves what it wrote into ``save_directory``, all-or-nothing.

    Args:
        save_directory: The target folder (created if missing, ``~`` expanded; other files in it are left alone).
        write: Fills the staging folder it is given. Raising leaves the target unchanged.
        replaces_checkpoint: Whether the staged files are a whole checkpoint: files an earlier save of this library
            wrote into the target (and nobody changed since) that this one does not rewrite are then removed, so the
            folder never describes two checkpoints. Otherwise nothing is removed.

    Returns:
        The target folder.

    Raises:
        ConfigError: If the target (or a folder on its path) is a file; nothing is written then.
        OutputError: If the target cannot be written (permission, read-only file system, disk full); nothing changed.
    """
    target = check_writable(save_directory)
    recover_interrupted_saves(target)
    try:
        staging = create_staging(target)
    except OSError as err:
        _raise_output_error(target, err)
        raise
    completed = False
    try:
        _stage_and_replace(target, staging, write, replaces_checkpoint)
        completed = True
    except OSError as err:
        _raise_output_error(target, err)
        raise
    finally:
        if completed or not staging.holds_old_files():
            shutil.rmtree(staging.root, ignore_errors=True)
        else:  # the old files could not all be put back: they stay there, never deleted
            logger.error(
                "The original files of %s could not all be restored; they are kept in %s.", target, staging.root
            )
    return target


def _card_maker(card: Any) -> Callable[..., Any] | None:
    """How :func:`save_pruned_model` gets its card: ``None`` for no card; checked before anything is written."""
    if card is None or card is False:
        return None
    from .cards import CardOptions, build_model_card

    if card is True or isinstance(card, CardOptions):
        options = card if isinstance(card, CardOptions) else None
        return lambda model, results, plan, scores, files: build_model_card(
            model, results, plan, scores, options=options, files=files
        )
    if hasattr(card, "save"):
        return lambda *args: card
    raise ConfigError(f"`card` must be True/False, CardOptions or a ModelCard, got {type(card).__name__}.")


def _write_public(record: Any, folder: Path) -> None:
    """Writes ``record`` as its ``save_pretrained`` would, every local path in it reduced to its name."""
    text = json.dumps(public_record(record.to_dict()), indent=2) + "\n"
    write_text_atomically(folder / record.file_name, text)


def publish_model_config(folder: Path) -> None:
    """Rewrites the ``config.json`` ``save_pretrained`` wrote with no local path (see :mod:`optimum_depth.privacy`)."""
    path = folder / MODEL_CONFIG_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    public = public_model_config(data)
    if public != data:
        path.write_text(json.dumps(public, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_pruning_records(
    folder: str | os.PathLike,
    *,
    plan=None,
    scores=None,
    config=None,
    results=None,
    plot: bool = False,
) -> list[str]:
    """Writes the records of a pruning run into ``folder`` (no staging: use inside :func:`write_into_directory`).

    The records are written as they may be shared: a local path in them (a calibration folder, a data file, a model
    folder) is reduced to its name (see :mod:`optimum_depth.privacy`).

    Args:
        folder: An existing folder.
        plan: A :class:`~optimum_depth.PruningPlan` (``pruning_plan.json``).
        scores: :class:`~optimum_depth.LayerScores` (``layer_scores.json``).
        config: The :class:`~optimum_depth.DepthPruningConfig` used (``depth_pruning_config.json``).
        results: Evaluation results (``evaluation_results.json``).
        plot: Also draw the scores, marking the candidates the plan removes (``layer_scores.png``; needs
            matplotlib).

    Returns:
        The names of the files written.
    """
    folder = Path(folder)
    written = []
    if plan is not None:
        _write_public(plan, folder)
        written.append(PLAN_NAME)
    if scores is not None:
        _write_public(scores, folder)
        written.append(SCORES_NAME)
        if plot:
            selected = scores.positions_removed_by(plan) if plan is not None else None
            plot_layer_scores(scores, folder / PLOT_NAME, selected=selected)
            written.append(PLOT_NAME)
    if config is not None:
        _write_public(config, folder)
        written.append(CONFIG_NAME)
    if results is not None:
        _write_public(results, folder)
        written.append(RESULTS_NAME)
    return written


def offloaded_state_dict(model: Any) -> dict[str, Any] | None:
    """The full state dict of a model whose weights accelerate offloads (CPU or disk), else ``None``.

    ``save_pretrained`` cannot read the ``meta`` tensors an offloaded module holds; accelerate's
    ``get_state_dict_offloaded_model`` brings each module's weights in from its hook, one module at a time (the whole
    state dict then sits in CPU RAM, as with ``Accelerator.save_model``).
    """
    if not any(p.device.type == "meta" for p in model.parameters()):
        return None
    if not any(getattr(m, "_hf_hook", None) is not None for m in model.modules()):
        return None  # an empty model: save_pretrained reports it
    from accelerate.utils.modeling import get_state_dict_offloaded_model

    return get_state_dict_offloaded_model(model)


def save_pruned_model(
    model,
    save_directory: str | os.PathLike,
    tokenizer=None,
    *,
    plan=None,
    scores=None,
    config=None,
    results=None,
    plot: bool = False,
    card: Any = None,
    **save_kwargs,
) -> Path:
    """Saves a pruned model (safetensors), its tokenizer and its records into ``save_directory``.

    Like ``save_pretrained``, only the checkpoint's own files are written: other files in the folder are kept. Files
    an earlier save of this library wrote there (its manifest lists them, unchanged) that this one does not rewrite
    are removed, so the folder never mixes two checkpoints; nothing else is ever deleted. A failure or interruption
    leaves the folder as it was (see the module docstring).

    Args:
        model: The pruned model (a plain transformers model; merge peft adapters first to get a native checkpoint).
        save_directory: Output folder.
        tokenizer: Tokenizer saved beside the weights.
        plan: The applied :class:`~optimum_depth.PruningPlan`.
        scores: The :class:`~optimum_depth.LayerScores` the plan came from.
        config: The :class:`~optimum_depth.DepthPruningConfig` used.
        results: Evaluation results.
        plot: Draw the scores (``layer_scores.png``).
        card: Write a model card as ``README.md``: ``True`` or :class:`~optimum_depth.publishing.cards.CardOptions`
            to generate it from the model and records (its file list is the folder's actual content), or a ready
            :class:`~huggingface_hub.ModelCard`.
        **save_kwargs: Passed to ``model.save_pretrained`` (e.g. ``max_shard_size``).

    Returns:
        The output folder.

    Raises:
        ConfigError: If ``save_directory`` (or a folder on its path) is a file.
        OutputError: If ``save_directory`` cannot be written (permission, read-only file system, disk full).
    """

    make_card = _card_maker(card)

    def write(staging: Path) -> None:
        offloaded = offloaded_state_dict(model)
        if offloaded is not None and "state_dict" not in save_kwargs:
            save_kwargs["state_dict"] = offloaded
        model.save_pretrained(staging, **save_kwargs)
        publish_model_config(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        add_legacy_keys(staging)  # readable by transformers 4.x tools (exporters) too
        save_pruning_records(staging, plan=plan, scores=scores, config=config, results=results, plot=plot)
        if make_card is not None:
            files = [p.name for p in staging.iterdir() if p.is_file()]
            make_card(model, results, plan, scores, files).save(staging / CARD_NAME)

    path = write_into_directory(save_directory, write, replaces_checkpoint=True)
    logger.info("Saved pruned model to %s", path)
    return path
