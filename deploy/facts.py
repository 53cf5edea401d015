"""What a unit is (architecture, device type, L4T, CUDA, TensorRT, GPU) and whether a
release's target constraints admit it.

Facts come from the unit itself (:func:`read_unit_facts`: ``platform.machine()``,
``/etc/nv_tegra_release``, ``tensorrt.__version__``, the CUDA runtime, ``nvidia-smi``) or, on
workstations and in tests, from a YAML file (:func:`load_facts`)::

    arch: aarch64
    device_type: hsi-edge-orin        # Mender device type
    l4t: "36.4.0"                     # null: not a Jetson
    cuda: "12.6"                      # null: no CUDA
    tensorrt: "10.3.0.30"             # null: no TensorRT
    compute_capabilities: ["8.7"]     # [] : no GPU

A release's ``target`` (inner manifest) holds the constraints; :func:`check_target` returns
one line per constraint that does not hold, naming it, the unit's value and what the
release needs.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.core.config import load_config, setting
from edge.core.hostinfo import parse_l4t, parse_nvcc_release

__all__ = ["UnitFacts", "read_unit_facts", "load_facts", "check_target", "parse_l4t",
           "version_tuple"]

log = logging.getLogger(__name__)

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
#: Mender keeps the device type here (``device_type=...``); hsi-edge units may use their own.
DEVICE_TYPE_FILES = (Path("/var/lib/mender/device_type"), Path("/etc/hsi-edge/device_type"))


@dataclass(frozen=True)
class UnitFacts:
    """The facts a release's target constraints are checked against."""

    arch: str = setting(doc="CPU architecture, platform.machine(): x86_64, aarch64")
    device_type: str | None = None
    l4t: str | None = None
    cuda: str | None = None
    tensorrt: str | None = None
    compute_capabilities: tuple[str, ...] = field(default_factory=tuple)


def load_facts(path: str | os.PathLike) -> UnitFacts:
    """Facts from a YAML file (unknown keys and wrong types refused with file and key)."""
    return load_config(UnitFacts, path)


def version_tuple(text: str) -> tuple[int, ...]:
    """``"36.4.0"`` -> ``(36, 4, 0)`` (non-numeric tails ignored: ``"10.3.0.30"`` fine)."""
    out = []
    for part in str(text).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def _device_type() -> str | None:
    for path in DEVICE_TYPE_FILES:
        try:
            for line in path.read_text().splitlines():
                if line.startswith("device_type="):
                    return line.split("=", 1)[1].strip()
        except OSError:
            continue
    return None


def _tensorrt_version() -> str | None:
    try:
        import tensorrt  # noqa: PLC0415  (optional, JetPack's system package)
    except Exception:  # noqa: BLE001  (absent or broken: the unit has no usable TensorRT)
        return None
    return getattr(tensorrt, "__version__", None)


def _cuda_version() -> str | None:
    for path in (Path("/usr/local/cuda/version.json"),):
        try:
            import json
            return json.loads(path.read_text())["cuda"]["version"]
        except (OSError, ValueError, KeyError):
            pass
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                    if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc:
        try:
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return parse_nvcc_release(out)
    return None


def _compute_capabilities() -> tuple[str, ...]:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            caps = tuple(sorted({v.strip() for v in out.stdout.split() if v.strip()}))
            if out.returncode == 0 and caps:
                return caps
        except (OSError, subprocess.SubprocessError):
            pass
    if NV_TEGRA_RELEASE.exists():  # Jetson iGPUs are not listed by nvidia-smi on every L4T
        try:
            from pycuda import driver  # noqa: PLC0415
            driver.init()
            return tuple(sorted({"%d.%d" % driver.Device(i).compute_capability()
                                 for i in range(driver.Device.count())}))
        except Exception:  # noqa: BLE001
            return ()
    return ()


def read_unit_facts() -> UnitFacts:
    """The facts of the machine this runs on (each probe that fails gives None / empty)."""
    l4t = None
    try:
        l4t = parse_l4t(NV_TEGRA_RELEASE.read_text())
    except OSError:
        pass
    facts = UnitFacts(arch=platform.machine(), device_type=_device_type(), l4t=l4t,
                      cuda=_cuda_version(), tensorrt=_tensorrt_version(),
                      compute_capabilities=_compute_capabilities())
    log.info("unit facts: %s", facts)
    return facts


def check_target(target: dict[str, Any], device_types: list[str], facts: UnitFacts) -> list[str]:
    """Reasons the unit does not satisfy ``target`` (empty list: it does).

    Parameters
    ----------
    target : dict
        The inner manifest's ``target``: ``arch`` (list), ``l4t`` ({min, max} or None),
        ``cuda_major`` (int or None), ``tensorrt`` ("major.minor" or None),
        ``compute_capabilities`` (list, empty: no GPU needed).
    device_types : list of str
        The artifact's compatible Mender device types.
    facts : UnitFacts
    """
    bad: list[str] = []
    arch = list(target.get("arch") or [])
    if arch and facts.arch not in arch:
        bad.append(f"target.arch: this unit is {facts.arch}, the release is for {', '.join(arch)}")
    if facts.device_type is not None and device_types and facts.device_type not in device_types:
        bad.append(f"device_type: this unit is {facts.device_type!r}, the release is for "
                   f"{', '.join(map(repr, device_types))}")
    l4t = target.get("l4t")
    if l4t:
        want = f"L4T {l4t['min']} to {l4t['max']}"
        if facts.l4t is None:
            bad.append(f"target.l4t: this unit has no L4T (no {NV_TEGRA_RELEASE}), the release "
                       f"needs {want}")
        elif not (version_tuple(l4t["min"]) <= version_tuple(facts.l4t)
                  <= version_tuple(l4t["max"])):
            bad.append(f"target.l4t: this unit has L4T {facts.l4t}, the release needs {want}")
    cuda_major = target.get("cuda_major")
    if cuda_major is not None:
        got = version_tuple(facts.cuda)[:1] if facts.cuda else ()
        if got != (int(cuda_major),):
            bad.append(f"target.cuda_major: this unit has CUDA {facts.cuda or 'none'}, the "
                       f"release needs CUDA {cuda_major}.x")
    trt = target.get("tensorrt")
    if trt:
        got = version_tuple(facts.tensorrt)[:2] if facts.tensorrt else ()
        if got != version_tuple(trt)[:2]:
            bad.append(f"target.tensorrt: this unit has TensorRT {facts.tensorrt or 'none'}, "
                       f"the release needs TensorRT {trt}.x")
    caps = [str(c) for c in target.get("compute_capabilities") or []]
    if caps:
        have = list(facts.compute_capabilities)
        if not have:
            bad.append(f"target.compute_capabilities: this unit has no GPU, the release needs "
                       f"compute capability {', '.join(caps)}")
        elif not set(have) <= set(caps):
            bad.append(f"target.compute_capabilities: this unit's GPU is compute capability "
                       f"{', '.join(have)}, the release has kernels for {', '.join(caps)}")
    return bad
