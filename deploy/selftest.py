"""The unit self-test: the health check that gates a commit, and the factory end-of-line
test.  Each check gives PASS, FAIL or SKIP with a reason; the unit is healthy when no
required check fails.

Checks (in order):

=================  ===========================================================  ==========
files              every installed file matches the release manifest (size,      required
                   sha256, mode)
chain-<backend>    the per-pixel chain on the golden frame matches the stored     required
                   maps: numpy always, native when a C++ compiler exists, cuda
                   on GPU releases
model-<runtime>    the model on the golden input matches the stored outputs       required
                   (engine-check tolerances): onnxruntime; tensorrt on GPU units
kernels            the release's CUDA kernels load (GPU units; SKIP otherwise)    required
device-<name>      each configured serial device answers with the right          per device
                   identity (serial from unit/identity.yaml when given)
calibration        unit/calibration/current exists, verifies, matches the        release
                   camera serial of unit/identity.yaml and has not expired        setting
disk               free space in the unit data folder >= min_free_mb             required
clock              the clock is not before the release's build time               required
=================  ===========================================================  ==========

Per-unit files read (``DIR/unit``, ``/var/lib/hsi-edge`` on a unit; never written here
except the reports): ``identity.yaml`` (``unit_serial``, ``camera_serial``, ``serials:
{device name: serial}``), ``devices.yaml`` (``device name: url`` overriding the release's
stable names), ``calibration/current/`` (a calibration record).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from deploy.unit import fault_point
from edge.core.config import load_yaml
from edge.core.fileio import sha256_file
from edge.errors import BundleError

__all__ = ["Check", "run_selftest", "format_checks"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Check:
    name: str
    status: str            # PASS | FAIL | SKIP
    reason: str
    required: bool = True
    seconds: float = 0.0


def _yaml(path: Path) -> dict[str, Any]:
    """A unit YAML file ({} when missing); damaged: one-line ConfigError naming it."""
    if not path.exists():
        return {}
    doc = load_yaml(path, what="unit file")
    return doc if isinstance(doc, dict) else {}


def _json(path: Path) -> Any:
    """An installed release's JSON file; missing or damaged: one-line BundleError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read the release's {path.name}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None


def _files(rel: Path) -> tuple[bool | None, str]:
    try:
        manifest = json.loads((rel / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return False, f"{rel / 'manifest.json'}: {exc}"
    bad = []
    for f in manifest["files"]:
        p = rel / f["path"]
        try:
            st = p.stat()
            digest = sha256_file(p)
        except OSError:
            bad.append(f"{f['path']} missing")
            continue
        if st.st_size != f["size"] or digest != f["sha256"]:
            bad.append(f"{f['path']} altered")
        elif st.st_mode & 0o777 != int(f["mode"], 8):
            bad.append(f"{f['path']} mode {st.st_mode & 0o777:04o} != {f['mode']}")
    if bad:
        return False, f"{len(bad)} of {len(manifest['files'])} files: {', '.join(bad[:3])}"
    return True, f"{len(manifest['files'])} files match the manifest"


def run_selftest(release: Path, unit_dir: Path, *, native: bool = True
                 ) -> list[Check]:
    """Run every check of the installed release at ``release``; returns them in order."""
    from edge.pipeline.config import load_app_config
    fault_point("selftest-run")
    manifest = _json(release / "manifest.json")
    settings = _json(release / "selftest.json")
    cfg = load_app_config(str(release / "config" / "unit.yaml"))
    identity = _yaml(unit_dir / "identity.yaml")
    checks: list[Check] = []

    def check(name: str, fn: Callable[[], tuple[bool | None, str]], required: bool = True):
        t0 = time.monotonic()
        try:
            ok, reason = fn()
        except Exception as exc:  # noqa: BLE001  (every failure is a FAIL with its reason)
            ok, reason = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        status = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        checks.append(Check(name, status, reason, required, round(time.monotonic() - t0, 3)))
        log.info("selftest %s: %s %s", name, status, reason)

    check("files", lambda: _files(release))
    golden = release / "golden"
    from deploy.golden import check_chain, check_model
    check("chain-numpy", lambda: check_chain(golden, "numpy", cfg))
    if native:
        from edge.backends.native import native_available
        why = native_available()
        check("chain-native", (lambda: (None, f"no native backend here: {why}")) if why else
              (lambda: check_chain(golden, "native", cfg)))
    if manifest["target"]["compute_capabilities"]:
        from edge.pipeline.backend_factory import cuda_available
        why_not = cuda_available()
        check("chain-cuda", (lambda: (False, why_not)) if why_not else
              (lambda: check_chain(golden, "cuda", cfg)))
    model = manifest.get("model")
    if model:
        card = release / model["card"]
        check("model-onnxruntime", lambda: check_model(golden, card, "onnxruntime"))
        gpu = bool(manifest["target"]["compute_capabilities"])
        if gpu:
            from edge.inference.base import tensorrt_usable
            if tensorrt_usable():
                # the engine the install step built (same cache, same precision: a hit)
                check("model-tensorrt", lambda: check_model(
                    golden, card, "tensorrt", precision=model["engine"]["precision"],
                    cache_dir=str(unit_dir / "engines")))
            else:
                check("model-tensorrt", lambda: (False, "TensorRT is not usable on this unit"))
    check("kernels", lambda: _kernels(release, manifest))
    overrides = _yaml(unit_dir / "devices.yaml")
    for dev in settings.get("devices", []):
        url = str(overrides.get(dev["name"], dev["url"]))
        want = (identity.get("serials") or {}).get(dev["name"])
        check(f"device-{dev['name']}", lambda d=dev, u=url, w=want: _device(d, u, w),
              required=bool(dev.get("required", True)))
    check("calibration", lambda: _calibration(unit_dir, identity, settings),
          required=bool(settings.get("calibration_required", True)))
    check("disk", lambda: _disk(unit_dir, float(settings.get("min_free_mb", 0))))
    check("clock", lambda: _clock(manifest))
    return checks


def _kernels(release: Path, manifest: dict[str, Any]) -> tuple[bool | None, str]:
    if not manifest["target"]["compute_capabilities"]:
        return None, "CPU release: no CUDA kernels"
    kdir = release / "kernels"
    if not kdir.is_dir():
        return None, "the release ships no prebuilt kernels (PTX JIT at first run)"
    from edge.backends.cuda import import_pycuda
    import_pycuda()  # BackendUnavailable -> FAIL with the reason
    cubins = sorted(kdir.rglob("*.cubin")) + sorted(kdir.rglob("*.ptx"))
    loaded = 0
    import pycuda.autoprimaryctx  # noqa: F401  (the primary context, DESIGN.md)
    from pycuda import driver
    for f in cubins:
        try:
            driver.module_from_file(str(f))
            loaded += 1
        except Exception:  # noqa: BLE001  (a cubin for another arch does not load; fine)
            continue
    if not loaded:
        return False, f"none of {len(cubins)} kernel files in {kdir} loads on this GPU"
    return True, f"{loaded} of {len(cubins)} kernel modules load"


def _device(dev: dict[str, Any], url: str, want: str | None) -> tuple[bool, str]:
    import drivers
    if dev["protocol"] == "hsi" and dev["name"] in ("controller", "trigger"):
        d = drivers.open_trigger(url)
    else:
        d = drivers.open_illumination(url, protocol=dev["protocol"])
    try:
        serial = getattr(d, "serial_number", None) or getattr(
            getattr(d, "connection", None), "serial_number", None)
    finally:
        d.close()
    if want and serial != want:
        return False, f"{url} answered as serial {serial!r}, this unit's is {want!r}"
    return True, f"{url}: {dev['protocol']} device, serial {serial}"


def _calibration(unit_dir: Path, identity: dict[str, Any], settings: dict[str, Any]
                 ) -> tuple[bool, str]:
    from calibration.records import CalibrationRecord
    path = unit_dir / "calibration" / "current"
    if not path.exists():
        return False, f"no calibration record at {path} (hsi-edge calibrate capture)"
    record = CalibrationRecord.load(path)  # verifies every checksum
    want = identity.get("camera_serial")
    if want is None:
        return False, f"{unit_dir / 'identity.yaml'} does not name the camera_serial"
    if record.camera_serial != str(want):
        return False, (f"record is of camera {record.camera_serial!r}, this unit's camera is "
                       f"{want!r}")
    created = dt.datetime.fromisoformat(record.created)
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.timezone.utc)
    age = (dt.datetime.now(dt.timezone.utc) - created).total_seconds() / 86400
    limit = float(settings.get("calibration_max_age_days", 365))
    if age > limit:
        return False, f"record is {age:.0f} days old, older than {limit:g} days: recalibrate"
    return True, f"camera {want}, {age:.1f} days old (limit {limit:g})"


def _disk(unit_dir: Path, min_mb: float) -> tuple[bool, str]:
    free = shutil.disk_usage(unit_dir).free / 1e6
    if free < min_mb:
        return False, f"{free:.0f} MB free in {unit_dir}, {min_mb:g} MB needed"
    return True, f"{free:.0f} MB free (>= {min_mb:g})"


def _clock(manifest: dict[str, Any]) -> tuple[bool, str]:
    built = dt.datetime.strptime(manifest["built"]["time"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.timezone.utc)
    now = dt.datetime.now(dt.timezone.utc)
    if now < built - dt.timedelta(days=1):
        return False, (f"the clock says {now:%Y-%m-%d %H:%M}, before the release was built "
                       f"({built:%Y-%m-%d}): set the time (calibration expiry and logs "
                       f"depend on it)")
    return True, f"{now:%Y-%m-%d %H:%M} UTC"


def passed(checks: list[Check]) -> bool:
    return all(c.status != "FAIL" for c in checks if c.required)


def format_checks(checks: list[Check]) -> str:
    lines = [f"{c.status:<4}  {c.name:<18} {c.reason}" +
             ("" if c.required or c.status != "FAIL" else "  (not required)") for c in checks]
    lines.append(("PASS" if passed(checks) else "FAIL") + ": " +
                 f"{sum(c.status == 'PASS' for c in checks)} passed, "
                 f"{sum(c.status == 'FAIL' for c in checks)} failed, "
                 f"{sum(c.status == 'SKIP' for c in checks)} skipped")
    return "\n".join(lines)


def report(checks: list[Check], release: Path, unit_dir: Path) -> dict[str, Any]:
    identity = _yaml(unit_dir / "identity.yaml")
    manifest = json.loads((release / "manifest.json").read_text())
    return {"passed": passed(checks), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "unit_serial": identity.get("unit_serial"), "release": manifest["version"],
            "release_name": manifest["name"], "checks": [dataclasses.asdict(c) for c in checks]}
