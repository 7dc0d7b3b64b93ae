"""Moving a staged save into its folder all-or-nothing, and undoing a save that was killed half-way.

A save is staged in a hidden folder ``.<name>.optimum-depth-staging-<pid>-<random>`` beside its target (inside the
target when the parent cannot be written, or is another filesystem), with the new files under ``new/``. Before the
first move, a journal (``journal.json``) lists the files coming in and the files going out (replaced or stale).
Then:

1. the old ``config.json`` goes out first (into ``old/``), then every other replaced or stale file: from then on the
   folder has no ``config.json`` and no loader takes it for a checkpoint;
2. the new files come in, ``config.json`` last: that move is the commit point.

At any moment the folder is the old checkpoint, the new one, or no checkpoint at all (no ``config.json``), never a
mix that loads. A failure during the moves puts everything back at once; a process killed during them (``kill -9``)
leaves its journal, and the next save into the same place, or the next load of the folder by the library, puts the
old files back (:func:`recover_interrupted_saves`), or only removes the leftovers when every new file was in place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from ..constants import MODEL_CONFIG_NAME, STAGING_MARKER

logger = logging.getLogger(__name__)

__all__ = ["Staging", "create_staging", "recover_interrupted_saves", "replace_files"]

JOURNAL_NAME = "journal.json"
HOST_NAME = "host"
"""The machine whose process stages there: a shared file system may show other machines' saves, whose pids mean
nothing here (they are never taken for dead)."""


@dataclass(frozen=True)
class Staging:
    """A staging folder: ``new/`` holds the files to move in, ``old/`` what they replace, plus the journal.

    Args:
        root: The staging folder.
        target: The folder the save goes into.
    """

    root: Path
    target: Path

    @property
    def new(self) -> Path:
        """The staged files (what the save writes)."""
        return self.root / "new"

    @property
    def old(self) -> Path:
        """The files moved out of the target (restored if the save does not complete)."""
        return self.root / "old"

    @property
    def journal(self) -> Path:
        """The journal of the moves."""
        return self.root / JOURNAL_NAME

    def holds_old_files(self) -> bool:
        """Whether files moved out of the target are still here (a roll-back that could not finish)."""
        return self.old.is_dir() and any(p.is_file() or p.is_symlink() for p in self.old.rglob("*"))


def _same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def staging_parent(target: Path) -> Path:
    """Where to stage a save into ``target``: beside it, or inside it when that is the only place we may write.

    Args:
        target: The (absolute) target folder.

    Returns:
        The target's parent (or, for a missing target, its nearest existing ancestor) when it is writable and on the
        target's filesystem, else the target itself.
    """
    ancestor = next(p for p in target.parents if p.exists())
    if not target.exists():
        return ancestor
    if os.access(ancestor, os.W_OK | os.X_OK) and _same_filesystem(ancestor, target):
        return ancestor
    return target


def create_staging(target: Path) -> Staging:
    """Creates the staging folder of a save into ``target`` (its ``new/`` folder included).

    Raises:
        OSError: If it cannot be created (the caller reports it).
    """
    parent = staging_parent(target)
    prefix = "" if parent == target else f".{target.name}"
    root = parent / f"{prefix}{STAGING_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
    root.mkdir()
    (root / HOST_NAME).write_text(socket.gethostname(), encoding="utf-8")  # its pid means something here only
    Staging(root, target).new.mkdir()
    return Staging(root, target)


def _write_journal(staging: Staging, incoming: list[str], outgoing: list[str], created: list[str]) -> None:
    data = {"target": str(staging.target), "incoming": incoming, "outgoing": outgoing, "created": created}
    with open(staging.journal, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _config_last(names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: (name == MODEL_CONFIG_NAME, name))


def _missing_dirs(target: Path, names: list[str]) -> list[Path]:
    """Folders (the target, and sub-folders of incoming files) that the moves will create, outermost first."""
    wanted = {target} | {(target / name).parent for name in names}
    missing: set[Path] = set()
    for folder in wanted:
        for path in (folder, *folder.parents):
            if path.exists():
                break
            missing.add(path)
    return sorted(missing, key=lambda p: len(p.parts))


def replace_files(staging: Staging, incoming: list[str], outgoing: list[str]) -> None:
    """Moves ``incoming`` (staged under ``staging.new``) into the target and ``outgoing`` out of it, all-or-nothing.

    Args:
        staging: The staging folder, its files written.
        incoming: Relative names of the staged files.
        outgoing: Relative names of target files to move out: every existing file an incoming one replaces, and the
            stale files of an earlier save.

    Raises:
        OSError: If a move fails; every move done so far is undone first.
    """
    target = staging.target
    incoming = _config_last(incoming)
    outgoing = sorted(set(outgoing) | {n for n in incoming if (target / n).exists() or (target / n).is_symlink()})
    outgoing = sorted(outgoing, key=lambda name: (name != MODEL_CONFIG_NAME, name))  # config.json out first
    created = _missing_dirs(target, incoming)
    _write_journal(staging, incoming, outgoing, [str(p) for p in created])
    try:
        for folder in created:
            folder.mkdir()
        for name in outgoing:
            (staging.old / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target / name, staging.old / name)
        for name in incoming:
            os.replace(staging.new / name, target / name)
    except BaseException:
        _roll_back(staging, incoming, outgoing, created)
        raise


def _roll_back(staging: Staging, incoming: list[str], outgoing: list[str], created: list[Path]) -> None:
    """Puts the target back as it was: the new files out, the old ones in (``config.json`` last). Idempotent."""
    target = staging.target
    for name in reversed(incoming):
        if not (staging.new / name).exists() and (target / name).exists():
            (staging.new / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target / name, staging.new / name)
    for name in reversed(outgoing):  # config.json was moved out first: it comes back last
        if (staging.old / name).exists() and not (target / name).exists():  # never over a file made since
            os.replace(staging.old / name, target / name)
    for folder in reversed(created):
        with contextlib.suppress(OSError):  # not empty (or already gone): left as it is
            folder.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _staging_pid(path: Path) -> int | None:
    """The pid of the process that staged in ``path``, when it is a staging folder of this machine."""
    if not (path.is_dir() and path.name.startswith(".") and STAGING_MARKER in path.name):
        return None
    try:
        host = (path / HOST_NAME).read_text(encoding="utf-8")
    except OSError:
        host = None  # killed before it wrote its host (or an older version): this machine's, as before
    if host is not None and host != socket.gethostname():
        return None
    text = path.name.rsplit(STAGING_MARKER, 1)[1].split("-", 1)[0]
    return int(text) if text.isdigit() else None


def _recover(root: Path) -> str:
    """Finishes or undoes the interrupted save staged in ``root``, then removes ``root``; says which."""
    outcome = "discarded"  # killed while writing its staging folder: the target was never touched
    journal = root / JOURNAL_NAME
    if journal.is_file():
        data = json.loads(journal.read_text(encoding="utf-8"))
        staging = Staging(root, Path(data["target"]))
        incoming, outgoing = list(data["incoming"]), list(data["outgoing"])
        if any((staging.new / name).exists() for name in incoming):
            _roll_back(staging, incoming, outgoing, [Path(p) for p in data.get("created", [])])
            outcome = "rolled back"
        else:
            outcome = "completed"  # every new file was in place: only the old copies are left to remove
    if Staging(root, Path()).holds_old_files() and outcome != "completed":
        raise OSError(f"the original files could not all be put back; they are kept in {root}")
    shutil.rmtree(root)
    return outcome


def recover_interrupted_saves(folder: Path) -> list[Path]:
    """Repairs what saves killed half-way left in ``folder`` and beside it, from their journals.

    A save whose process is gone is undone (the folder gets its old files back) unless every new file was already in
    place; its staging folder is then removed. Staging folders of running processes are left alone.

    Args:
        folder: A folder saves write into (its own staging folders and those beside it are looked at).

    Returns:
        The staging folders dealt with.
    """
    folder = Path(folder).absolute()
    places = [p for p in (folder, folder.parent) if p.is_dir()]
    handled: list[Path] = []
    for place in places:
        try:
            children = list(place.iterdir())
        except OSError:  # unreadable: nothing we could repair there
            continue
        for path in children:
            pid = _staging_pid(path)
            if pid is None or _pid_alive(pid):
                continue
            try:
                outcome = _recover(path)
            except (OSError, ValueError, KeyError) as err:
                logger.warning("Could not repair %s, left by an interrupted save: %s", path, err)
                continue
            logger.warning("An interrupted save left %s: %s.", path, outcome)
            handled.append(path)
    return handled
