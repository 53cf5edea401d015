"""Release files (``RELEASE.yaml``): what goes into a release and which units it is for.

Example (``deploy/examples/cpu-unit.yaml``; relative paths are relative to the release file)::

    format: hsi-edge-release/1
    name: hsi-edge-cpu                # artifact name: <name>-<version>
    version: 0.1.0+cpu1               # release version (default: the hsi-edge version)
    security_version: 1               # monotonic; units refuse lower ones (anti-downgrade)
    device_types: [hsi-edge-x86_64]   # Mender device types
    target:
      arch: [x86_64]
      l4t: null                       # {min: "36.3.0", max: "36.4.99"} for JetPack 6
      cuda_major: null
      tensorrt: null                  # "10.3": TensorRT major.minor
      compute_capabilities: []        # ["8.7"] for Orin
    model: {card: demo, precision: fp32}
    config: cpu-unit.config.yaml      # the unit config (hsi-edge run --config)
    python: {version: "3.11", platform: manylinux_2_28_x86_64}
    wheelhouse: {mode: hsi-edge-only} # or full: every runtime dependency as wheels
    venv: {system_site_packages: true}
    kernels: {build: false, archs: []}
    selftest: {...}                   # see SelftestSpec
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deploy import RELEASE_FORMAT
from edge.core.config import load_config, setting
from edge.errors import ConfigError

__all__ = ["ReleaseSpec", "SelftestSpec", "DeviceSpec", "load_release_spec"]


@dataclass(frozen=True)
class L4TRange:
    min: str
    max: str


@dataclass(frozen=True)
class TargetSpec:
    arch: tuple[str, ...] = ("x86_64",)
    l4t: L4TRange | None = None
    cuda_major: int | None = setting(None, range=(1, 99))
    tensorrt: str | None = None
    compute_capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    #: ``demo`` (the demo model of the config's camera preset), ``none``, or a card path
    card: str = "demo"
    precision: Literal["fp32", "fp16"] = "fp32"


@dataclass(frozen=True)
class PythonSpec:
    version: str = "3.11"
    #: pip platform tag of the unit, e.g. manylinux_2_35_aarch64 (JetPack 6: glibc 2.35);
    #: pip also accepts wheels of older manylinux tags for it
    platform: str = "manylinux_2_28_x86_64"


@dataclass(frozen=True)
class WheelhouseSpec:
    #: full: the hsi-edge wheel and every runtime dependency (``pip download
    #: --only-binary=:all: --platform --python-version``); hsi-edge-only: the hsi-edge wheel,
    #: the dependencies come from the site packages the venv sees (venv.system_site_packages)
    mode: Literal["full", "hsi-edge-only"] = "full"
    #: hsi-edge extras whose dependencies go into a full wheelhouse (e.g. [cuda])
    extras: tuple[str, ...] = ()
    #: packages with no wheel for the target, shipped as sdists and built on the unit
    #: (e.g. [pycuda] on JetPack)
    sdists: tuple[str, ...] = ()


@dataclass(frozen=True)
class VenvSpec:
    #: the release venv sees the site packages of the interpreter it is made from
    #: (JetPack's TensorRT is a system package)
    system_site_packages: bool = False


@dataclass(frozen=True)
class KernelsSpec:
    #: run ``hsi-edge kernels build`` (needs nvcc on the build machine)
    build: bool = False
    archs: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceSpec:
    """A serial device the self-test opens and identifies."""

    name: str
    protocol: Literal["hsi", "lumencor"] = "hsi"
    #: stable name from the release's udev rules; a unit may override it in
    #: unit/devices.yaml (``name: url``)
    url: str = "/dev/hsi-controller"
    required: bool = True


@dataclass(frozen=True)
class GoldenSpec:
    preset: str | None = None     # None: the config's camera preset
    rows: int = setting(32, range=(4, 512))
    cols: int = setting(40, range=(4, 512))
    seed: int = setting(7, range=(0, 2**31))


@dataclass(frozen=True)
class SelftestSpec:
    timeout_s: float = setting(300.0, range=(1.0, 86400.0))
    max_failed_starts: int = setting(3, range=(1, 100))
    calibration_required: bool = True
    calibration_max_age_days: float = setting(365.0, range=(0.0, 36500.0))
    min_free_mb: float = setting(200.0, range=(0.0, 1e7))
    devices: tuple[DeviceSpec, ...] = ()
    golden: GoldenSpec = setting(default_factory=GoldenSpec)


@dataclass(frozen=True)
class ReleaseSpec:
    format: str
    name: str
    security_version: int = setting(range=(0, 2**31))
    device_types: tuple[str, ...] = ()
    version: str | None = None
    target: TargetSpec = setting(default_factory=TargetSpec)
    model: ModelSpec = setting(default_factory=ModelSpec)
    config: str | None = None
    python: PythonSpec = setting(default_factory=PythonSpec)
    wheelhouse: WheelhouseSpec = setting(default_factory=WheelhouseSpec)
    venv: VenvSpec = setting(default_factory=VenvSpec)
    kernels: KernelsSpec = setting(default_factory=KernelsSpec)
    selftest: SelftestSpec = setting(default_factory=SelftestSpec)
    #: source checkout of the hsi-edge wheel (default: the checkout this code runs from)
    source: str | None = None
    #: where the spec was loaded from (relative paths are relative to its folder)
    path: str = field(default="", metadata={"internal": True})

    def resolve(self, rel: str) -> Path:
        p = Path(rel).expanduser()
        return p if p.is_absolute() else Path(self.path).parent / p


def load_release_spec(path: str | os.PathLike) -> ReleaseSpec:
    """Load and check a release file (one-line ConfigError naming file and key)."""
    import dataclasses
    spec = load_config(ReleaseSpec, path)
    if spec.format != RELEASE_FORMAT:
        raise ConfigError(f"{path}: format: expected {RELEASE_FORMAT!r}, got {spec.format!r}")
    if not spec.device_types:
        raise ConfigError(f"{path}: device_types: expected at least one Mender device type")
    return dataclasses.replace(spec, path=str(Path(path).resolve()))
