"""Which files of a folder an earlier save of this library provably wrote: the only ones a later save may remove.

Every save writes a hidden manifest (:data:`~optimum_depth.constants.MANIFEST_NAME`) listing the files it wrote, each
with its size and content hash (files over :data:`HASH_LIMIT` bytes: size and modification time, which ``os.replace``
keeps). A file is *owned* when the manifest lists it and it is unchanged since: a file the user replaced or edited
afterwards is theirs again. A folder written before manifests existed owns only what its names prove: the weight
files ``save_pretrained`` writes (``model.safetensors``, ``model-00001-of-00003.safetensors``, ... and their index)
and the library's JSON records (their ``record_type`` says so). Nothing is ever taken for ours by its extension:
``optimizer.pt``, ``backup.ckpt`` or ``sd_vae.safetensors`` are left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from ..constants import (
    CONFIG_NAME,
    MANIFEST_NAME,
    OWN_WEIGHT_PATTERN,
    PLAN_NAME,
    RESULTS_NAME,
    SAFETENSORS_INDEX_NAME,
    SCORES_NAME,
)
from ..version import __version__

logger = logging.getLogger(__name__)

__all__ = ["HASH_LIMIT", "file_entry", "manifest_text", "owned_files", "read_manifest"]

HASH_LIMIT = 64 * 1024 * 1024
"""Files up to this size are identified by their SHA-256; larger ones (weights) by size and modification time."""

RECORD_TYPES = {
    PLAN_NAME: ("PruningPlan",),
    SCORES_NAME: ("LayerScores",),
    CONFIG_NAME: ("DepthPruningConfig",),
    RESULTS_NAME: ("EvaluationResults", "ComparisonResults"),
}
"""The library's JSON records, by file name, and the record types that prove a file of that name is one."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """What identifies a file the save wrote: ``{"bytes", "sha256"}``, or ``{"bytes", "mtime_ns"}`` for big ones."""
    stat = path.stat()
    if stat.st_size <= HASH_LIMIT:
        return {"bytes": stat.st_size, "sha256": _sha256(path)}
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _unchanged(path: Path, entry: dict[str, Any]) -> bool:
    if not path.is_file() or path.is_symlink():
        return False
    stat = path.stat()
    if stat.st_size != entry.get("bytes"):
        return False
    if "sha256" in entry:
        return _sha256(path) == entry["sha256"]
    return stat.st_mtime_ns == entry.get("mtime_ns")


def manifest_text(entries: dict[str, dict[str, Any]]) -> str:
    """The manifest of the files ``entries`` describes (relative POSIX names -> :func:`file_entry`)."""
    data = {
        "record_type": "SaveManifest",
        "format_version": 1,
        "optimum_depth_version": __version__,
        "files": dict(sorted(entries.items())),
    }
    return json.dumps(data, indent=2) + "\n"


def read_manifest(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The entries of ``folder``'s manifest, or ``None`` when it has none (or an unreadable one, with a warning)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise ValueError("`files` is not a mapping of file entries")
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning(
            "Ignoring the unreadable save manifest %s (%s); no file of the folder is taken for ours.", path, err
        )
        return {}
    return {str(name): entry for name, entry in files.items() if _is_safe_relative(str(name))}


def _is_safe_relative(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _is_own_record(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("record_type") in RECORD_TYPES[path.name]


def _legacy_owned(folder: Path) -> list[str]:
    """Files a save without manifest provably wrote: ``save_pretrained``'s weight names and our typed records."""
    owned = []
    for path in folder.iterdir():
        if not path.is_file() or path.is_symlink():
            continue
        name = path.name
        weights = re.fullmatch(OWN_WEIGHT_PATTERN, name) or name == SAFETENSORS_INDEX_NAME
        if weights or (name in RECORD_TYPES and _is_own_record(path)):
            owned.append(name)
    return sorted(owned)


def owned_files(folder: Path) -> list[str]:
    """Relative names of the files of ``folder`` that an earlier save of this library wrote and nobody changed since.

    Args:
        folder: A folder a save may write into.

    Returns:
        The files listed in its manifest that are unchanged (or, without a manifest, the files their names and record
        types prove to be ours), sorted.
    """
    if not folder.is_dir():
        return []
    entries = read_manifest(folder)
    if entries is None:
        return _legacy_owned(folder)
    return sorted(name for name, entry in entries.items() if _unchanged(folder / name, entry))
