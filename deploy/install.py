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
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deploy import UNIT_FORMAT_VERSION
from deploy.artifact import ArtifactReader, load_public_keys
from deploy.facts import UnitFacts
from deploy.unit import Unit, exclusive, fault_point, recover
from deploy.verify import check_header, read_payload, security_floor
from edge.errors import BundleError, ConfigError

__all__ = ["install", "commit_pending", "rollback", "status", "gc", "service_start", "Outcome",
           "finish_commit", "finish_rollback", "migrate_unit", "restore_unit_backup",
           "INSTALL_STEPS", "Unit"]

log = logging.getLogger(__name__)

INSTALL_STEPS = ("verify", "stage", "rename", "venv", "migrate", "engine", "switch", "selftest",
                 "commit")
FORMAT_FILE = "format_version"
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
        from deploy.artifact import ModuleWorkDir
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
    (staging / MANIFEST_FILE).write_text(json.dumps(inner, indent=1) + "\n")
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
        backup = _migrate_in_release(unit, rel, inner)
        if backup:
            doc["restore_unit"] = backup
            unit.write_journal(doc)
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
                   name=inner["name"], starts=0)
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
def commit_pending(unit: Unit, *, selftest_timeout: float | None = None) -> Outcome:
    """Self-test gate of the current release when it is pending (Mender ArtifactCommit)."""
    recover(unit)
    cur = unit.link_target(unit.current)
    entry = unit.state_of(cur) if cur else None
    if not entry or entry.get("state") != "pending":
        return Outcome(True, f"nothing pending (current: {cur or '-'})")
    inner = json.loads((unit.releases / cur / MANIFEST_FILE).read_text())
    doc = {"op": "install", "version": cur, "old": unit.link_target(unit.previous),
           "old_previous": None, "created": False}
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
        return _auto_rollback(unit, cur, unit.link_target(unit.previous), None,
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


# -- steps -------------------------------------------------------------------------------------
def _fsync_tree(root: Path) -> None:
    from edge.core.fileio import fsync_dir
    for d, _, _ in os.walk(root):
        fsync_dir(d)


def _site_dirs(python: str) -> list[str]:
    out = subprocess.run([python, "-c", "import site, sys, json; print(json.dumps("
                          "[sys.prefix != sys.base_prefix, site.getsitepackages()]))"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise BundleError(f"venv: cannot run {python}: {out.stderr.strip()[-200:]}")
    is_venv, dirs = json.loads(out.stdout)
    return dirs if is_venv else []


def venv_key(inner: dict[str, Any], python: str) -> str:
    """What a venv depends on: the wheelhouse files, the interpreter and the venv options."""
    import hashlib
    wheels = sorted((f["path"], f["sha256"]) for f in inner["files"]
                    if f["path"].startswith("wheelhouse/"))
    blob = json.dumps([wheels, os.path.realpath(python), inner.get("venv"),
                       inner["wheelhouse"]["mode"], inner.get("runtime_modules")])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_venv(unit: Unit, rel: Path, inner: dict[str, Any], python: str) -> None:
    """``rel/venv`` -> ``ROOT/venvs/<key>``, made offline from ``rel/wheelhouse`` unless a
    release with the same wheelhouse and interpreter already made it (a model or config
    update then installs in seconds and does not touch the Python environment).

    ``venv.system_site_packages``: the venv sees the site packages of ``python`` (when
    ``python`` is itself a venv, its site packages through a ``.pth`` file, so "system"
    means "the interpreter the venv is made from" in both cases).  A venv is complete when
    ``.complete`` exists; an incomplete one is rebuilt.
    """
    venv = unit.root / "venvs" / venv_key(inner, python)
    link = rel / "venv"
    if not (venv / ".complete").exists():
        _build_venv(venv, rel, inner, python)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(os.path.relpath(venv, rel), link)


def _build_venv(venv: Path, rel: Path, inner: dict[str, Any], python: str) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    system = bool(inner.get("venv", {}).get("system_site_packages"))
    cmd = [python, "-m", "venv", "--without-pip"] + (["--system-site-packages"] if system else [])
    _check_run(cmd + [str(venv)], "venv")
    vpy = venv / "bin" / "python"
    want = str(inner.get("python", {}).get("version", ""))
    got = subprocess.run([str(vpy), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True).stdout.strip()
    if inner["wheelhouse"]["mode"] == "full" and want and got != want:
        raise BundleError(f"venv: the release's wheelhouse is for Python {want}, {python} is "
                          f"Python {got} (give --python with a {want} interpreter)")
    if system:
        extra = _site_dirs(python)
        if extra:
            site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig."
                                   "get_paths()['purelib'])"], capture_output=True, text=True,
                                  check=True).stdout.strip()
            Path(site, "_hsi_edge_base_site.pth").write_text("\n".join(extra) + "\n")
    wh = inner["wheelhouse"]
    has_pip = "import pip"
    if subprocess.run([str(vpy), "-c", has_pip], capture_output=True).returncode == 0:
        pip = [str(vpy), "-m", "pip"]
    elif subprocess.run([python, "-c", has_pip], capture_output=True).returncode == 0:
        pip = [python, "-m", "pip", "--python", str(vpy)]
    else:
        _check_run([str(vpy), "-m", "ensurepip", "-q"], "venv (ensurepip)")
        pip = [str(vpy), "-m", "pip"]
    args = ["--isolated", "install", "--no-index", "--find-links", str(rel / "wheelhouse"),
            "--disable-pip-version-check", "--no-cache-dir", "--no-warn-script-location"]
    if wh["mode"] == "hsi-edge-only":
        args.append("--no-deps")
    if wh.get("sdists"):
        # built on the unit (PyCUDA on JetPack): offline, so with the build tools the venv
        # already sees; pip's output is streamed to the log as progress
        args.append("--no-build-isolation")
    _check_run(pip + args + [str(rel / "wheelhouse" / wh["hsi_edge_wheel"])]
               + list(wh.get("sdists") or []), "venv (pip install, offline)", stream=True)
    mods = inner.get("runtime_modules") or []
    probe = ("import importlib, sys\nmissing = []\nfor m in sys.argv[1:]:\n    try:\n"
             "        importlib.import_module(m)\n    except Exception:\n"
             "        missing.append(m)\nprint(' '.join(missing))")
    out = subprocess.run([str(vpy), "-c", probe, *mods], capture_output=True, text=True)
    if out.returncode != 0 or out.stdout.strip():
        where = ("the site packages of " + python) if wh["mode"] == "hsi-edge-only" else \
            "the wheelhouse"
        raise BundleError(f"venv: runtime modules missing: "
                          f"{out.stdout.strip() or out.stderr[-200:]} (this release expects "
                          f"them from {where})")
    (venv / ".complete").write_text("ok\n")
    log.info("venv ready in %.1f s", time.monotonic() - t0)


def _check_run(cmd: list[str], what: str, *, stream: bool = False) -> None:
    """Run ``cmd``; with ``stream``, its output goes to the log line by line (progress of a
    long step: pip building PyCUDA, an engine build)."""
    log.info("%s: %s", what, " ".join(cmd))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-5:]
        if stream:
            log.info("%s [%5.0f s] %s", what, time.monotonic() - t0, line.rstrip())
    if proc.wait() != 0:
        raise BundleError(f"{what} failed (exit {proc.returncode}): "
                          f"{' | '.join(t for t in tail if t)[-400:]}")


def build_engine(unit: Unit, rel: Path, inner: dict[str, Any], facts: UnitFacts) -> None:
    """Build the TensorRT engine on the unit (into unit/engines) when it has TensorRT."""
    model = inner.get("model")
    if not model or not facts.tensorrt:
        log.info("engine: skipped (%s)", "no model" if not model else "no TensorRT on this unit")
        return
    t0 = time.monotonic()
    log.warning("engine: building the TensorRT engine of %s (%s) on this unit; this takes "
                "minutes on a Jetson", model["name"], model["engine"]["precision"])
    _check_run([str(rel / "venv" / "bin" / "python"), "-m", "edge", "-v", "engine", "build",
                str(rel / model["card"]), "--precision", model["engine"]["precision"],
                "--cache", str(unit.unit_dir / "engines")], "engine build", stream=True)
    log.warning("engine: built in %.0f s", time.monotonic() - t0)


def run_selftest(unit: Unit, rel: Path, timeout: float) -> tuple[bool, str]:
    """``hsi-edge selftest`` of release ``rel`` in its venv; (passed, reason)."""
    report = unit.unit_dir / "selftest"
    report.mkdir(parents=True, exist_ok=True)
    cmd = [str(rel / "venv" / "bin" / "python"), "-m", "edge", "selftest", "--json",
           "--release", str(rel), "--unit-dir", str(unit.unit_dir)]
    log.info("selftest: %s (timeout %.0f s)", " ".join(cmd), timeout)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(rel), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"hung: no result after {timeout:g} s"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (report / f"{stamp}-{rel.name}.json").write_text(out or json.dumps({"stderr": err[-2000:]}))
    if proc.returncode == 0:
        return True, "passed"
    try:
        failed = [f"{c['name']}: {c['reason']}" for c in json.loads(out)["checks"]
                  if c["status"] == "FAIL" and c.get("required", True)]
    except (ValueError, KeyError, TypeError):
        failed = [(err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]]
    return False, "; ".join(failed) or f"exit {proc.returncode}"


# -- per-unit data format ---------------------------------------------------------------------
#: from-version -> function(unit_dir) converting the unit data to from-version + 1.  None
#: registered yet: format 1 is the first.  A release that changes a per-unit file format
#: adds its step here and raises UNIT_FORMAT_VERSION.
MIGRATIONS: dict[int, Any] = {}


def unit_format(unit_dir: Path) -> int:
    try:
        return int((unit_dir / FORMAT_FILE).read_text().strip())
    except FileNotFoundError:
        return UNIT_FORMAT_VERSION


def migrate_unit(unit_dir: Path, to_version: int) -> str | None:
    """Migrate the unit data to ``to_version`` with a kept backup; returns the backup path."""
    from edge.core.fileio import atomic_write_bytes
    have = unit_format(unit_dir)
    if have == to_version:
        if not (unit_dir / FORMAT_FILE).exists():
            atomic_write_bytes(unit_dir / FORMAT_FILE, f"{have}\n".encode())
        return None
    if have > to_version:
        raise BundleError(f"unit data format {have} is newer than this release's "
                          f"{to_version}; install a release that reads format {have}")
    backup = unit_dir / "backups" / f"format-{have}-{time.strftime('%Y%m%dT%H%M%S')}"
    backup.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(unit_dir, backup, symlinks=True,
                    ignore=shutil.ignore_patterns("backups", "engines", "logs"))
    for v in range(have, to_version):
        if v not in MIGRATIONS:
            raise BundleError(f"unit data: no migration from format {v} to {v + 1} in this "
                              f"release")
        MIGRATIONS[v](unit_dir)
    atomic_write_bytes(unit_dir / FORMAT_FILE, f"{to_version}\n".encode())
    return str(backup)


def _migrate_in_release(unit: Unit, rel: Path, inner: dict[str, Any]) -> str | None:
    """Run the migration with the *new* release's code (it knows its format)."""
    want = int(inner.get("unit_format_version", 1))
    if want == unit_format(unit.unit_dir) and (unit.unit_dir / FORMAT_FILE).exists():
        return None
    out = subprocess.run([str(rel / "venv" / "bin" / "python"), "-c",
                          "import sys; from pathlib import Path; from deploy.install import "
                          "migrate_unit; print(migrate_unit(Path(sys.argv[1]), int(sys.argv[2]))"
                          " or '')", str(unit.unit_dir), str(want)],
                         capture_output=True, text=True, cwd=str(rel))
    if out.returncode != 0:
        raise BundleError(f"migrate: {(out.stderr.strip().splitlines() or ['failed'])[-1]}")
    return out.stdout.strip() or None


def restore_unit_backup(unit: Unit, backup: str | None) -> None:
    """Put the unit data of ``backup`` back (the migrated data kept aside beside it)."""
    if not backup or not Path(backup).exists():
        return
    aside = Path(backup).with_name(Path(backup).name + "-migrated")
    for p in Path(backup).iterdir():
        dst = unit.unit_dir / p.name
        if dst.exists() and not aside.joinpath(p.name).exists():
            aside.mkdir(parents=True, exist_ok=True)
            os.replace(dst, aside / p.name)
        if p.is_dir():
            shutil.copytree(p, dst, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(p, dst)
