"""One persistence convention for every record of the library: configs, plans, scores and results.

:class:`JsonRecord` gives a dataclass peft's familiar methods: ``to_dict`` / ``from_dict``, ``to_json_string``,
``save_pretrained(directory)`` and ``from_pretrained(directory_or_file)``. Saved files carry the record type, a format
version and the library version. Loading is tolerant of unknown keys (dropped with a warning, as peft does), refuses a
file of another record type or of a newer format, and refuses to guess a required field that is missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .errors import DataError, DataNotFoundError
from .version import __version__

logger = logging.getLogger(__name__)

__all__ = ["JsonRecord", "read_json_object", "write_text_atomically"]

R = TypeVar("R", bound="JsonRecord")

METADATA_KEYS = ("record_type", "format_version", "optimum_depth_version")


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Args:
        path: The file to write (its folder must exist).
        text: The content.

    Returns:
        The path written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Reads a JSON file that must hold an object, with errors that name the file.

    Args:
        path: The JSON file.
        what: What the file should hold, for error messages (e.g. ``"a pruning plan"``).

    Returns:
        The parsed object.

    Raises:
        DataNotFoundError: If the file does not exist.
        DataError: If it is not UTF-8 JSON holding an object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"No {what} at {str(path)!r}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{str(path)!r} is not valid JSON ({what}): {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r} does not hold a JSON object ({what}).")
    return data


class JsonRecord:
    """Mixin for dataclass records saved as one JSON file.

    Subclasses set ``file_name`` (the name used inside a directory) and may set ``required_keys`` (fields a saved
    record must have: loading refuses to fill them with defaults) and ``format_version``. They override
    :meth:`_fields_to_dict` / :meth:`_fields_from_dict` when a field needs conversion (tuples, nested records).
    """

    file_name: ClassVar[str]
    format_version: ClassVar[int] = 1
    required_keys: ClassVar[tuple[str, ...]] = ()
    derived_keys: ClassVar[tuple[str, ...]] = ()
    """Keys :meth:`to_dict` writes for readers but :meth:`from_dict` recomputes (ignored silently on load)."""

    # ---------------------------------------------------------------------------------------------- hooks
    def _fields_to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def _fields_from_dict(cls: type[R], data: dict[str, Any]) -> R:
        return cls(**data)

    # --------------------------------------------------------------------------------------------- public
    @classmethod
    def record_type(cls) -> str:
        """The record's type name stored in its files (the class name)."""
        return cls.__name__

    def to_dict(self) -> dict[str, Any]:
        """Returns the record as a JSON-serialisable dict, with its type and the library version."""
        return {
            **self._fields_to_dict(),
            "record_type": self.record_type(),
            "format_version": self.format_version,
            "optimum_depth_version": __version__,
        }

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Builds the record from :meth:`to_dict` output.

        Unknown keys are dropped with a warning; a missing required field, another record type or a newer format
        raise.

        Args:
            data: The dict.

        Returns:
            The record.

        Raises:
            DataError: If ``data`` is not a dict, holds another record type or a newer format, or lacks a required
                field.
        """
        if not isinstance(data, dict):
            raise DataError(f"A {cls.record_type()} must be built from a dict, got {type(data).__name__}.")
        stored_type = data.get("record_type")
        if stored_type is not None and stored_type != cls.record_type():
            raise DataError(f"This is a {stored_type} record, not a {cls.record_type()}.")
        version = data.get("format_version", 1)
        if not isinstance(version, int) or version > cls.format_version:
            raise DataError(
                f"This {cls.record_type()} has format version {version!r}; this optimum-depth ({__version__}) reads "
                f"versions up to {cls.format_version}. Upgrade optimum-depth."
            )
        missing = [key for key in cls.required_keys if key not in data]
        if missing:
            raise DataError(
                f"This {cls.record_type()} lacks the required field(s) {missing}; refusing to fill in defaults."
            )
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known - set(METADATA_KEYS) - set(cls.derived_keys))
        if unknown:
            logger.warning("Ignoring unknown %s keys: %s", cls.record_type(), unknown)
        return cls._fields_from_dict({k: v for k, v in data.items() if k in known})

    def to_json_string(self) -> str:
        """Returns the record as indented JSON."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Writes the record as ``<save_directory>/<file_name>`` (the folder is created if needed), atomically.

        Args:
            save_directory: Target folder.

        Returns:
            The path of the written file.

        Raises:
            DataError: If ``save_directory`` is a file.
        """
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise DataError(f"`save_directory` {str(folder)!r} is a file, expected a directory.")
        folder.mkdir(parents=True, exist_ok=True)
        return write_text_atomically(folder / self.file_name, self.to_json_string())

    @classmethod
    def from_pretrained(cls: type[R], path: str | os.PathLike) -> R:
        """Loads a record saved with :meth:`save_pretrained`.

        Args:
            path: The folder holding ``file_name``, or the path of the JSON file itself.

        Returns:
            The record.

        Raises:
            DataNotFoundError: If there is no such file.
            DataError: If the file is not valid JSON or not a valid record of this type.
        """
        path = Path(path).expanduser()
        file = path / cls.file_name if path.is_dir() else path
        data = read_json_object(file, f"{cls.record_type()} file")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as err:  # invalid field values of the record, named with the file
            raise DataError(f"{str(file)!r} is not a valid {cls.record_type()}: {err}") from err
