"""Writing pruned checkpoints and their records: safetensors only, staged, and never touching the user's other files.

Every save of the library goes through :func:`write_into_directory`. The files are first written into a hidden
staging folder beside the target (same filesystem), checked, and only then moved into the target one by one with
``os.replace`` (atomic per file). So:

* files in the target that the save does not own are left alone (a save into a folder holding ``notes.txt`` keeps
  it), and the target folder keeps its permissions (it is created with the default mode when missing);
* weight shards or library records of an earlier checkpoint in the same folder that the new save does not rewrite
  are removed after the new files are in place, so a folder never mixes two checkpoints;
* a failure or an interruption while writing leaves the target exactly as it was and removes the staging folder;
* a staging folder left by a killed process (``kill -9``) is removed by the next save into the same parent folder.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..constants import (
    CARD_NAME,
    CONFIG_NAME,
    PICKLE_SUFFIXES,
    PLAN_NAME,
    PLOT_NAME,
    RECORD_FILES,
    REMOTE_CODE_FILES,
    RESULTS_NAME,
    SCORES_NAME,
    STAGING_MARKER,
    WEIGHT_INDEX_NAMES,
    WEIGHT_SUFFIXES,
)
from ..errors import ConfigError
from .legacy_format import add_legacy_keys

logger = logging.getLogger(__name__)

__all__ = ["save_pruned_model", "save_pruning_records", "write_into_directory"]


def _check_target(target: Path) -> None:
    """Refuses a target that is a file, or whose parent path runs through a file."""
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{str(target)!r} exists and is not a directory.")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"Cannot create {str(target)!r}: {str(parent)!r} is a file, not a directory.")
            break


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_staging_folders(parent: Path) -> list[Path]:
    """Removes the staging folders of saves into ``parent`` whose process no longer runs (killed mid-save).

    Args:
        parent: The folder a save writes into (its target's parent).

    Returns:
        The folders removed.
    """
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        if not (path.is_dir() and path.name.startswith(".") and STAGING_MARKER in path.name):
            continue
        pid_text = path.name.rsplit(STAGING_MARKER, 1)[1].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            logger.warning("Removed %s, left behind by an interrupted save.", path)
            removed.append(path)
    return removed


def _staged_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def _is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or name in WEIGHT_INDEX_NAMES


def _stale_owned_files(target: Path, written: set[str], replaces_checkpoint: bool) -> list[Path]:
    """Top-level files of ``target`` from an earlier save that this save supersedes but does not rewrite."""
    owned = set(RECORD_FILES)
    if not replaces_checkpoint:
        return [target / name for name in owned - written if (target / name).is_file()]
    owned |= set(REMOTE_CODE_FILES)
    stale = []
    for path in target.iterdir():
        if path.is_file() and path.name not in written and (path.name in owned or _is_weight_file(path.name)):
            stale.append(path)
    return stale


def write_into_directory(
    save_directory: str | os.PathLike, write: Callable[[Path], None], replaces_checkpoint: bool = False
) -> Path:
    """Calls ``write(staging_folder)`` and moves what it wrote into ``save_directory``, file by file.

    Args:
        save_directory: The target folder (created if missing; other files in it are left alone).
        write: Fills the staging folder it is given. Raising leaves the target unchanged.
        replaces_checkpoint: Whether the staged files are a whole checkpoint: weight files and library records of an
            earlier checkpoint in the target that were not rewritten are then removed. Otherwise only the library
            records this save supersedes are.

    Returns:
        The target folder.

    Raises:
        ConfigError: If the target (or a folder on its path) is a file; nothing is written then.
    """
    target = Path(save_directory).absolute()
    _check_target(target)
    # Stage on the same filesystem: beside the target, or in its nearest existing ancestor when that is missing.
    staging_parent = next(p for p in target.parents if p.exists())
    remove_stale_staging_folders(staging_parent)
    staging = staging_parent / f".{target.name}{STAGING_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        write(staging)
        files = _staged_files(staging)
        pickles = [str(f) for f in files if f.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise RuntimeError(f"Refusing to write pickled weights {pickles}; only safetensors are written.")
        target.mkdir(parents=True, exist_ok=True)
        for relative in files:
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, destination)
        written = {f.name for f in files if len(f.parts) == 1}
        for stale in _stale_owned_files(target, written, replaces_checkpoint):
            stale.unlink()
            logger.info("Removed %s from an earlier save (not part of this one).", stale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
        plan.save_pretrained(folder)
        written.append(PLAN_NAME)
    if scores is not None:
        scores.save_pretrained(folder)
        written.append(SCORES_NAME)
        if plot:
            selected = scores.positions_removed_by(plan) if plan is not None else None
            scores.plot(folder / PLOT_NAME, selected=selected)
            written.append(PLOT_NAME)
    if config is not None:
        config.save_pretrained(folder)
        written.append(CONFIG_NAME)
    if results is not None:
        results.save_pretrained(folder)
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

    Like ``save_pretrained``, only the checkpoint's own files are written: other files in the folder are kept.
    Weight files and records of an earlier checkpoint in the folder that this one does not rewrite are removed once
    the new files are in place. A failure or interruption leaves the folder as it was (see the module docstring).

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
    """

    make_card = _card_maker(card)

    def write(staging: Path) -> None:
        offloaded = offloaded_state_dict(model)
        if offloaded is not None and "state_dict" not in save_kwargs:
            save_kwargs["state_dict"] = offloaded
        model.save_pretrained(staging, **save_kwargs)
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
