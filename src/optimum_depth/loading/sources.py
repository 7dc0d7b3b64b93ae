"""What a model name or path points to, checked before anything is loaded, and loading failures told in one line.

``from_pretrained`` reports a missing or broken checkpoint late and obliquely: an empty folder asks to install
sentencepiece, a relative path that does not exist turns into a long offline-Hub traceback, an invalid
``config.json`` into a raw JSON error. :func:`resolve_model_source` tells these apart first: a local folder (which
must hold a readable ``config.json``), a ``config.json`` given instead of its folder, a path that does not exist,
or a Hub id (which, offline, must be in the local Hub cache). :func:`load_failure` turns what ``from_pretrained``
may still raise for a bad checkpoint (an unpicklable ``.bin``, a file it cannot read) into one
:class:`~optimum_depth.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from ..constants import MODEL_CONFIG_NAME
from ..errors import CheckpointError, DataNotFoundError, OptimumDepthError
from ..privacy import is_hub_id

__all__ = ["check_tokenizer_files", "load_failure", "resolve_model_source"]


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _check_local_folder(path: Path) -> None:
    config = path / MODEL_CONFIG_NAME
    if not config.is_file():
        contents = "it is empty" if not any(path.iterdir()) else f"it has no {MODEL_CONFIG_NAME}"
        raise DataNotFoundError(f"{str(path)!r} is not a model checkpoint folder: {contents}.")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{str(config)!r} is not valid JSON: {err}.") from err
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise CheckpointError(f"{str(config)!r} is not a transformers model config (it has no `model_type`).")


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)
"""Any of these beside a checkpoint means it has a tokenizer."""


def check_tokenizer_files(folder: str | os.PathLike) -> None:
    """Refuses a local checkpoint folder with no tokenizer file (transformers would suggest installing packages).

    Raises:
        DataNotFoundError: Naming the folder and the files looked for.
    """
    path = Path(folder)
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise DataNotFoundError(
            f"{str(path)!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save the tokenizer beside the "
            "weights (`tokenizer.save_pretrained(folder)`)."
        )


def resolve_model_source(name_or_path: str | os.PathLike) -> str:
    """The local folder (``~`` expanded) or Hub id to load ``name_or_path`` from, checked before any loading.

    Args:
        name_or_path: A checkpoint folder, or a Hub id. ``.gguf`` files are the caller's business.

    Returns:
        What to pass to ``from_pretrained``.

    Raises:
        DataNotFoundError: If a local path does not exist, is a file (``config.json`` given instead of its folder) or
            a folder without ``config.json``; or a Hub id is wanted offline and is not in the local Hub cache.
        CheckpointError: If the folder's ``config.json`` is not valid JSON or not a model config.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        _check_local_folder(path)
        return str(path)
    if path.is_file():
        if path.name == MODEL_CONFIG_NAME:
            raise DataNotFoundError(
                f"{text!r} is the config file, not the checkpoint: give its folder, {str(path.parent)!r}."
            )
        raise DataNotFoundError(f"{text!r} is a file; give the checkpoint folder (or a .gguf file).")
    if not is_hub_id(text):
        raise DataNotFoundError(f"Model path {text!r} does not exist.")
    if _hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(text, MODEL_CONFIG_NAME), str):
            raise DataNotFoundError(
                f"Model {text!r} is not a local folder (none in {os.getcwd()!r}), and the Hugging Face Hub is offline "
                "(HF_HUB_OFFLINE) with no cached copy of it."
            )
    return text


def load_failure(err: BaseException, name_or_path: str | os.PathLike) -> OptimumDepthError | None:
    """One line for what ``from_pretrained`` raised on a bad checkpoint, or ``None`` for anything else (a bug).

    Args:
        err: The exception.
        name_or_path: What was being loaded.
    """
    name = os.fspath(name_or_path)
    if isinstance(err, pickle.UnpicklingError):
        return CheckpointError(
            f"{name!r} holds a pickled weight file that is not plain tensors; refusing to unpickle it (it could run "
            "code). Convert it to safetensors from a source you trust."
        )
    if isinstance(err, OSError) and not isinstance(err, OptimumDepthError):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return CheckpointError(f"Cannot load the model {name!r}: {first}")
    return None
