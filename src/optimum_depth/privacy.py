"""What saved and published records say about where their data and models came from: names, hashes, sizes, no paths.

A checkpoint, its records and its card are meant to be shared; the folders of the machine that made them are not. So
every record identifies a local file or folder by its name, its SHA-256 and its size (:func:`data_identity`), and a
local source model by its folder name and a digest (:func:`model_digest`); a Hub id is kept as it is.

Where the library needs the local path again later (``optimum-depth recover`` distils from the model a checkpoint
was pruned from), the path is kept on this machine only: :func:`remember_local_model` records ``digest -> folder`` in
a small registry in the user's cache (``$OPTIMUM_DEPTH_CACHE/local_models.json``, or the file named by
``$OPTIMUM_DEPTH_LOCAL_MODELS``), never in the checkpoint, and :func:`find_local_model` looks it up (and checks the
folder still holds that model).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

from .constants import CACHE_DIR_ENV, MODEL_CONFIG_NAME
from .persistence import write_text_atomically

logger = logging.getLogger(__name__)

__all__ = [
    "LOCAL_MODELS_ENV",
    "data_identity",
    "find_local_model",
    "is_hub_id",
    "is_local_path",
    "model_digest",
    "public_model_config",
    "public_model_source",
    "public_name",
    "public_record",
    "remember_local_model",
]

LOCAL_MODELS_ENV = "OPTIMUM_DEPTH_LOCAL_MODELS"
"""Environment variable naming the registry file of local source models (default: ``local_models.json`` in the
optimum_depth cache folder)."""


def is_local_path(value: Any) -> bool:
    """Whether ``value`` is a path of this machine: absolute, ``~``/``./``/``../``-prefixed, or an existing path with
    a separator (``org/name`` that is no local folder is taken for a Hub id)."""
    if isinstance(value, os.PathLike):
        return True
    if not isinstance(value, str) or not value or "\n" in value:
        return False
    if os.path.isabs(value) or value.startswith(("~", "./", "../")) or value in (".", ".."):
        return True
    return os.sep in value and os.path.exists(value)


def is_hub_id(name: Any) -> bool:
    """Whether ``name`` is a Hub repository id: written like one (``org/name`` or ``name``, not like a path) and not
    an existing local path (a local folder ``org/name`` is that folder)."""
    if not isinstance(name, str) or not name or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return False
    if os.sep != "/" and os.sep in name:
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not os.path.exists(name)


def public_name(value: Any) -> Any:
    """``value`` with a local path replaced by its last component (the file or folder name); anything else as is."""
    if not is_local_path(value):
        return value
    path = Path(os.fspath(value)).expanduser().absolute()
    return path.name or str(value)


def public_record(value: Any) -> Any:
    """``value`` (nested dicts, lists, strings) with every local path replaced by its file or folder name."""
    if isinstance(value, dict):
        return {k: public_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_record(v) for v in value]
    return public_name(value)


@functools.lru_cache(maxsize=256)
def _hash_files(files: tuple[tuple[str, str, int, int], ...], with_names: bool) -> str:
    """SHA-256 of the files' contents (each preceded by its name for a folder); size and mtime are in the cache key,
    so a changed file is hashed again."""
    digest = hashlib.sha256()
    for name, path, _, _ in files:
        if with_names:
            digest.update(name.encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def data_identity(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies a local data file or folder in a record: its name, SHA-256 and size, not where it is.

    Args:
        path: A file (its SHA-256 is that of its content), or a folder (its top-level files, in name order, are hashed
            together with their names).

    Returns:
        ``{"name", "sha256", "bytes"}`` (and ``"files"`` for a folder); only ``{"name"}`` when nothing can be read.
    """
    resolved = Path(os.fspath(path)).expanduser()
    if resolved.is_file():
        entries = [resolved]
    elif resolved.is_dir():
        entries = sorted(p for p in resolved.iterdir() if p.is_file())
    else:
        return {"name": public_name(os.fspath(path))}
    files = tuple((p.name, str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in entries)
    identity: dict[str, Any] = {"name": resolved.absolute().name}
    try:
        identity["sha256"] = _hash_files(files, with_names=resolved.is_dir())  # a file: what `sha256sum` prints
    except OSError as err:
        logger.warning("Could not hash %s (%s); the record names it only.", identity["name"], err)
        return identity
    identity["bytes"] = sum(size for _, _, size, _ in files)
    if resolved.is_dir():
        identity["files"] = len(files)
    return identity


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        return handle.read(min(size, 100_000_000))


def model_digest(folder: str | os.PathLike) -> str:
    """A digest of a local model folder: ``config.json`` and the names, sizes and safetensors headers of its weights.

    It tells two checkpoints apart without reading every weight (the headers hold each tensor's name, dtype, shape
    and offsets), so a 70B model is identified as fast as a small one.

    Args:
        folder: A checkpoint folder.

    Returns:
        ``"sha256:<hex>"``.
    """
    folder = Path(folder)
    digest = hashlib.sha256((folder / MODEL_CONFIG_NAME).read_bytes())
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf"):
            digest.update(f"\0{path.name}\0{path.stat().st_size}\0".encode())
            if path.suffix == ".safetensors":
                digest.update(_safetensors_header(path))
    return f"sha256:{digest.hexdigest()}"


def _registry_path() -> Path:
    explicit = os.environ.get(LOCAL_MODELS_ENV)
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "optimum_depth"))
    return cache / "local_models.json"


def _read_registry(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def remember_local_model(folder: str | os.PathLike, digest: str) -> None:
    """Records, on this machine only, that the model ``digest`` lives in ``folder`` (for :func:`find_local_model`).

    A registry that cannot be written is only warned about: the record is a convenience, never needed to prune.
    """
    path = _registry_path()
    registry = _read_registry(path)
    location = str(Path(folder).expanduser().absolute())
    if registry.get(digest) == location:
        return
    registry[digest] = location
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(registry, indent=2) + "\n")
    except OSError as err:
        logger.warning("Could not record where the source model is (%s): %s", path, err)


def find_local_model(digest: str | None) -> Path | None:
    """The folder of this machine that holds the model ``digest`` (from :func:`remember_local_model`), if it still does.

    Args:
        digest: A checkpoint's ``source_model_digest``.

    Returns:
        The folder, or ``None`` when it is unknown here, gone, or now holds another model.
    """
    if not digest:
        return None
    location = _read_registry(_registry_path()).get(digest)
    if location is None or not (Path(location) / MODEL_CONFIG_NAME).is_file():
        return None
    try:
        return Path(location) if model_digest(location) == digest else None
    except OSError:
        return None


def public_model_source(name_or_path: Any) -> tuple[str | None, str | None]:
    """How a record names the model it came from: ``(name, digest)``.

    Args:
        name_or_path: The model's ``_name_or_path`` (a Hub id or a local folder).

    Returns:
        ``(hub_id, None)`` for a Hub id; ``(folder name, digest)`` for a local checkpoint folder, whose location is
        remembered on this machine (:func:`remember_local_model`); ``(name, None)`` for any other local path.
    """
    if not name_or_path:
        return None, None
    text = os.fspath(name_or_path)
    folder = Path(text).expanduser()
    if not (folder / MODEL_CONFIG_NAME).is_file():
        return public_name(text), None
    try:
        digest = model_digest(folder)
    except OSError as err:
        logger.warning("Could not fingerprint the source model folder %s: %s", folder.name, err)
        return public_name(text), None
    remember_local_model(folder, digest)
    return folder.absolute().name, digest


def public_model_config(data: dict[str, Any]) -> dict[str, Any]:
    """A model's ``config.json`` content as it may be shared: the source model by name (and digest), no local path.

    Args:
        data: The parsed ``config.json``.

    Returns:
        The same content with ``source_model`` given as :func:`public_model_source` names it and every other local path
        (calibration or recovery data in the provenance) reduced to its file or folder name.
    """
    data = dict(data)
    source = data.get("source_model")
    if is_local_path(source):
        name, digest = public_model_source(source)
        data["source_model"] = name
        if digest is not None and not data.get("source_model_digest"):
            data["source_model_digest"] = digest
    return public_record(data)
