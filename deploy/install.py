"""``hsi-edge deploy install|commit|rollback|status|gc``: releases side by side, one atomic
switch, a self-test gate, automatic rollback.

Install steps (each recorded in the journal before it starts, :mod:`deploy.unit`)::

    verify    signature, header, target, anti-downgrade, not marked bad  (nothing written)
    stage     payload verified while extracting into releases/<v>.tmp, every file fsync'ed
    rename    releases/<v>.tmp -> releases/<v>
    venv      releases/<v>/venv from the release's wheelhouse, offline (pip --no-index)
    migrate   per-unit data format (kept backup) when the release needs a newer one
    engine    TensorRT engine built on the unit when it has TensorRT (progress, duration)
    switch    previous -> old release, current -> new release (each one rename)
    selftest  `hsi-edge selftest` of the new release, in its own venv, under a timeout
    commit    release committed, the unit's security version raised; journal removed

A failed, hung or crashing self-test rolls back to the old release and marks the new one
bad; a bad release is never installed again.  With ``commit=False`` (the Mender update
module's ArtifactInstall) the release stays pending after the switch; ``commit_pending``
(ArtifactCommit) runs the gate, and :func:`service_start` rolls back after
``max_failed_starts`` starts of a pending release.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from deploy.artifact import ArtifactReader, load_public_keys
from deploy.facts import UnitFacts
from deploy.steps import (FORMAT_FILE, MIGRATIONS, _fsync_tree, _migrate_in_release,  # noqa: F401
                          backup_path, build_engine, make_venv, migrate_unit, needs_migration,
                          restore_unit_backup, run_selftest, unit_format)
from deploy.unit import Unit, exclusive, fault_point, recover
from deploy.verify import check_header, read_payload, security_floor
from edge.errors import BundleError, ConfigError

__all__ = ["install", "commit_pending", "rollback", "status", "gc", "service_start", "Outcome",
           "finish_commit", "finish_rollback", "migrate_unit", "restore_unit_backup",
           "INSTALL_STEPS", "Unit"]

log = logging.getLogger(__name__)

INSTALL_STEPS = ("verify", "stage", "rename", "venv", "migrate", "engine", "switch", "selftest",
                 "commit")
MANIFEST_FILE = "manifest.json"


@dataclasses.dataclass
class Outcome:
    ok: bool
    line: str


def _trust(unit: Unit, trust: list[str]) -> list[Any]:
    if trust:
        return load_public_keys(trust)
    keys = unit.unit_dir / "trusted-keys"
    if not keys.is_dir():
        raise ConfigError(f"--trust: no key given and no {keys} on this unit (provision the "
                          f"release signing public key there when flashing)")
    return load_public_keys([keys])


def _default_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") and \
        not os.environ.get("VIRTUAL_ENV") else sys.executable


@exclusive(create=True)
def install(unit: Unit, artifact: str | os.PathLike, *, trust: list[str], facts: UnitFacts,
            python: str | None = None, commit: bool = True,
            selftest_timeout: float | None = None) -> Outcome:
    """Install ``artifact`` (see the module docstring); returns the outcome line."""
    unit.ensure()
    recover(unit)
    if Path(artifact).is_dir():
        # a Mender update module's work folder: the Mender client verified the signature
        # and the payload checksums (ArtifactVerifyKey in mender.conf)
        from deploy.payload import ModuleWorkDir
        reader: Any = ModuleWorkDir(artifact)
    else:
        reader = ArtifactReader(artifact, _trust(unit, trust))
    old, old_prev = unit.link_target(unit.current), unit.link_target(unit.previous)
    doc: dict[str, Any] = {"op": "install", "version": None, "old": old,
                           "old_previous": old_prev, "artifact": str(artifact), "started":
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta = check_header(reader, facts, unit.unit_dir)
    version = str(meta["version"])
    if "/" in version or version.startswith("."):
        raise BundleError(f"{artifact}: version {version!r} is not usable as a folder name")
    entry = unit.state_of(version)
    if entry and entry.get("state") == "bad":
        raise BundleError(f"{artifact}: release {version} was marked bad on {entry['time']} "
                          f"({entry.get('reason')}); it is not retried: build a new version")
    if version == old:
        return Outcome(True, f"{version} is already installed and current")
    if old and (unit.state_of(old) or {}).get("state") == "pending":
        raise BundleError(f"release {old} is pending (installed, not yet committed): "
                          f"deploy commit or deploy rollback first")
    if version == old_prev:
        raise BundleError(f"release {version} is installed as the previous release: "
                          f"deploy rollback returns to it")
    if (unit.releases / version).exists():
        unit.remove_release(version)  # installed before, not current/previous: reinstall
    doc["version"] = version
    unit.step(doc, "verify")
    staging = unit.releases / f"{version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    unit.step(doc, "stage")
    first = [True]

    def on_file(path: str) -> None:
        if first[0]:
            first[0] = False
            fault_point("stage-mid")  # a power cut with some files written

    try:
        inner = read_payload(reader, meta, staging, on_file)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        unit.clear_journal()
        raise
    from edge.core.fileio import atomic_write_bytes
    atomic_write_bytes(staging / MANIFEST_FILE, (json.dumps(inner, indent=1) + "\n").encode())
    _fsync_tree(staging)
    unit.step(doc, "rename")
    os.replace(staging, unit.releases / version)
    doc["created"] = True
    unit.write_journal(doc)
    from edge.core.fileio import fsync_dir
    fsync_dir(unit.releases)
    rel = unit.releases / version
    unit.set_state(version, "installing", security_version=inner["security_version"],
                   name=inner["name"])
    try:
        unit.step(doc, "venv")
        make_venv(unit, rel, inner, python or _default_python())
        unit.step(doc, "migrate")
        if needs_migration(unit, inner):
            # journaled before anything changes: recovery restores from this backup (only
            # once it is complete: it is written under .tmp and renamed)
            doc["restore_unit"] = str(backup_path(unit.unit_dir))
            unit.write_journal(doc)
            _migrate_in_release(unit, rel, inner, doc["restore_unit"])
        unit.step(doc, "engine")
        build_engine(unit, rel, inner, facts)
    except BundleError as exc:
        _undo(unit, doc, f"{exc}")
        raise
    unit.step(doc, "switch")
    unit.set_link(unit.previous, old)
    fault_point("switch-mid")
    unit.set_link(unit.current, version)
    unit.set_state(version, "pending", security_version=inner["security_version"],
                   name=inner["name"], starts=0, old_previous=old_prev)
    if not commit:
        unit.clear_journal()
        return Outcome(True, f"{version} installed and switched, pending its self-test "
                             f"(deploy commit)")
    return _gate(unit, version, inner, doc, selftest_timeout)


def _gate(unit: Unit, version: str, inner: dict[str, Any], doc: dict[str, Any],
          timeout: float | None) -> Outcome:
    unit.step(doc, "selftest")
    ok, reason = run_selftest(unit, unit.releases / version,
                              timeout or float(inner["selftest"]["timeout_s"]))
    if not ok:
        line = _auto_rollback(unit, version, doc.get("old"), doc.get("old_previous"),
                              f"self-test failed: {reason}", doc)
        return Outcome(False, line)
    unit.step(doc, "commit")
    finish_commit(unit, doc)
    unit.clear_journal()
    return Outcome(True, f"{version} installed, self-test passed, committed "
                         f"(previous: {doc.get('old') or '-'})")


def finish_commit(unit: Unit, doc: dict[str, Any]) -> None:
    """The commit step (idempotent: recovery re-runs it)."""
    version = doc["version"]
    entry = unit.state_of(version) or {}
    sv = entry.get("security_version")
    if sv is None:
        sv = json.loads((unit.releases / version / MANIFEST_FILE).read_text())["security_version"]
    unit.raise_security_floor(int(sv))
    unit.set_state(version, "committed", security_version=sv, starts=0)
    log.info("release %s committed", version)


def _undo(unit: Unit, doc: dict[str, Any], reason: str) -> None:
    """A step before the switch failed: remove the new release, keep the old one."""
    from deploy.unit import _undo_install
    _undo_install(unit, doc)
    unit.set_state(doc["version"], "failed", reason=reason)
    unit.clear_journal()


def _auto_rollback(unit: Unit, version: str, old: str | None, old_prev: str | None,
                   reason: str, doc: dict[str, Any] | None = None) -> str:
    rb = {"op": "rollback", "version": version, "old": old, "old_previous": old_prev,
          "mark_bad": reason, "restore_unit": (doc or {}).get("restore_unit")}
    unit.write_journal({**rb, "step": "rollback"})
    finish_rollback(unit, rb)
    unit.clear_journal()
    return (f"{version} rolled back to {old or '(none)'} and marked bad: {reason}")


def finish_rollback(unit: Unit, doc: dict[str, Any]) -> None:
    """Switch back to ``doc['old']`` (idempotent: recovery re-runs it)."""
    old, version = doc.get("old"), doc["version"]
    unit.set_link(unit.current, old)
    unit.set_link(unit.previous, doc.get("old_previous"))
    if doc.get("restore_unit"):
        restore_unit_backup(unit, doc["restore_unit"])
    if doc.get("mark_bad"):
        unit.set_state(version, "bad", reason=doc["mark_bad"])
    else:
        unit.set_state(version, "rolled-back")


@exclusive()
def rollback(unit: Unit, *, allow_downgrade: bool = False, if_pending: bool = False) -> Outcome:
    """Manual rollback: current <- previous (the release left stays installed).

    ``if_pending``: only when the current release is pending (the Mender module's
    ArtifactRollback: after a failed ArtifactCommit the self-test gate has already rolled
    back, and an ArtifactInstall that failed before the switch changed nothing).
    """
    unit.ensure()
    recover(unit)
    cur, prev = unit.link_target(unit.current), unit.link_target(unit.previous)
    if if_pending and not (cur and (unit.state_of(cur) or {}).get("state") == "pending"):
        return Outcome(True, f"nothing to roll back: current {cur or '-'} is not pending")
    if prev is None:
        raise BundleError(f"rollback: {unit.root} has no previous release to return to")
    entry = unit.state_of(prev) or {}
    floor = security_floor(unit.unit_dir)
    if entry.get("security_version", floor) < floor and not allow_downgrade:
        raise BundleError(f"rollback: previous release {prev} has security_version "
                          f"{entry.get('security_version')} < this unit's {floor}; "
                          f"--allow-downgrade to force")
    pending = (unit.state_of(cur) or {}).get("state") == "pending" if cur else False
    # the release left becomes previous: a second rollback returns to it
    doc = {"op": "rollback", "version": cur, "old": prev, "old_previous": cur,
           "mark_bad": None}
    unit.write_journal({**doc, "step": "rollback"})
    finish_rollback(unit, doc)
    if pending:
        unit.set_state(cur, "rolled-back", reason="rolled back before commit")
    unit.clear_journal()
    return Outcome(True, f"rolled back: current {prev} (was {cur})")


@exclusive()
def commit_pending(unit: Unit, *, selftest_timeout: float | None = None,
                   version: str | None = None) -> Outcome:
    """Self-test gate of the current release when it is pending (Mender ArtifactCommit).

    ``version``: the release the caller installed (the Mender module passes its artifact's);
    when it is no longer the pending current release (rolled back meanwhile, e.g. after
    ``max_failed_starts`` failed starts), the commit fails instead of committing nothing.
    """
    recover(unit)
    cur = unit.link_target(unit.current)
    entry = unit.state_of(cur) if cur else None
    if version is not None and (cur != version or not entry
                                or entry.get("state") != "pending"):
        if cur == version and entry and entry.get("state") == "committed":
            return Outcome(True, f"{version} is already committed")
        was = unit.state_of(version) or {}
        return Outcome(False, f"{version} is not pending: {was.get('state', 'not installed')}"
                              f"{': ' + was['reason'] if was.get('reason') else ''} "
                              f"(current: {cur or '-'})")
    if not entry or entry.get("state") != "pending":
        return Outcome(True, f"nothing pending (current: {cur or '-'})")
    inner = json.loads((unit.releases / cur / MANIFEST_FILE).read_text())
    doc = {"op": "install", "version": cur, "old": unit.link_target(unit.previous),
           "old_previous": entry.get("old_previous"), "created": False}
    return _gate(unit, cur, inner, doc, selftest_timeout)


@exclusive()
def service_start(unit: Unit) -> str | None:
    """Count a start of a pending current release; after ``max_failed_starts`` starts
    without a commit, roll back and mark it bad.  Also runs :func:`recover`."""
    line = recover(unit)
    cur = unit.link_target(unit.current)
    entry = unit.state_of(cur) if cur else None
    if not entry or entry.get("state") != "pending":
        return line
    inner = json.loads((unit.releases / cur / MANIFEST_FILE).read_text())
    limit = int(inner["selftest"]["max_failed_starts"])
    starts = int(entry.get("starts", 0)) + 1
    if starts > limit:
        return _auto_rollback(unit, cur, unit.link_target(unit.previous),
                              entry.get("old_previous"),
                              f"{limit} starts without a commit (crash loop)")
    unit.set_state(cur, "pending", starts=starts)
    return line


def status(unit: Unit) -> dict[str, Any]:
    """What is installed, current, previous, pending, bad.  Recovers an interrupted step
    first, unless another deploy command holds the lock (then ``busy`` is true and the
    journal shown is that command's progress)."""
    busy = False
    try:
        with unit.locked():
            recover(unit)
    except BundleError:
        if not unit.root.is_dir():
            raise
        busy = True
    reg = unit.registry()
    installed = sorted(p.name for p in unit.releases.iterdir() if p.is_dir()
                       and not p.name.startswith(".")) if unit.releases.exists() else []
    rows = []
    for v in sorted(set(installed) | set(reg)):
        e = reg.get(v, {})
        rows.append({"version": v, "state": e.get("state", "unknown"),
                     "installed": v in installed, "reason": e.get("reason"),
                     "security_version": e.get("security_version")})
    return {"root": str(unit.root), "unit_dir": str(unit.unit_dir), "busy": busy,
            "current": unit.link_target(unit.current),
            "previous": unit.link_target(unit.previous),
            "security_version": security_floor(unit.unit_dir),
            "journal": unit.journal(), "releases": rows}


@exclusive()
def gc(unit: Unit) -> list[str]:
    """Remove installed releases other than current and previous (never unit data)."""
    recover(unit)
    keep = {unit.link_target(unit.current), unit.link_target(unit.previous)}
    removed = []
    for p in sorted(unit.releases.iterdir()) if unit.releases.exists() else []:
        if p.is_dir() and p.name not in keep and not p.name.startswith("."):
            unit.remove_release(p.name)
            removed.append(p.name)
    used = {os.path.realpath(p / "venv") for p in unit.releases.iterdir() if p.is_dir()}
    for v in sorted((unit.root / "venvs").glob("*")):
        if os.path.realpath(v) not in used:
            shutil.rmtree(v)
            removed.append(f"venvs/{v.name}")
    return removed
