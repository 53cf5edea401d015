"""Settings of ``hsi-edge run``: one YAML file, loaded into frozen dataclasses.

Example (every key optional; these are the defaults)::

    camera:
      source: simulated        # simulated | replay | bench (simulated camera + controller sim)
      preset: null             # tivita | snapshot16 | snapshot25; null: tivita, or for
                               # replay the preset recorded in recording.json
      rows: null               # override the preset's resolution
      cols: null
      seed: 0
      fps: null                # null: as fast as possible; a number: real-time pacing
      exposure_us: 8000
      gain: 1.0
      replay_path: null        # .dat / .hdr / .npz folder / .npy for source: replay
      loop: false
      fwhm_nm: null            # band FWHM (nm); null: the preset's, or for replay the
                               # recording's (recording.json / ENVI fwhm), else point-sampled
    calibration:
      record: null             # a record folder from `hsi-edge calibrate capture`; null:
                               # capture dark and white references at start
      frames: 8                # frames averaged per reference when capturing at start
      rho_ref: 0.99
      expiry_policy: warn      # warn | refuse | uncalibrated: what an expired record does
      force_quantitative: false  # a FAILED record yields StO2 maps only when true
      history: null            # calibration history folder; null: beside the record
      thresholds: null         # site limits over calibration/thresholds.yaml (YAML file)
    processing:
      backend: auto            # auto | numpy | native | cuda
      chromophores: null       # e.g. [HbO2, Hb, water, fat]; null: recommended for the bands
      baseline: null           # e.g. [constant, linear]
      register: null           # resample a mosaic camera's bands to one kernel before the
                               # chain (edge/processing/register.py): null: when the camera
                               # or recording reports band_offsets, true: required, false: off
      quality: null            # StO2 standard error (sto2_sigma) and validity mask: null
                               # or true: on (every backend: numpy, native, cuda), false: off
      spatial: bilateral       # none | bilateral: edge-preserving step on StO2 and the
                               # StO2 index (needs quality)
      spatial_radius: null     # half-width of its window in pixels, 1-8 (3: 7x7, 5: 11x11);
                               # null: the one chosen per preset, the StO2 table's
                               # spatial_radius header (3 where it has none)
      spatial_h: null          # its range kernel h (absorbance), 0.005-1; null: the
                               # table's spatial_h header (0.08 where it has none)
      max_sigma: 0.05          # StO2 standard error above which a pixel is 'uncertain'
      min_blood_volume: 0.0015 # 'low_blood' below the THb of this blood volume fraction
      specular_min_reflectance: 0.6   # 'specular' where the darkest band is brighter
      model_sigma: null        # model error added to sto2_sigma (fraction); null: the
                               # table's fitted term (tools/fit_sto2_model_error.py: a
                               # constant and a part growing with the guide's local
                               # contrast), else its residual on simulated spectra
      sto2_table: null         # StO2 calibration table: null: the grid's base table
                               # (edge/processing/data/sto2_<preset>.csv); a variant name
                               # shipped for the grid, e.g. human (fitted on tissue with
                               # brown pigment); or a path to a .csv table (relative: to
                               # the working directory) fitted for this grid and unmixer
      temporal:                # motion-gated recursive average over frames (video; needs
                               # quality; edge/processing/temporal.py)
        method: none           # none | recursive
        window: 8              # bound of the effective number of averaged frames (2-64)
        gate: 4.0              # guide change (over its noise) above which a pixel restarts
      counts_per_electron: null  # sensor noise at gain 1; null: the camera's (simulated)
      read_noise_counts: null    # (a replay without these has no sto2_sigma)
    model:
      card: demo               # demo | none | path to a model card YAML
      runtime: auto            # auto | onnxruntime | tensorrt
      precision: auto          # TensorRT: auto | fp16 | fp32 (auto: fp16 where this TensorRT
                               # can build it from the card -- FP16 flag on 10.x, the card's
                               # onnx_fp16 on 11.x -- else fp32)
      threads: null
    pipeline:
      queue_size: 2
      drop_policy: auto        # auto (newest when fps is set, else block) | newest | block
      read_timeout_s: 5.0
    sinks:
      png_every: 10            # 0 disables
      npz_every: 10            # 0 disables
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from drivers.camera import DEFAULT_EXPOSURE_US
from edge.core.config import load_config, setting
from edge.errors import ConfigError
from edge.physics.spectra import BASELINE_TERMS, CHROMOPHORES, FWHM_RANGE_NM

#: Names the unmixing knows, checked when the file is loaded (not after the references).
Chromophore = Literal[CHROMOPHORES]
BaselineTerm = Literal[BASELINE_TERMS]

__all__ = ["AppConfig", "CameraSettings", "CalibrationSettings", "ProcessingSettings",
           "TemporalSettings",
           "ModelSettings", "PipelineSettings", "SinkSettings", "load_app_config"]


@dataclass(frozen=True)
class CameraSettings:
    source: Literal["simulated", "replay", "bench"] = "simulated"
    # None: tivita for simulated cameras; a replay takes the preset its recording.json names
    # (a value given here must agree with it)
    preset: Literal["tivita", "snapshot16", "snapshot25"] | None = None
    rows: int | None = setting(None, range=(1, 8192))
    cols: int | None = setting(None, range=(1, 8192))
    seed: int = setting(0, range=(0, 2**32 - 1))
    fps: float | None = setting(None, range=(0.01, 10000.0))
    exposure_us: float = setting(DEFAULT_EXPOSURE_US, range=(10.0, 1e6))
    gain: float = setting(1.0, range=(1.0, 16.0))
    replay_path: str | None = None
    loop: bool = False
    # Band FWHM in nm: overrides the preset's for simulated cameras; tells the unmixing the
    # band width of a replayed recording (null: point-sampled bands)
    fwhm_nm: float | None = setting(None, range=FWHM_RANGE_NM)


@dataclass(frozen=True)
class CalibrationSettings:
    record: str | None = None
    frames: int = setting(8, range=(1, 1000))
    rho_ref: float = setting(0.99, range=(0.01, 1.0))
    # What an expired record does (edge/pipeline/calibration_policy.py): warn and mark every
    # output, refuse to run, or run uncalibrated (no flat field, no quantitative maps)
    expiry_policy: Literal["warn", "refuse", "uncalibrated"] = "warn"
    # A FAILED record yields StO2 maps only when forced
    force_quantitative: bool = False
    # History of calibrations and quick checks (null: <record folder>/../calibration-history)
    history: str | None = None
    # Site limits over calibration/thresholds.yaml: a YAML file {check: {warn:, fail:}}
    thresholds: str | None = None


@dataclass(frozen=True)
class TemporalSettings:
    """``processing.temporal``: edge.processing.temporal.TemporalParams."""
    method: Literal["none", "recursive"] = "none"
    window: int = setting(8, range=(2, 64))
    gate: float = setting(4.0, range=(0.01, 100.0))


@dataclass(frozen=True)
class ProcessingSettings:
    backend: Literal["auto", "numpy", "native", "cuda"] = "auto"
    # None: the basis recommended for the camera's band set
    # (edge.processing.unmixing.recommended_components)
    chromophores: tuple[Chromophore, ...] | None = None
    baseline: tuple[BaselineTerm, ...] | None = None
    # Band registration of a mosaic camera (edge.processing.register): None: when the camera
    # reports band_offsets, True: required, False: off
    register: bool | None = None
    # StO2 quality (issue 14, edge.processing.quality): sigma map, validity bits, spatial step
    quality: bool | None = None
    spatial: Literal["none", "bilateral"] = "bilateral"
    # None: the StO2 table's spatial_radius header (chosen per preset), else 3
    spatial_radius: int | None = setting(None, range=(1, 8))
    # None: the StO2 table's spatial_h header (chosen per preset), else 0.08
    spatial_h: float | None = setting(None, range=(0.005, 1.0))
    max_sigma: float | None = setting(0.05, range=(0.001, 1.0))
    min_blood_volume: float | None = setting(0.0015, range=(0.0001, 0.2))
    specular_min_reflectance: float | None = setting(0.6, range=(0.01, 2.0))
    model_sigma: float | None = setting(None, range=(0.0, 1.0))
    # StO2 table (edge.processing.sto2.Sto2Calibration.select): None: the grid's base table;
    # a shipped variant's name (e.g. "human"); a path to a .csv table (working directory)
    sto2_table: str | None = None
    # Sensor noise at gain 1 (None: the camera's own, SimulatedCamera.sensor_noise)
    counts_per_electron: float | None = setting(None, range=(1e-6, 1e6))
    read_noise_counts: float | None = setting(None, range=(0.0, 1e6))
    # Motion-gated temporal step (video), after the spatial one
    temporal: TemporalSettings = setting(default_factory=TemporalSettings)

    def __post_init__(self) -> None:
        t = self.sto2_table
        if t is None or t.lower().endswith(".csv"):
            return
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", t):
            raise ConfigError(f"sto2_table: expected null, a shipped variant name (letters, "
                              f"digits, '_', '-'; e.g. human) or a path ending in .csv, "
                              f"got {t!r}")


@dataclass(frozen=True)
class ModelSettings:
    card: str = "demo"
    runtime: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    precision: Literal["auto", "fp16", "fp32"] = "auto"
    threads: int | None = setting(None, range=(1, 256))


@dataclass(frozen=True)
class PipelineSettings:
    queue_size: int = setting(2, range=(1, 1024))
    drop_policy: Literal["auto", "newest", "block"] = "auto"
    read_timeout_s: float = setting(5.0, range=(0.01, 600.0))


@dataclass(frozen=True)
class SinkSettings:
    png_every: int = setting(10, range=(0, 1_000_000))
    npz_every: int = setting(10, range=(0, 1_000_000))


@dataclass(frozen=True)
class AppConfig:
    camera: CameraSettings = setting(default_factory=CameraSettings)
    calibration: CalibrationSettings = setting(default_factory=CalibrationSettings)
    processing: ProcessingSettings = setting(default_factory=ProcessingSettings)
    model: ModelSettings = setting(default_factory=ModelSettings)
    pipeline: PipelineSettings = setting(default_factory=PipelineSettings)
    sinks: SinkSettings = setting(default_factory=SinkSettings)


def load_app_config(path: str | None) -> AppConfig:
    """Load ``path`` (None: all defaults); raises ConfigError with file and key path."""
    return load_config(AppConfig, path)
