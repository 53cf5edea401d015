"""Camera presets of the simulated camera.

======== ===================== ========== ========== ======= ===== ====================
preset   bands                 resolution FWHM       bits    fps   modelled on
======== ===================== ========== ========== ======= ===== ====================
tivita   100, 500-1000 nm      480 × 640  10 nm      10      10    TIVITA push-broom
snapshot16 16, 460-600 nm      256 × 512  15 nm      10      25    4×4 mosaic snapshot
snapshot25 25, 665-960 nm      217 × 409  20 nm      10      25    5×5 mosaic snapshot
======== ===================== ========== ========== ======= ===== ====================

- ``tivita``: grid ``np.linspace(500, 1000, 100)`` and 480×640, 10-bit raw (FACTS.md, "TIVITA
  cube files").  The real camera scans for seconds per cube; the simulator delivers frames at
  a video-like 10 fps so pipelines can be exercised.
- ``snapshot16``: a 4×4 mosaic sensor (VIS) on a 2048×1088 CMOSIS CMV2000-class chip gives
  about 272×512 spectral pixels; we use 256×512 (a cropped active area, both multiples of 16
  so the networks' stride-32 encoders need no padding beyond 256/512).
- ``snapshot25``: 217×409 spectral pixels, typical of 5×5 mosaic sensors (2048×1088 chip with
  a 5-pixel pitch, minus the border); 665-960 nm as in DKFZ snapshot laparoscopy (Ayala et al.,
  Sci. Adv. 2023).  Bands are spaced evenly here; real mosaic filters are not exactly even.

Band FWHM values are typical, not measured (documented defaults; override with ``fwhm_nm``).
``rows``/``cols`` may be overridden per camera (e.g. small frames in tests): the view keeps
its field of view (``field_of_view_mm``, the width of the view), so its pixels get larger.

Sensor per preset (:class:`SensorSpec`, used by :meth:`drivers.sim.sensor.SensorModel.
for_preset`; sources in /work/shared/research/science.md section 2 and FACTS.md):

- ``tivita``: a push-broom camera that scans for seconds per cube (about 7 s, 640 lines: about
  10 ms per line, Kulcke 2018 via htc ``tivita/hsi.py``) and delivers float reflectance, not
  raw counts.  Its detector resolves finer than 100 bands × 480 rows, so every delivered
  spectral pixel averages several detector samples.  Modelled as ``reads_per_pixel = 4``
  averaged reads of the generic 10 ke⁻ / 10 e⁻ sensor (**unverified**: no published per-band
  SNR; science.md: "a single 10 ms exposure is probably too noisy").
- ``snapshot16``/``snapshot25``: the CMOSIS CMV2000 of the XIMEA mosaic cameras, full well
  13.5 ke⁻ and read noise 13 e⁻ (datasheet figures quoted from memory in science.md:
  **unverified**).  Mosaic ``n×n`` filters over the chip: each band sits at its own position
  in the super-pixel (row-major in wavelength order -- an assumption: real layouts are
  scrambled), so the bands of one spectral pixel see the scene up to ±(n−1)/(2n) pixel apart
  (no demosaicing, as the vendor cube delivers them), and each filter pixel picks up light of
  its four mosaic neighbours (``neighbour_crosstalk`` 2 % each) and of every other band through
  its Fabry–Pérot side-lobes (``sidelobe_leak`` 10 % spread over the other bands): both
  **unverified** round figures; Mühle et al. (JBO 2021) found one of three snapshot cameras only
  moderately faithful.  The camera applies the inverse of that crosstalk matrix (the vendor's
  correction matrix, assumed exact), which restores the mean and amplifies and correlates
  the noise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edge.errors import ConfigError
from edge.physics.spectra import FWHM_RANGE_NM

__all__ = ["CameraPreset", "SensorSpec", "PRESETS", "get_preset", "BIT_DEPTHS",
           "TEXTURE_SIGMA_MM"]

#: ADC bit depths the simulated sensor supports.
BIT_DEPTHS: tuple[int, ...] = (8, 10, 12, 14, 16)
#: σ (mm) of the Gaussian filter that makes the scenes' fine tissue texture (its
#: autocorrelation is a Gaussian of σ·√2 ≈ 2 mm): between the diffuse spread of light 1/µeff,
#: about 0.4 mm at 560 nm and 4 mm at 800 nm (science.md defect 8), so no texture finer than
#: light itself blurs it in the NIR.
TEXTURE_SIGMA_MM = 1.5


@dataclass(frozen=True)
class SensorSpec:
    """Noise sources of a preset's sensor (see the module docstring for the sources).

    Attributes
    ----------
    full_well_e, read_noise_e : float
        Electrons at full scale (gain 1) and read noise (e⁻ rms) of one detector read.
    reads_per_pixel : int
        Detector reads averaged into one delivered spectral pixel (push-broom binning):
        shot noise and read noise fall by √reads against one read at the same mean.
    mosaic : int
        Filter mosaic size ``n`` (``n×n`` bands per super-pixel); 0 = no mosaic.
    neighbour_crosstalk : float
        Fraction of each of the four mosaic neighbours' light a filter pixel picks up.
    sidelobe_leak : float
        Fraction of a filter pixel's signal that is light of the other bands (side-lobes),
        spread evenly over them.
    """

    full_well_e: float = 10_000.0
    read_noise_e: float = 10.0
    reads_per_pixel: int = 1
    mosaic: int = 0
    neighbour_crosstalk: float = 0.0
    sidelobe_leak: float = 0.0


@dataclass(frozen=True)
class CameraPreset:
    """Geometry and spectral layout of a simulated camera.

    Attributes
    ----------
    name : str
    wavelengths : tuple of float
        Band centres, nm, ascending.
    rows, cols : int
        Frame size in spectral pixels.
    fwhm_nm : float
        Gaussian band FWHM in nm.
    bit_depth : int
        ADC bit depth.
    fps : float
        Nominal frame rate (free-run, realtime pacing and scene time).
    field_of_view_mm : float
        Width of the view on the tissue, mm (sets the pixel size, :attr:`pixel_mm`).
        **Unverified** round figures: TIVITA about 300 mm at its 50 cm working distance,
        snapshot laparoscopes about 70 mm at a few cm.
    sensor : SensorSpec
        The sensor's noise sources.
    """

    name: str
    wavelengths: tuple[float, ...]
    rows: int
    cols: int
    fwhm_nm: float
    bit_depth: int = 10
    fps: float = 25.0
    field_of_view_mm: float = 300.0
    sensor: SensorSpec = SensorSpec()

    @property
    def bands(self) -> int:
        return len(self.wavelengths)

    @property
    def pixel_mm(self) -> float:
        """Size of one spectral pixel on the tissue, mm (field of view / cols)."""
        return self.field_of_view_mm / self.cols

    def wavelength_array(self) -> np.ndarray:
        """Band centres as float64 ndarray of shape (bands,)."""
        return np.asarray(self.wavelengths, dtype=np.float64)


def _grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    return tuple(float(x) for x in np.linspace(lo, hi, n))


_CMV2000 = dict(full_well_e=13_500.0, read_noise_e=13.0, neighbour_crosstalk=0.02,
                sidelobe_leak=0.10)
PRESETS: dict[str, CameraPreset] = {
    "tivita": CameraPreset("tivita", _grid(500.0, 1000.0, 100), 480, 640, 10.0, 10, 10.0,
                           field_of_view_mm=300.0, sensor=SensorSpec(reads_per_pixel=4)),
    "snapshot16": CameraPreset("snapshot16", _grid(460.0, 600.0, 16), 256, 512, 15.0, 10, 25.0,
                               field_of_view_mm=70.0, sensor=SensorSpec(mosaic=4, **_CMV2000)),
    "snapshot25": CameraPreset("snapshot25", _grid(665.0, 960.0, 25), 217, 409, 20.0, 10, 25.0,
                               field_of_view_mm=70.0, sensor=SensorSpec(mosaic=5, **_CMV2000)),
}


def _positive_int(name: str, value: object, hi: int = 8192) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= hi:
        raise ConfigError(f"{name}: expected an integer 1-{hi}, got {value!r}")
    return int(value)


def get_preset(name: str, *, rows: int | None = None, cols: int | None = None,
               bit_depth: int | None = None, fps: float | None = None,
               fwhm_nm: float | None = None) -> CameraPreset:
    """Return a preset, optionally with rows/cols/bit depth/fps/FWHM overridden.

    Raises
    ------
    ConfigError
        For an unknown preset name or an invalid override (the message names the parameter,
        shows the value and says what is allowed).
    """
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown camera preset {name!r}; allowed: "
                          f"{', '.join(PRESETS)}")
    p = PRESETS[name]
    changes: dict[str, object] = {}
    if rows is not None:
        changes["rows"] = _positive_int("rows", rows)
    if cols is not None:
        changes["cols"] = _positive_int("cols", cols)
    if bit_depth is not None:
        if isinstance(bit_depth, bool) or bit_depth not in BIT_DEPTHS:
            raise ConfigError(f"bit_depth: expected one of {', '.join(map(str, BIT_DEPTHS))}, "
                              f"got {bit_depth!r}")
        changes["bit_depth"] = int(bit_depth)
    if fps is not None:
        if not (isinstance(fps, (int, float)) and np.isfinite(fps) and 0 < fps <= 10_000):
            raise ConfigError(f"fps: expected frames per second in (0, 10000], got {fps!r}")
        changes["fps"] = float(fps)
    if fwhm_nm is not None:
        lo, hi = FWHM_RANGE_NM
        if not (isinstance(fwhm_nm, (int, float)) and np.isfinite(fwhm_nm)
                and lo <= fwhm_nm <= hi):
            raise ConfigError(f"fwhm_nm: expected nm in [{lo:g}, {hi:g}], got {fwhm_nm!r}")
        changes["fwhm_nm"] = float(fwhm_nm)
    return replace(p, **changes) if changes else p
