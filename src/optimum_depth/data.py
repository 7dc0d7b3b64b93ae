"""Locating local evaluation/calibration data and reading text documents from files.

Data is never bundled: it is read by path, from ``$OPTIMUM_DEPTH_DATA_DIR`` or a ``shared/data`` folder beside the
checkout (``../shared/data``) when present.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA_DIR_ENV = "OPTIMUM_DEPTH_DATA_DIR"


def default_data_dir() -> Path | None:
    """Returns the local data directory, if one is available.

    Looks at ``$OPTIMUM_DEPTH_DATA_DIR``, then ``../shared/data`` from the working directory, then ``shared/data``
    beside the source checkout.

    Returns:
        The directory, or ``None`` when none exists.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise FileNotFoundError(f"${DATA_DIR_ENV} points to {env!r}, which is not a directory.")
        return path
    candidates = [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Parses a JSON-lines file: ``(line number, value)`` for every non-empty line.

    Args:
        path: The ``.jsonl`` file.

    Yields:
        The 1-based line number and the parsed value of each non-empty line.

    Raises:
        ValueError: On a line that is not valid JSON, naming the file and the line.
    """
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{str(path)!r} line {number} is not valid JSON: {err}") from err


def _documents_from_record(record) -> str | None:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        if "text" in record:
            return str(record["text"])
        if "instruction" in record:  # Alpaca-style
            parts = [record.get("instruction", ""), record.get("input", ""), record.get("output", "")]
            return "\n".join(p for p in parts if p)
    return None


def read_documents(path: str | os.PathLike) -> list[str]:
    """Reads text documents from a file or a directory of files.

    ``.txt``/``.raw`` files give one document per non-empty line; ``.jsonl`` one per line (its ``text`` field, or
    Alpaca's instruction/input/output); ``.json`` a list of strings or records. A directory gives the documents of
    all such files in it, in name order.

    Args:
        path: A file or directory.

    Returns:
        The documents.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If the file type is unknown, a record is malformed, or no document was found.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Calibration/evaluation data {str(path)!r} does not exist.")
    if path.is_dir():
        docs: list[str] = []
        for child in sorted(path.iterdir()):
            if child.suffix in (".txt", ".raw", ".jsonl", ".json"):
                docs.extend(read_documents(child))
        if not docs:
            raise ValueError(f"No .txt/.jsonl/.json documents found in directory {str(path)!r}.")
        return docs
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        docs = []
        for number, record in iter_jsonl(path):
            doc = _documents_from_record(record)
            if doc is None:
                raise ValueError(f"{str(path)!r} line {number} has no `text` field.")
            docs.append(doc)
        if not docs:
            raise ValueError(f"No documents found in {str(path)!r}.")
        return docs
    with open(path, encoding="utf-8") as handle:
        if suffix in (".txt", ".raw", ".tokens"):
            docs = [line.rstrip("\n") for line in handle if line.strip()]
        elif suffix == ".json":
            try:
                records = json.load(handle)
            except json.JSONDecodeError as err:
                raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from err
            if not isinstance(records, list):
                raise ValueError(f"{str(path)!r} must hold a JSON list of strings or records.")
            docs = [d for d in (_documents_from_record(r) for r in records) if d is not None]
        else:
            raise ValueError(f"Unsupported data file type {suffix!r} for {str(path)!r}; use .txt, .jsonl or .json.")
    if not docs:
        raise ValueError(f"No documents found in {str(path)!r}.")
    return docs
