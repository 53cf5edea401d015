"""The unit's fingerprint, stored with every latency result, and its hardware key.

Results are compared only between equal hardware keys (``hsi-edge latency compare`` refuses
otherwise unless ``--allow-different-hardware``).  The key covers what sets the speed of the
unit and does not change with a release: CPU model, core count and governor, GPU name, Jetson
model, power mode and clock lock.  Software (L4T, driver, CUDA, TensorRT, ONNX Runtime, NumPy,
Python, hsi-edge and its commit) and the run's settings are shown next to a comparison, since a
release is exactly what changes them.  Volatile readings (current clock, temperature) are left
out of the key: pytest-benchmark's ``hz_actual`` in its machine info made users see "machine_info
is different" on one machine (pytest-benchmark #255, ../shared/research/latency_preview.md A.2).

Every probe is optional: a missing file or tool gives ``None``, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
from pathlib import Path
from typing import Any

from edge.core.hostinfo import parse_cpu_model, parse_l4t, parse_nvcc_release
from edge.latency.clocks import parse_jetson_clocks, parse_nvpmodel, run_command

__all__ = ["collect", "hardware_key", "HARDWARE_FIELDS", "software_differences"]

log = logging.getLogger(__name__)

#: Fields of the fingerprint that make up the hardware key.
HARDWARE_FIELDS = ("machine", "cpu_model", "cpu_cores", "cpu_governor", "gpu_name",
                   "jetson_model", "jetson_power_mode", "jetson_clocks_locked")
_REPO = Path(__file__).resolve().parents[2]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    out = run_command(cmd, timeout)
    return None if out is None else out.strip()


def _cpu_model() -> str | None:
    return parse_cpu_model(_read("/proc/cpuinfo") or "") or platform.processor() or None


def _gpu() -> dict[str, Any]:
    """GPU name and driver from nvidia-smi when it is on PATH (dGPU only; absent on Jetson)."""
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if not out:
        return {"gpu_name": None, "gpu_driver": None}
    name, _, driver = out.splitlines()[0].partition(",")
    return {"gpu_name": name.strip() or None, "gpu_driver": driver.strip() or None}


def _jetson() -> dict[str, Any]:
    """Jetson model, power mode (nvpmodel), clock lock and L4T release where present."""
    model = _read("/proc/device-tree/model")
    model = model.rstrip("\x00") if model else None
    l4t = _read("/etc/nv_tegra_release")
    if l4t:
        l4t = parse_l4t(l4t) or l4t.splitlines()[0]
    power = parse_nvpmodel(_run(["nvpmodel", "-q"]))
    locked = None
    if l4t or (model and "jetson" in model.lower()):
        # jetson_clocks --show needs root; report None when it cannot be asked
        locked = parse_jetson_clocks(_run(["jetson_clocks", "--show"]))
    jetson = bool(l4t) or bool(model and "jetson" in model.lower())
    return {"jetson_model": model if jetson else None, "jetson_power_mode": power,
            "jetson_clocks_locked": locked, "l4t": l4t}


def _versions() -> dict[str, Any]:
    import numpy

    from edge import __version__

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": numpy.__version__,
                           "hsi_edge": __version__}
    for mod, key in (("onnxruntime", "onnxruntime"), ("tensorrt", "tensorrt")):
        try:
            out[key] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - any failure means "not usable here"
            out[key] = None
    cuda = _run(["nvcc", "--version"])
    out["cuda"] = parse_nvcc_release(cuda or "")
    out["git_commit"] = _run(["git", "-C", str(_REPO), "rev-parse", "HEAD"])
    dirty = _run(["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"])
    out["git_dirty"] = None if out["git_commit"] is None else bool(dirty)
    return out


def collect(run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fingerprint of this machine, plus ``run`` (model/engine hashes, precision, frame
    shape, frame rate, backend, runtime) as given by the caller.

    Returns
    -------
    dict
        JSON-able; ``hardware_key`` is included.
    """
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    fp: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(),
                          "cpu_model": _cpu_model(), "cpu_cores": cores,
                          "cpu_governor": governor}
    fp.update(_gpu())
    fp.update(_jetson())
    fp.update(_versions())
    fp["run"] = dict(run or {})
    fp["hardware_key"] = hardware_key(fp)
    return fp


def hardware_key(fp: dict[str, Any]) -> str:
    """A readable, stable key of the hardware fields: ``<machine>-<cpu>-<n>c-<gpu>-<hash8>``."""
    hw = {k: fp.get(k) for k in HARDWARE_FIELDS}
    digest = hashlib.sha256(json.dumps(hw, sort_keys=True).encode()).hexdigest()[:8]

    def slug(s: Any, n: int = 24) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", str(s)).strip("_")[:n] or "none"

    gpu = fp.get("jetson_model") or fp.get("gpu_name") or "nogpu"
    return f"{slug(fp.get('machine'), 12)}-{slug(fp.get('cpu_model'))}-{fp.get('cpu_cores')}c-" \
           f"{slug(gpu)}-{digest}"


def software_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields outside the hardware key that differ: name -> (A, B); run settings as run.NAME."""
    skip = set(HARDWARE_FIELDS) | {"hardware_key", "run"}
    out = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
           if k not in skip and a.get(k) != b.get(k)}
    ra, rb = a.get("run", {}), b.get("run", {})
    # the arm's label ("A", "B") always differs and says nothing about the software
    out.update({f"run.{k}": (ra.get(k), rb.get(k)) for k in sorted(set(ra) | set(rb))
                if k != "label" and ra.get(k) != rb.get(k)})
    return out
