"""The install steps that run programs: the venv from the wheelhouse, the TensorRT engine
build, the self-test of a release under a timeout, and the per-unit data format migrations.
Used by :mod:`deploy.install`, which journals them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from deploy import UNIT_FORMAT_VERSION
from deploy.facts import UnitFacts
from deploy.unit import Unit, fault_point
from edge.errors import BundleError

__all__ = ["make_venv", "venv_key", "build_engine", "run_selftest", "migrate_unit",
           "needs_migration", "backup_path",
           "restore_unit_backup", "unit_format", "MIGRATIONS", "FORMAT_FILE"]

log = logging.getLogger(__name__)

FORMAT_FILE = "format_version"


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
    fault_point("venv-mid")  # a power cut with an incomplete venv
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


def backup_path(unit_dir: Path) -> Path:
    """Where the next migration's backup of the unit data goes."""
    return unit_dir / "backups" / f"format-{unit_format(unit_dir)}-" \
        f"{time.strftime('%Y%m%dT%H%M%S')}"


def migrate_unit(unit_dir: Path, to_version: int, backup: str | None = None) -> str | None:
    """Migrate the unit data to ``to_version`` with a kept backup; returns the backup path.

    The backup is copied to ``<backup>.tmp`` and renamed when complete, before any file is
    changed: a migration interrupted at any point can be undone from it
    (:func:`restore_unit_backup`, run by recovery when the journal names the backup).
    """
    from edge.core.fileio import atomic_write_bytes, fsync_dir
    have = unit_format(unit_dir)
    if have == to_version:
        if not (unit_dir / FORMAT_FILE).exists():
            atomic_write_bytes(unit_dir / FORMAT_FILE, f"{have}\n".encode())
        return None
    if have > to_version:
        raise BundleError(f"unit data format {have} is newer than this release's "
                          f"{to_version}; install a release that reads format {have}")
    missing = [v for v in range(have, to_version) if v not in MIGRATIONS]
    if missing:
        raise BundleError(f"unit data: no migration from format {missing[0]} to "
                          f"{missing[0] + 1} in this release")
    dst = Path(backup) if backup else backup_path(unit_dir)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(unit_dir, tmp, symlinks=True,
                    ignore=shutil.ignore_patterns("backups", "engines", "logs"))
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
    for v in range(have, to_version):
        MIGRATIONS[v](unit_dir)
    atomic_write_bytes(unit_dir / FORMAT_FILE, f"{to_version}\n".encode())
    return str(dst)


def needs_migration(unit: Unit, inner: dict[str, Any]) -> bool:
    want = int(inner.get("unit_format_version", 1))
    return not (want == unit_format(unit.unit_dir) and (unit.unit_dir / FORMAT_FILE).exists())


def _migrate_in_release(unit: Unit, rel: Path, inner: dict[str, Any], backup: str) -> None:
    """Run the migration with the *new* release's code (it knows its format)."""
    want = int(inner.get("unit_format_version", 1))
    out = subprocess.run([str(rel / "venv" / "bin" / "python"), "-c",
                          "import sys; from pathlib import Path; from deploy.steps import "
                          "migrate_unit; migrate_unit(Path(sys.argv[1]), int(sys.argv[2]), "
                          "sys.argv[3])", str(unit.unit_dir), str(want), backup],
                         capture_output=True, text=True, cwd=str(rel))
    if out.returncode != 0:
        raise BundleError(f"migrate: {(out.stderr.strip().splitlines() or ['failed'])[-1]}")


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
