"""A unit's install root: paths, the journal, the release registry, atomic link switches
and recovery after an interruption.

Every change to ``DIR/releases``, ``current`` and ``previous`` happens under a journal
(``state/journal.json``, written atomically before each step).  After a power cut at any
point, :func:`recover` (run at the start of every ``deploy`` command and by the service's
``ExecStartPre``) brings the unit back to a consistent state:

- an install interrupted before or during the switch, or during the self-test: the old
  release is made current again and the half-installed one removed (the install can be
  re-run);
- an install interrupted while committing (the self-test had passed): the commit finishes;
- a rollback: it finishes.

Per-unit data (``unit_dir``) is never written here except the security version and the
format version, each with one atomic write.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from deploy import unit_dir_of
from edge.core.fileio import atomic_write_bytes, fsync_dir
from edge.core.install_root import REGISTRY, link_version, read_registry
from edge.errors import BundleError

__all__ = ["Unit", "recover", "fault_point", "FAULT_ENV", "exclusive"]

log = logging.getLogger(__name__)

#: Fault injection for tests: ``HSI_EDGE_DEPLOY_FAULT=exit:<point>`` ends the process with
#: ``os._exit(97)`` at that point (a power cut, as far as the files are concerned);
#: ``hang:<point>`` sleeps there for an hour (a hung step).
FAULT_ENV = "HSI_EDGE_DEPLOY_FAULT"


def fault_point(name: str) -> None:
    """Fault-injection hook (see :data:`FAULT_ENV`); a no-op unless the variable names it."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    kind, _, point = spec.partition(":")
    if point != name:
        return
    if kind == "exit":
        os._exit(97)
    if kind == "hang":
        time.sleep(3600)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Unit:
    """Paths and state of one install root.

    Parameters
    ----------
    root : install root (``/opt/hsi-edge`` on a unit)
    unit_dir : per-unit data (default ``root/unit``; ``/var/lib/hsi-edge`` on a unit)
    """

    def __init__(self, root: str | os.PathLike, *, unit_dir: str | os.PathLike | None = None):
        self.root = Path(root).absolute()
        self.unit_dir = unit_dir_of(self.root, unit_dir)
        self.releases = self.root / "releases"
        self.state_dir = self.root / "state"
        self.current = self.root / "current"
        self.previous = self.root / "previous"
        self.journal_path = self.state_dir / "journal.json"
        self.registry_path = self.root / REGISTRY

    def ensure(self) -> None:
        for d in (self.releases, self.state_dir, self.unit_dir):
            d.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self, *, create: bool = False):
        """One deploy command at a time per root (``state/lock``, flock: released by the
        kernel when the process dies, so a power cut or a kill never leaves it held)."""
        if not create and not self.root.is_dir():
            raise BundleError(f"--root: {self.root} is not an hsi-edge install root "
                              f"(deploy install creates it)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BundleError(f"{self.root}: another hsi-edge deploy command is running "
                                  f"(lock {self.state_dir / 'lock'})") from None
            yield self
        finally:
            os.close(fd)

    # -- links -------------------------------------------------------------------------------
    def link_target(self, link: Path) -> str | None:
        """The release version a link points at (None when absent or dangling)."""
        name = link_version(link)
        return name if name is not None and (self.releases / name).is_dir() else None

    def set_link(self, link: Path, version: str | None) -> None:
        """Point ``link`` at ``releases/<version>`` atomically (rename over it); None removes."""
        if version is None:
            try:
                link.unlink()
            except FileNotFoundError:
                pass
        else:
            tmp = link.with_name(f".{link.name}.tmp")
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            os.symlink(f"releases/{version}", tmp)
            os.replace(tmp, link)
        fsync_dir(self.root)

    def release_dir(self, version: str) -> Path:
        return self.releases / version

    # -- journal -----------------------------------------------------------------------------
    def journal(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.journal_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            # written atomically, so this is damage, not an interrupted write
            raise BundleError(f"{self.journal_path}: damaged journal; inspect it and remove "
                              f"it to continue") from None

    def write_journal(self, doc: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.journal_path, json.dumps(doc, indent=1).encode())
        fsync_dir(self.state_dir)

    def step(self, doc: dict[str, Any], name: str) -> None:
        """Record that ``name`` starts, then offer the fault-injection point."""
        doc["step"] = name
        doc["steps"] = doc.get("steps", []) + [name]
        self.write_journal(doc)
        fault_point(name)

    def clear_journal(self) -> None:
        try:
            self.journal_path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.state_dir)

    # -- registry ----------------------------------------------------------------------------
    def registry(self) -> dict[str, dict[str, Any]]:
        try:
            return read_registry(self.registry_path)
        except ValueError:
            raise BundleError(f"{self.registry_path}: damaged release registry") from None

    def set_state(self, version: str, state: str, **fields: Any) -> None:
        reg = self.registry()
        entry = reg.setdefault(version, {})
        if "reason" not in fields:
            entry.pop("reason", None)  # a reason belongs to the state it explained
        entry.update(fields, state=state, time=_now())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.registry_path, json.dumps(reg, indent=1).encode())
        fsync_dir(self.state_dir)

    def state_of(self, version: str) -> dict[str, Any] | None:
        return self.registry().get(version)

    # -- security version --------------------------------------------------------------------
    def raise_security_floor(self, value: int) -> None:
        from deploy.verify import SECURITY_FILE, security_floor
        if value > security_floor(self.unit_dir):
            self.unit_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.unit_dir / SECURITY_FILE, f"{value}\n".encode())
            fsync_dir(self.unit_dir)

    def remove_release(self, version: str) -> None:
        """Delete ``releases/<version>`` (and a stale ``.tmp``); never a linked one."""
        for d in (self.releases / f"{version}.tmp", self.releases / version):
            if d.name == version and version in (self.link_target(self.current),
                                                 self.link_target(self.previous)):
                raise BundleError(f"release {version} is current or previous; not removed")
            if d.exists():
                # rename first: a half-deleted release never looks like a release
                trash = self.releases / f".trash-{d.name}"
                if trash.exists():
                    shutil.rmtree(trash)
                os.replace(d, trash)
                fsync_dir(self.releases)
                shutil.rmtree(trash)


def exclusive(create: bool = False):
    """Decorator: run ``fn(unit, ...)`` holding the unit's lock."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(unit: Unit, *args, **kwargs):
            with unit.locked(create=create):
                return fn(unit, *args, **kwargs)
        return inner
    return wrap


def recover(unit: Unit) -> str | None:
    """Finish or undo an interrupted install/rollback; returns what was done (or None)."""
    if not unit.root.exists():
        return None
    doc = unit.journal()
    done = None
    if doc is not None:
        op, step = doc.get("op"), doc.get("step")
        version = doc.get("version")
        if op == "install" and step == "commit":
            from deploy.install import finish_commit
            finish_commit(unit, doc)
            done = f"recovered: finished committing {version}"
        elif op == "install":
            _undo_install(unit, doc)
            done = (f"recovered: install of {version} interrupted at step {step!r}; "
                    f"{doc.get('old') or 'no release'} is current, {version} removed")
        elif op == "rollback":
            from deploy.install import finish_rollback
            finish_rollback(unit, doc)
            done = f"recovered: finished rolling back {version} to {doc.get('old')}"
        unit.clear_journal()
    # leftovers of interrupted writes that a journal step did not name
    for p in list(unit.releases.glob("*.tmp")) + list(unit.releases.glob(".trash-*")):
        shutil.rmtree(p, ignore_errors=True)
        done = done or f"recovered: removed stale {p.name}"
    for p in (unit.root / ".current.tmp", unit.root / ".previous.tmp"):
        if p.is_symlink():
            p.unlink()
    if done:
        log.warning("%s", done)
    return done


def _undo_install(unit: Unit, doc: dict[str, Any]) -> None:
    version, old, old_prev = doc["version"], doc.get("old"), doc.get("old_previous")
    if unit.link_target(unit.current) != old or doc.get("step") in ("switch", "selftest"):
        unit.set_link(unit.current, old)
        unit.set_link(unit.previous, old_prev)
    if "restore_unit" in doc:
        from deploy.steps import restore_unit_backup
        restore_unit_backup(unit, doc["restore_unit"])
    shutil.rmtree(unit.releases / f"{version}.tmp", ignore_errors=True)
    if version not in (old, old_prev) and (doc.get("created") or doc.get("step") != "verify"):
        # made by this install (an existing folder of that version was removed before the
        # install began), including a rename that completed before the journal said so
        unit.remove_release(version)
    entry = unit.state_of(version)
    if entry and entry.get("state") == "pending":
        unit.set_state(version, "interrupted", reason=f"interrupted at {doc.get('step')}")
