"""Replacing a record folder so that a crash at any point is recoverable.

A save writes the new record into a temporary sibling ``.<name>.tmp-XXXX``, then replaces the
record with two renames (old -> backup, new -> record).  A crash can stop it anywhere, so each
save leaves a journal ``.<name>.replace.json`` in the parent (written atomically before the
first rename, removed after the last) naming its temporary folder and its backup, and every
save and load of the record first runs :func:`recover`, which under the parent folder's lock:

- journal, record present, temporary folder present (crash before the renames): rolls back --
  the temporary copy is deleted, the record stays as it was;
- journal, record missing (crash between the renames): finishes -- the new record is moved in
  if it is complete and its checksums verify, else the backup is moved back;
- journal, record present, no temporary folder (crash after the renames): removes the journal;
- temporary folders no journal names (crash while writing the new copy): deleted.

Each action is logged as a warning naming the folders.  All of this happens with an exclusive
``flock`` on the parent folder, which every save holds from its first file to its last rename,
so a save in progress in another process is never taken for an interrupted one.

Tests stop a save at each step with ``HSI_EDGE_TEST_CRASH_AT=<step>`` (a hard ``os._exit``;
nothing in production sets this variable): see :data:`STEPS`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from edge.core.fileio import atomic_write_bytes, fsync_dir

__all__ = ["STEPS", "crash_point", "parent_lock", "journal_path", "tmp_prefix", "recover",
           "write_journal", "CRASH_ENV", "CRASH_EXIT"]

log = logging.getLogger(__name__)

CRASH_ENV = "HSI_EDGE_TEST_CRASH_AT"
CRASH_EXIT = 77
#: The points at which a test may stop a save, in order.
STEPS = ("writing", "written", "journal", "backup", "renamed")


def crash_point(step: str) -> None:
    """Exit the process at once (no cleanup) if the test hook names ``step``."""
    if os.environ.get(CRASH_ENV) == step:
        os._exit(CRASH_EXIT)


def tmp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def journal_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.replace.json")


@contextlib.contextmanager
def parent_lock(target: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the record's parent folder (no lock file is left behind)."""
    try:
        fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        yield                                   # no parent yet: nothing to race on
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_journal(target: Path, tmp: Path, backup: Path | None) -> None:
    atomic_write_bytes(journal_path(target), json.dumps(
        {"tmp": tmp.name, "backup": None if backup is None else backup.name}).encode())


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def recover(target: Path, verify: Callable[[Path], str | None]) -> None:
    """Finish or roll back an interrupted save of ``target`` and delete stale temporaries.

    Call it with :func:`parent_lock` held.  ``verify(folder)`` returns None when the record in
    ``folder`` is complete and its checksums match, else the reason.  Failures to rename or
    delete (a read-only medium) are logged, never raised: the caller then reports what it
    finds.
    """
    parent = target.parent
    if not parent.is_dir():
        return
    journal = journal_path(target)
    named: set[str] = set()
    try:
        if journal.is_file():
            try:
                entry = json.loads(journal.read_text(encoding="utf-8"))
                tmp_name, backup_name = entry["tmp"], entry.get("backup")
                if not (isinstance(tmp_name, str) and tmp_name.startswith(tmp_prefix(target))
                        and "/" not in tmp_name):
                    raise ValueError(tmp_name)
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("calibration: ignoring an unreadable journal %s", journal)
                journal.unlink()
            else:
                named.add(tmp_name)
                _finish(target, parent / tmp_name,
                        None if not isinstance(backup_name, str) or "/" in backup_name
                        else parent / backup_name, verify)
                journal.unlink()
                fsync_dir(parent)
        for stale in parent.glob(tmp_prefix(target) + "*"):
            if stale.name not in named and stale.is_dir():
                log.warning("calibration: removing %s, left by a save that was interrupted "
                            "while writing", stale)
                _rmtree(stale)
    except OSError as exc:
        log.warning("calibration: could not recover an interrupted save of %s: %s", target,
                    exc.strerror or exc)


def _finish(target: Path, tmp: Path, backup: Path | None,
            verify: Callable[[Path], str | None]) -> None:
    if target.exists():
        if tmp.exists():
            log.warning("calibration: a save of %s was interrupted before it replaced the "
                        "record; the record is unchanged and the unfinished copy %s removed",
                        target, tmp.name)
            _rmtree(tmp)
        return
    problem = verify(tmp) if tmp.is_dir() else "missing"
    if problem is None:
        os.rename(tmp, target)
        log.warning("calibration: finished an interrupted save of %s (the new record was "
                    "complete and verified)%s", target,
                    f"; the previous record is kept as {backup.name}"
                    if backup is not None and backup.exists() else "")
        return
    if backup is not None and backup.is_dir():
        os.rename(backup, target)
        log.warning("calibration: rolled back an interrupted save of %s: the new copy was "
                    "incomplete (%s); the previous record is restored", target, problem)
    else:
        log.warning("calibration: an interrupted save of %s left no usable record (new copy: "
                    "%s)", target, problem)
    if tmp.exists():
        _rmtree(tmp)
