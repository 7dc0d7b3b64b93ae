"""Locating evaluation/calibration data (local folder, or the Hub when it is reachable) and reading documents.

Data is never bundled: it is read by path, from ``$OPTIMUM_DEPTH_DATA_DIR`` or a ``shared/data`` folder beside the
checkout (``../shared/data``) when present. :func:`hub_reachable` asks the Hub once per process, so an offline
machine falls back to local or self-generated data at once instead of retrying every resource.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .constants import DATA_DIR_ENV
from .errors import DataError, DataNotFoundError

logger = logging.getLogger(__name__)

__all__ = ["DATA_DIR_ENV", "default_data_dir", "hub_reachable", "iter_jsonl", "read_documents", "read_text"]


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers (``False`` at once when ``HF_HUB_OFFLINE`` is set); asked once per process.

    Args:
        timeout: Seconds to wait for the Hub's answer.

    Returns:
        ``True`` when the Hub's API answered.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session  # the Hub's own HTTP client (httpx or httpx2)

        get_session().head(f"{constants.ENDPOINT}/api/models", timeout=timeout)
    except Exception as err:  # noqa: BLE001 - any failure means the Hub is not usable from here
        logger.warning(
            "The Hugging Face Hub is not reachable (%s); using local or generated data.", type(err).__name__
        )
        return False
    return True


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
            raise DataNotFoundError(f"${DATA_DIR_ENV} points to {env!r}, which is not a directory.")
        return path
    candidates = [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def read_text(path: str | os.PathLike) -> str:
    """Reads a UTF-8 text file, with errors that name the file.

    Args:
        path: The file.

    Returns:
        Its text.

    Raises:
        DataNotFoundError: If the file does not exist.
        DataError: If it is not UTF-8 text (e.g. binary bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Data file {str(path)!r} does not exist.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{str(path)!r} is not UTF-8 text (invalid byte {err.object[err.start : err.start + 1]!r} at offset "
            f"{err.start}); is it a binary file?"
        ) from err


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Parses a JSON-lines file: ``(line number, value)`` for every non-empty line.

    Args:
        path: The ``.jsonl`` file.

    Yields:
        The 1-based line number and the parsed value of each non-empty line.

    Raises:
        DataError: On a line that is not valid JSON, naming the file and the line, or a file that is not UTF-8.
    """
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{str(path)!r} line {number} is not valid JSON: {err}") from err


def _document(record: Any, where: str) -> str:
    """The text of one record: a string, a ``{"text": ...}`` object, or an Alpaca instruction record.

    Raises:
        DataError: Naming ``where`` (file and line or record) when the record holds no text field, or a ``text``
            that is not a string (``null`` is not the text "None").
    """
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        if "text" in record:
            if not isinstance(record["text"], str):
                raise DataError(f"{where}: `text` is {json.dumps(record['text'])[:40]}, not a string.")
            return record["text"]
        if "instruction" in record:  # Alpaca-style
            parts = [record.get("instruction"), record.get("input"), record.get("output")]
            if not all(p is None or isinstance(p, str) for p in parts):
                raise DataError(f"{where}: instruction/input/output must be strings.")
            return "\n".join(p for p in parts if p)
    raise DataError(f"{where} has no `text` field (nor an Alpaca `instruction`).")


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
        DataNotFoundError: If the path does not exist.
        DataError: If the file type is unknown, the file is not UTF-8, a record is malformed, or no document was
            found.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"Calibration/evaluation data {str(path)!r} does not exist.")
    if path.is_dir():
        docs: list[str] = []
        for child in sorted(path.iterdir()):
            if child.suffix in (".txt", ".raw", ".jsonl", ".json"):
                docs.extend(read_documents(child))
        if not docs:
            raise DataError(f"No .txt/.jsonl/.json documents found in directory {str(path)!r}.")
        return docs
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        docs = [_document(record, f"{str(path)!r} line {number}") for number, record in iter_jsonl(path)]
        if not docs:
            raise DataError(f"No documents found in {str(path)!r}.")
        return docs
    if suffix in (".txt", ".raw", ".tokens"):
        docs = [line for line in read_text(path).split("\n") if line.strip()]
    elif suffix == ".json":
        try:
            records = json.loads(read_text(path))
        except json.JSONDecodeError as err:
            raise DataError(f"{str(path)!r} is not valid JSON: {err}") from err
        if not isinstance(records, list):
            raise DataError(f"{str(path)!r} must hold a JSON list of strings or records.")
        docs = [_document(r, f"{str(path)!r} record {number}") for number, r in enumerate(records, 1)]
    else:
        raise DataError(f"Unsupported data file type {suffix!r} for {str(path)!r}; use .txt, .jsonl or .json.")
    if not docs:
        raise DataError(f"No documents found in {str(path)!r}.")
    return docs
