"""StO2 quality: per-pixel standard error (delta method) and the validity rules (issue 14).

Noise model
-----------
A raw count ``I`` of a band is shot noise on the photo-electrons plus read noise::

    var(I) = K * max(I - D, 0) + r**2          (counts**2)

with ``K`` the counts per electron at the frame's gain and ``r`` the read noise in counts
(:class:`NoiseModel`; both are the camera's sensor parameters -- for the simulated camera
``drivers.sim.sensor.SensorModel.counts_per_e * gain`` and ``read_noise_counts``, whose
``expose`` draws exactly this variance; science.md section 2 checked the algebra).  The dark
``D`` is the flat field's.  Reflectance is ``R = (I - D) * scale``, so the scale cancels in the
absorbance variance::

    var(A_b) = var(ln R_b) = var(I_b) / (I_b - D_b)**2           (first order)

A snapshot mosaic camera corrects filter crosstalk ``C`` (bands, bands: measured counts
``x_in = C x``) on the counts (``x_out = pinv(C) x_in``), which mixes the noise of the bands:
with :attr:`NoiseModel.crosstalk` the variance is propagated through the correction (the shot
noise from the uncorrected counts ``C x_out``), see :func:`sto2_raw_variance_mixed`.  Mosaic
misregistration is not noise and is not in sigma.  The band registration
(:mod:`edge.processing.register`) averages neighbours with each band's kernel, which lowers
band ``b``'s variance by ``g_b`` (:attr:`NoiseModel.band_gain`); it is carried as
``sqrt(g_b)`` on the correction's output bands (``C = I`` without crosstalk), i.e. the
covariance of bands ``a, b`` as ``sqrt(g_a g_b)`` times the unregistered one: exact for one
band, an upper bound (Cauchy-Schwarz) on the overlap of two bands' kernels.  Registered
neighbours share noise, so the spatial step's mean does not gain from the registration; its
propagated variance is divided by :func:`registration_gain` (:func:`finish_quality`).

The noise of the averaged white and dark references (a fixed pattern, 8 frames by default:
about 0.6 % in science.md) is not included: it is the same in every frame of a run.

Delta method
------------
The unmixing is linear, ``c = P A`` (P the pseudo-inverse), so with ``c_o``/``c_d`` the HbO2/Hb
rows, ``T = c_o + c_d`` and raw StO2 ``s = c_o / T``::

    ds/dA_b = (c_d P_ob - c_o P_db) / T**2
    var(s)  = (c_d**2 q_oo + c_o**2 q_dd - 2 c_o c_d q_od) / T**4,
    q_xy    = sum_b P_xb P_yb var(A_b)          (one (bands, 3) matmul per pixel block)

and the calibrated StO2 ``f(s)`` has the noise part ``|f'(s)| sqrt(var(s))`` with ``f'`` the
table's slope (:func:`calibration_slope`, a centred difference over a few knots so the
piecewise-linear table's kinks do not make sigma jump).  A calibration error can be added in
quadrature, ``sigma = sqrt(f'(s)**2 var(s) + sigma_model**2)`` (:attr:`QualityRules.
model_sigma`; default 0: sigma is the noise part, what the measured coverage refers to;
None: the table's rms error on 2000 fresh spectra of its forward model, :func:`model_sigma`).
``FLAG_UNCERTAIN`` tests the noise part, and the edge part of a table's fitted model error
(:func:`model_error`, ``b * c``: mixed spectra at organ borders), never the constant part: a
constant would flag every pixel or none.  science.md (section 3, ``delta.py``) found this
first-order sigma matches Monte Carlo (2.5 / 11.7 / 14.5 points predicted against 2.4 / 11.7
/ 14.3 measured for tivita / snapshot16 / snapshot25).

Validity (:class:`QualityRules`)
--------------------------------
- ``FLAG_LOW_BLOOD``: THb below what a tissue with ``min_blood_volume`` (0.15 %) blood gives on this
  grid (:func:`thb_floor`: the unmixing of the diffusion model at the reference tissue with
  that blood volume), i.e. the same physical limit in the extinction and the pathlength basis;
- ``FLAG_UNCERTAIN``: the noise part of sigma, or the edge part of the table's model error
  (``b * c``, :func:`guide_contrast`), above ``max_sigma`` (default 0.05, i.e. 5 points:
  science.md recommendation 2);
- ``FLAG_SPECULAR``: a highlight adds a flat offset to every band, so the pixel's darkest band
  is far brighter than tissue's: ``min_b R_b > specular_min_reflectance`` (:func:`specular`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np

from edge.core.chain import (FLAG_LOW_BLOOD, FLAG_SPECULAR, FLAG_STO2_ONLY, FLAG_UNCERTAIN,
                             FLAG_UNMIX_INVALID)
from edge.errors import ConfigError
from edge.processing.model_error import guide_contrast, model_error
from edge.processing.temporal import TemporalParams

__all__ = ["NoiseModel", "QualityRules", "absorbance_variance", "sto2_raw_variance",
           "quadratic_weights", "pixel_flags", "finish_quality",
           "calibration_slope", "row_slopes", "thb_floor", "specular", "model_sigma", "model_error",
           "resolve_spatial_radius", "resolve_spatial_h", "DEFAULT_SPATIAL_H", "guide_contrast",
           "sto2_raw_variance_mixed", "DEFAULT_MAX_SIGMA", "DEFAULT_MIN_BLOOD_VOLUME",
           "DEFAULT_SPECULAR_MIN_REFLECTANCE", "DEFAULT_SPATIAL_RADIUS"]

log = logging.getLogger(__name__)

#: StO2 standard error above which a pixel is ``FLAG_UNCERTAIN`` (5 points, science.md rec. 2).
DEFAULT_MAX_SIGMA = 0.05
#: Blood volume fraction below which StO2 is not defined (``FLAG_LOW_BLOOD``): 0.15 %, below
#: the calibration prior's 0.5 % (the table clamps to its lowest THb row there).  The floor is
#: the THb of the *reference* tissue at that blood volume; fat-rich tissue reads lower (the
#: simulated fat, 0.5-1.7 % blood, a' 28, reads like the reference at 0.2-0.6 %), so at 0.5 %
#: the rule flagged 48 % of the fat on 64x80 snapshot16 scenes and at 0.3 % 20 % of snapshot25's
#: (13 % noise-free).  With one calibration curve those pixels read 4-9 points low anyway;
#: with the tables' THb axis (Dec 2026) the fat reads -0.5 points noise-free on snapshot25
#: (+0.4 / +0.9 with the shipped tables, fitted on noisy copies' mean, seeds 10 / 1), so the
#: floor went to 0.15 % (about 2 % of snapshot25's fat flagged; valid share 88.9 / 89.6 /
#: 87.7 -> 93.1 / 93.6 / 92.9 % on the fat-rich held-out seeds 7 / 8 / 10, README "Science and
#: accuracy").
DEFAULT_MIN_BLOOD_VOLUME = 0.0015
#: Darkest band's reflectance above which a pixel is a specular highlight.  Tissue's darkest
#: band stays below about 0.45 on every preset grid (measured on the simulated organs); a
#: highlight adds 0.3-1.0 to every band.
DEFAULT_SPECULAR_MIN_REFLECTANCE = 0.6
#: Spatial step's window half-width where neither the config nor the StO2 table's
#: ``spatial_radius`` header names one (7 x 7).
DEFAULT_SPATIAL_RADIUS = 3
#: Spatial step's range kernel ``h`` (absorbance) where neither the config nor the StO2
#: table's ``spatial_h`` header names one (science.md: 0.04-0.08 gave the lowest error on
#: 64x80 scenes; the snapshot tables name smaller ones since the THb axis, README).
DEFAULT_SPATIAL_H = 0.08
#: Knots each side of the centred difference of :func:`calibration_slope`.
_SLOPE_HALF_WIDTH = 3


@dataclass(frozen=True)
class NoiseModel:
    """Shot + read noise of raw counts: ``var(I) = K * max(I - D, 0) + r**2``.

    Attributes
    ----------
    counts_per_electron : float > 0
        ``K`` at the frame's gain (full scale / full well x gain).
    read_noise_counts : float >= 0
        ``r``, rms read noise in counts.
    source : str
        Where the numbers come from (logged and written with the run's metrics).
    crosstalk : ndarray of shape (bands, bands), float, or None
        Filter crosstalk ``C`` the camera corrects on its counts (``x_out = pinv(C) x_in``);
        None: bands are independent.
    band_gain : ndarray of shape (bands,), float, or None
        Factor on each band's variance from the band registration
        (:attr:`~edge.processing.register.BandRegistration.variance_gain`); None: 1.
    """

    counts_per_electron: float
    read_noise_counts: float
    source: str = "given"
    crosstalk: np.ndarray | None = field(default=None, compare=False, repr=False)
    band_gain: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.counts_per_electron) and self.counts_per_electron > 0):
            raise ConfigError(f"noise.counts_per_electron: expected a finite value > 0, got "
                              f"{self.counts_per_electron!r}")
        if not (np.isfinite(self.read_noise_counts) and self.read_noise_counts >= 0):
            raise ConfigError(f"noise.read_noise_counts: expected a finite value >= 0, got "
                              f"{self.read_noise_counts!r}")

    @functools.cached_property
    def _correction(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.crosstalk is None and self.band_gain is None:
            return None
        g = None if self.band_gain is None else np.asarray(self.band_gain, dtype=np.float64)
        c = (np.eye(g.size) if self.crosstalk is None
             else np.asarray(self.crosstalk, dtype=np.float64))
        ct = np.linalg.pinv(c).T
        if g is not None:
            ct = ct * np.sqrt(g)[None, :]     # column b: output band b (module docstring)
        return (np.ascontiguousarray(c.T, np.float32), np.ascontiguousarray(ct, np.float32))

    def correction(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(C.T, pinv(C).T · diag(sqrt(band_gain)))`` as float32 for row vectors, or None
        without crosstalk and band gain (computed once per model: it is used for every row
        block of every frame)."""
        return self._correction

    @classmethod
    def from_sensor(cls, *, full_well_e: float, read_noise_e: float, bit_depth: int,
                    gain: float = 1.0, source: str = "sensor parameters") -> "NoiseModel":
        """From a sensor's full well (e-), read noise (e-) and bit depth at ``gain``.

        As ``drivers.sim.sensor.SensorModel``: gain multiplies the counts per electron; the
        read noise in counts is taken at gain 1 (the simulator's read noise does not scale
        with gain, science.md section 2).
        """
        counts_per_e = (2 ** int(bit_depth) - 1) / float(full_well_e)
        return cls(counts_per_e * float(gain), float(read_noise_e) * counts_per_e, source)


def absorbance_variance(raw: np.ndarray, dark: np.ndarray, noise: NoiseModel) -> np.ndarray:
    """``var(A) = var(I) / (I - D)**2`` per element (module docstring).

    Parameters
    ----------
    raw : ndarray of shape (..., bands), uint16 or float
        Raw counts of the frame.
    dark : ndarray, broadcastable to ``raw``, float32
        The flat field's dark (counts).

    Returns
    -------
    ndarray, same shape, float32.  Where ``I - D < 1`` count the signal is taken as 1 count
    (such a band is at the reflectance floor and its pixel is flagged ``unmix_invalid``).
    """
    d = np.subtract(raw, dark, dtype=np.float32)
    np.maximum(d, np.float32(1.0), out=d)
    np.reciprocal(d, out=d)                 # K/d + r^2/d^2 = (K + r^2/d) / d
    var = d * np.float32(noise.read_noise_counts ** 2)
    var += np.float32(noise.counts_per_electron)
    var *= d
    return var


def quadratic_weights(pinv: np.ndarray, i_o: int, i_d: int) -> np.ndarray:
    """``[P_o**2, P_d**2, P_o * P_d]`` as a (bands, 3) float32 matrix (module docstring)."""
    p = np.asarray(pinv, dtype=np.float64)
    po, pd = p[i_o], p[i_d]
    return np.ascontiguousarray(np.stack([po * po, pd * pd, po * pd], axis=1), np.float32)


def sto2_raw_variance(c_o: np.ndarray, c_d: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Variance of raw StO2 ``c_o / (c_o + c_d)`` from ``q = var(A) @ quadratic_weights``.

    Parameters
    ----------
    c_o, c_d : ndarray of shape (n,), float32
    q : ndarray of shape (n, 3), float32

    Returns
    -------
    ndarray (n,), float32; NaN where ``c_o + c_d <= 0``.
    """
    t = c_o + c_d
    with np.errstate(divide="ignore", invalid="ignore"):
        num = c_d * c_d * q[:, 0] + c_o * c_o * q[:, 1] - 2 * c_o * c_d * q[:, 2]
        var = np.maximum(num, np.float32(0)) / (t * t) / (t * t)
    return np.where(t > 0, var, np.float32(np.nan)).astype(np.float32)


def sto2_raw_variance_mixed(c_o: np.ndarray, c_d: np.ndarray, signal: np.ndarray,
                            pinv: np.ndarray, i_o: int, i_d: int, noise: NoiseModel
                            ) -> np.ndarray:
    """Variance of raw StO2 when the camera's crosstalk correction mixes the bands' noise.

    With ``g_b = (c_d P_ob - c_o P_db) / T**2`` (d s / d A_b), ``u = g / x_out`` (A = -ln x),
    ``Ct = pinv(C).T`` (``x_out = x_in @ Ct``)::

        var(s) = sum_k var(x_in_k) * (Ct @ u)_k**2,   var(x_in) = K max(x_out @ C.T, 0) + r**2

    Parameters
    ----------
    c_o, c_d : ndarray (n,), float32
    signal : ndarray (n, bands), float32 -- ``I - D`` after the correction (the frame's)
    pinv : ndarray (k, bands) -- the unmixing pseudo-inverse

    Returns
    -------
    ndarray (n,), float32; NaN where ``c_o + c_d <= 0``.
    """
    ct_t, ct = noise.correction()
    p = np.asarray(pinv, dtype=np.float32)
    t = c_o + c_d
    d = np.maximum(signal, np.float32(1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (c_d[:, None] * p[i_o] - c_o[:, None] * p[i_d]) / (t * t)[:, None]
        z = (g / d) @ ct.T
        v_in = np.maximum(d @ ct_t, 0) * np.float32(noise.counts_per_electron)
        v_in += np.float32(noise.read_noise_counts ** 2)
        var = np.einsum("ij,ij->i", v_in, z * z)
    return np.where(t > 0, var, np.float32(np.nan)).astype(np.float32)


def row_slopes(calibration) -> np.ndarray:
    """Slope ``df/ds`` of every knot interval of every row of a calibration table.

    A centred difference over +-3 knots (clamped at the ends), in float64, rounded to float32.
    A row of a THb-axis table is flat beyond the raw values its THb's spectra reached (the
    fit extends it with its end value onto the table's common knots); there, as beyond the
    table, the row's end slope is kept (its first and last non-zero slope), so a pixel whose
    raw StO2 lands in that stretch is not given a standard error of 0.

    Returns
    -------
    ndarray (n_rows, n_knots - 1), float32 (one row for a one-dimensional table); the
    kernels' ``slopes`` table (``cuda_kernels/quality_math.cuh`` ``q_slope``).
    """
    y = calibration.table_grid.astype(np.float64)
    n, h = calibration.n_knots, _SLOPE_HALF_WIDTH
    k = np.arange(n - 1)
    lo, hi = np.maximum(k - h + 1, 0), np.minimum(k + h, n - 1)
    slopes = ((y[:, hi] - y[:, lo]) / ((hi - lo) * calibration.dx)).astype(np.float32)
    for row in slopes:
        live = np.flatnonzero(row > 0)
        if live.size:
            row[:live[0]] = row[live[0]]
            row[live[-1] + 1:] = row[live[-1]]
    return slopes


def calibration_slope(calibration, sto2_raw: np.ndarray,
                      thb: np.ndarray | None = None) -> np.ndarray:
    """Slope ``df/ds`` of a :class:`~edge.processing.sto2.Sto2Calibration` table at ``sto2_raw``.

    The :func:`row_slopes` value of the knot interval that :meth:`Sto2Calibration.apply` uses
    for ``sto2_raw``; for a table with a THb axis, interpolated between the two rows of the
    pixel's ``thb`` with apply's weight (``a + g * (b - a)`` in float32).  Outside the table,
    where ``apply`` clamps, the end slope is kept, so a raw value beyond the table still gets
    the spread of its neighbourhood rather than a standard error of 0.  The THb axis's own
    slope (THb noise moving the row) is not included: measured, it is small beside the raw
    StO2 term (README, StO2 accuracy).

    Returns
    -------
    ndarray, shape of ``sto2_raw``, float32 (>= 0; NaN where ``sto2_raw`` -- or, for a
    two-dimensional table, ``thb`` -- is not finite).
    """
    slopes = row_slopes(calibration)
    n = calibration.n_knots
    x = np.asarray(sto2_raw, dtype=np.float32)
    finite = np.isfinite(x)
    t = (np.where(finite, x, np.float32(calibration.x0)) - np.float32(calibration.x0)) \
        / np.float32(calibration.dx)
    i = np.clip(np.floor(t), 0, n - 2).astype(np.intp)
    if calibration.n_rows == 1:
        out = slopes[0, i]
    else:
        if thb is None:
            raise ConfigError("thb: this StO2 table has a THb axis; pass the pixels' THb")
        th = np.broadcast_to(np.asarray(thb, dtype=np.float32), x.shape)
        j, g = calibration.thb_position(th)
        a = slopes[j, i]
        out = a + g * (slopes[j + 1, i] - a)
        finite = finite & np.isfinite(th)
    return np.where(finite, out, np.float32(np.nan)).astype(np.float32)


def model_sigma(unmixer, calibration, fwhm_nm: float | None = None, n: int = 2000,
                seed: int = 777) -> float:
    """The calibration error term of sigma (fraction) for ``quality.model_sigma: null``: the
    table's fitted ``a`` (:func:`model_error`) when its header has one, else the RMS error of
    ``calibration`` on ``n`` fresh noise-free simulated spectra
    (``edge.processing.sto2.simulate_spectra``, default ranges; seed unlike the fits')."""
    from edge.processing.sto2 import simulate_spectra

    fitted = model_error(calibration)
    if fitted is not None:
        return fitted[0]

    refl, truth = simulate_spectra(unmixer.wavelengths, n, seed, fwhm_nm=fwhm_nm)
    m = unmixer.maps(refl)
    err = calibration.apply(m["sto2_raw"], m["thb"]).astype(np.float64) - truth
    ok = np.isfinite(err)
    return float(np.sqrt(np.mean(err[ok] ** 2))) if ok.any() else 0.0


def registration_gain(unmixer, noise: "NoiseModel | None", fwhm_nm: float | None = None,
                      counts: float = 600.0) -> float:
    """Factor by which the band registration lowers one pixel's raw-StO2 variance: the
    delta-method variance with :attr:`NoiseModel.band_gain` over the one without, at the
    reference tissue (:data:`edge.processing.unmixing.REFERENCE_TISSUE`) ``counts`` above dark
    in every band; 1.0 without a band gain.

    The registration averages neighbouring pixels, so their noise is correlated: one pixel's
    variance falls by this factor, but a mean over a window much wider than the registration
    kernel (the spatial step's) does not gain from it -- the kernel sums to 1, so the noise
    power at scales above a few pixels is what it was.  :func:`finish_quality` divides the
    spatial step's propagated variance (which assumes independent pixels) by it.
    """
    if noise is None or noise.band_gain is None:
        return 1.0
    import dataclasses

    from edge import physics
    from edge.processing.unmixing import REFERENCE_TISSUE

    refl = np.asarray(physics.tissue_reflectance(unmixer.wavelengths, fwhm_nm=fwhm_nm,
                                                 **REFERENCE_TISSUE), np.float32)[None, :]
    c = unmixer.unmix(refl).astype(np.float32)
    c_o, c_d = c[:, unmixer.i_hbo2], c[:, unmixer.i_hb]
    signal = (refl * np.float32(counts)).astype(np.float32)
    plain = dataclasses.replace(noise, band_gain=None,
                                crosstalk=noise.crosstalk if noise.crosstalk is not None
                                else np.eye(refl.shape[1]))
    v1, v0 = (sto2_raw_variance_mixed(c_o, c_d, signal, unmixer.pinv, unmixer.i_hbo2,
                                      unmixer.i_hb, m)[0] for m in (noise, plain))
    if not (np.isfinite(v1) and np.isfinite(v0) and v0 > 0):
        return 1.0
    return float(v1 / v0)


def thb_floor(unmixer, blood_volume: float, fwhm_nm: float | None = None) -> float:
    """THb that the unmixing gives for the reference tissue with ``blood_volume`` blood.

    The reference tissue is :data:`edge.processing.unmixing.REFERENCE_TISSUE` (diffusion
    model, ``edge.physics.tissue_reflectance``) with its blood volume replaced; so the limit
    means the same physical blood volume whatever the basis and its units.
    """
    from edge import physics
    from edge.processing.unmixing import REFERENCE_TISSUE

    p = dict(REFERENCE_TISSUE, blood_volume=float(blood_volume))
    refl = np.asarray(physics.tissue_reflectance(unmixer.wavelengths, fwhm_nm=fwhm_nm, **p),
                      dtype=np.float32)
    thb = float(unmixer.maps(refl[None, :])["thb"][0])
    if not np.isfinite(thb) or thb <= 0:
        raise ConfigError(f"quality.min_blood_volume: {blood_volume!r} gives no positive "
                          f"THb on this grid; use a larger value")
    return thb


def specular(reflectance: np.ndarray, level: float) -> np.ndarray:
    """Pixels whose darkest band reads above ``level`` (bool, shape ``reflectance.shape[:-1]``;
    NaN pixels are False)."""
    r = np.asarray(reflectance, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return np.nanmin(np.where(np.isfinite(r), r, np.inf), axis=-1) > np.float32(level)


@dataclass(frozen=True)
class QualityRules:
    """What the chain adds for StO2 quality (issue 14): sigma, validity bits, a spatial step.

    Attributes
    ----------
    noise : NoiseModel or None
        None: no ``sto2_sigma`` (all NaN) and no ``FLAG_UNCERTAIN``.
    max_sigma : float or None
        ``FLAG_UNCERTAIN`` above this StO2 standard error (fraction); None: never.
    min_blood_volume : float or None
        ``FLAG_LOW_BLOOD`` below the THb of this blood volume (:func:`thb_floor`); None: never.
    specular_min_reflectance : float or None
        ``FLAG_SPECULAR`` where the darkest band is above this; None: never.
    spatial : {"none", "bilateral"}
        Edge-preserving spatial step on raw StO2 and the StO2-index terms
        (:mod:`edge.processing.spatial`).
    model_sigma : float or None
        Calibration error added in quadrature to the noise (fraction); 0 (default): sigma is
        the noise part; None: the table's residual on simulated spectra (:func:`model_sigma`).
    spatial_radius : int or None
        Half-width of the spatial step's window (3: 7 x 7), 1-8 pixels; its Gaussian's sigma
        is 2/3 of it.  None (default): the StO2 table's ``spatial_radius`` header (chosen per
        camera preset), else :data:`DEFAULT_SPATIAL_RADIUS`; the plan resolves it
        (:func:`resolve_spatial_radius`).
    spatial_h : float or None
        The spatial step's range kernel ``h`` (absorbance), 0.005-1.  None (default): the StO2
        table's ``spatial_h`` header (chosen per preset), else :data:`DEFAULT_SPATIAL_H`
        (:func:`resolve_spatial_h`).
    temporal : TemporalParams
        Motion-gated recursive average over frames (:mod:`edge.processing.temporal`);
        ``method: none`` (default here) for single frames.
    """

    noise: NoiseModel | None = None
    max_sigma: float | None = DEFAULT_MAX_SIGMA
    min_blood_volume: float | None = DEFAULT_MIN_BLOOD_VOLUME
    specular_min_reflectance: float | None = DEFAULT_SPECULAR_MIN_REFLECTANCE
    spatial: str = "none"
    model_sigma: float | None = 0.0
    spatial_radius: int | None = None
    spatial_h: float | None = None
    temporal: TemporalParams = TemporalParams()

    @property
    def needs_guide(self) -> bool:
        """Whether the chain must make the spectral guide (spatial or temporal step)."""
        return self.spatial != "none" or self.temporal.enabled

    def __post_init__(self) -> None:
        from edge.processing.spatial import SPATIAL_METHODS

        for name, lo, hi in (("max_sigma", 0.0, 1.0), ("min_blood_volume", 0.0, 0.2),
                             ("specular_min_reflectance", 0.0, 2.0)):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and lo < v <= hi):
                raise ConfigError(f"quality.{name}: expected a value in ({lo:g}, {hi:g}] or "
                                  f"null, got {v!r}")
        m = self.model_sigma
        if m is not None and not (np.isfinite(m) and 0.0 <= m <= 1.0):
            raise ConfigError(f"quality.model_sigma: expected a value in [0, 1] or null, got "
                              f"{m!r}")
        h = self.spatial_h
        if h is not None and (isinstance(h, bool) or not isinstance(h, (int, float, np.floating))
                              or not (np.isfinite(h) and 0.005 <= h <= 1.0)):
            raise ConfigError(f"quality.spatial_h: expected a number in [0.005, 1] or null, "
                              f"got {h!r}")
        r = self.spatial_radius
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, np.integer))
                              or not 1 <= r <= 8):
            raise ConfigError(f"quality.spatial_radius: expected an integer in [1, 8] or null, "
                              f"got {r!r}")
        if not isinstance(self.temporal, TemporalParams):
            raise ConfigError(f"quality.temporal: expected TemporalParams, got "
                              f"{type(self.temporal).__name__}")
        if self.spatial not in SPATIAL_METHODS:
            raise ConfigError(f"quality.spatial: expected one of {', '.join(SPATIAL_METHODS)}, "
                              f"got {self.spatial!r}")


def resolve_spatial_h(rules: QualityRules, calibration) -> float:
    """The spatial step's range kernel: ``rules.spatial_h`` when set, else the StO2 table's
    ``spatial_h`` header (:attr:`Sto2Calibration.spatial_h`, chosen per preset with
    ``tools/measure_sto2_video.py``), else :data:`DEFAULT_SPATIAL_H`."""
    if rules.spatial_h is not None:
        return float(rules.spatial_h)
    own = getattr(calibration, "spatial_h", None)
    return DEFAULT_SPATIAL_H if own is None else float(own)


def resolve_spatial_radius(rules: QualityRules, calibration) -> int:
    """The spatial step's window half-width: ``rules.spatial_radius`` when set, else the StO2
    table's ``spatial_radius`` header (:attr:`Sto2Calibration.spatial_radius`, chosen per
    preset with ``tools/measure_sto2_video.py``), else :data:`DEFAULT_SPATIAL_RADIUS`."""
    if rules.spatial_radius is not None:
        return int(rules.spatial_radius)
    own = getattr(calibration, "spatial_radius", None)
    return DEFAULT_SPATIAL_RADIUS if own is None else int(own)


def pixel_flags(plan, flags: np.ndarray, thb: np.ndarray, darkest: np.ndarray) -> None:
    """OR ``FLAG_SPECULAR`` (pixels with no flag or only ``unmix_invalid``) and
    ``FLAG_LOW_BLOOD`` (pixels with no flag) into ``flags`` in place; ``flags``, ``thb`` and
    ``darkest`` (the pixel's smallest reflectance, NaN for calibration-flagged pixels) of
    shape (...,)."""
    rules = plan.quality
    # A highlight is named even where it pushed the unmixing out of its domain (a flat offset
    # flattens the visible haemoglobin bands: THb <= 0 on snapshot16).
    clean = (flags & ~FLAG_UNMIX_INVALID) == 0
    if rules.specular_min_reflectance is not None:
        with np.errstate(invalid="ignore"):
            flags[clean & (darkest > np.float32(rules.specular_min_reflectance))] |= \
                FLAG_SPECULAR
    if plan.thb_min is not None:
        clean = flags == 0          # a highlight's THb means nothing: one reason per pixel
        with np.errstate(invalid="ignore"):
            flags[clean & (thb < np.float32(plan.thb_min))] |= FLAG_LOW_BLOOD


def finish_quality(plan, s_raw: np.ndarray, var_raw: np.ndarray | None, flags: np.ndarray,
                   maps: dict, guide: np.ndarray | None = None,
                   index_minima_terms: np.ndarray | None = None, spatial_filter=None,
                   temporal=None, stream_key=None) -> None:
    """The frame-wide part of the quality step: spatial and temporal steps, sigma,
    ``FLAG_UNCERTAIN``, masks.

    Only pixels with no flag enter (and get) the spatial and the temporal step's means; a
    ``low_blood`` pixel keeps its raw StO2, variance and StO2 index terms (and its running
    mean restarts).

    Parameters
    ----------
    plan : ChainPlan with ``quality``
    s_raw : ndarray of shape (rows, cols), float32
        Raw StO2, NaN where the unmixing failed.
    var_raw : ndarray (rows, cols), float32, or None
        Its delta-method variance; None: no noise model (sigma NaN, no ``FLAG_UNCERTAIN``).
    flags : ndarray (rows, cols), uint8
        With the calibration, unmixing, specular and low-blood bits (:func:`pixel_flags`);
        ``FLAG_UNCERTAIN`` is added in place.
    maps : dict of str to ndarray (rows, cols), float32
        The chain's maps; ``sto2`` (and ``sto2_index`` with a spatial or temporal step) are
        replaced, ``sto2_sigma`` and ``sto2_all`` added.
    guide : ndarray (rows, cols, G), float32, or None
        Spectral guide (needed by the spatial and temporal steps).
    index_minima_terms : ndarray (rows, cols, n1 + n2), float32, or None
        The StO2 index's ``A''`` terms (its r1 then r2 window), for those steps.
    spatial_filter : callable or None
        Replaces :func:`~edge.processing.spatial.bilateral_filter` (same arguments and
        results): the native backend's compiled one.
    temporal : TemporalFilter or None
        The stream's state for ``quality.temporal`` (held by the backend); None: no temporal
        step.
    stream_key : hashable
        Identity of the stream's frames (the exposure); a change restarts the temporal state.
    """
    from edge.processing.indices import sto2_index_from_minima
    from edge.processing.spatial import bilateral_filter

    rules, cal = plan.quality, plan.calibration
    finite = np.isfinite(s_raw)
    # Pixels with an estimate (StO2 index): no flag but low blood.
    est_ok = ((flags & ~FLAG_LOW_BLOOD) == 0) & finite
    # Pixels that enter the spatial and temporal steps' means: no flag at all.  A low-blood
    # pixel's noise is many times its neighbours' and the weights are equal (inverse_variance
    # off), so it would pull them (snapshot25's fat beside low-blood pixels stayed
    # 'uncertain'); it keeps its own raw StO2, variance and index terms instead.
    spatial_ok = (flags == 0) & finite
    s, var, t_f = s_raw, var_raw, None
    if rules.spatial == "bilateral":
        s_f, var_f, t_f = (spatial_filter or bilateral_filter)(
            s_raw, var_raw, guide, spatial_ok, plan.bilateral, index_minima_terms)
        s = np.where(spatial_ok, s_f, s_raw)
        if var_raw is not None:
            # The propagation assumes independent pixels; registered bands are not
            # (registration_gain: their mean keeps the unregistered noise).
            g = np.float32(plan.registration_gain)
            var = np.where(spatial_ok, var_f / g if g != 1 else var_f, var_raw)
        if t_f is not None:
            t_f = np.where(spatial_ok[..., None], t_f, index_minima_terms)
    if temporal is not None and rules.temporal.enabled:
        # The same pixels: a low-blood frame restarts the pixel's running mean, so a pixel
        # whose THb hovers at the limit (fat) does not carry a raw single-pixel variance in its
        # state for `window` frames (seed 2: 52 % of snapshot25's fat 'uncertain', 8 % so).
        t_in = t_f if t_f is not None else index_minima_terms
        s, var, t_f = temporal.apply(s, var, guide, spatial_ok, t_in, key=stream_key)
    if t_f is not None:
        n1 = plan.index_layout["r1"].stop - plan.index_layout["r1"].start
        idx = sto2_index_from_minima(t_f[..., :n1].min(axis=-1), t_f[..., n1:].min(axis=-1),
                                     plan.index_params)
        maps["sto2_index"] = np.where(est_ok, idx, np.float32(np.nan)).astype(np.float32)
    has = np.isfinite(s) & ((flags & ~(FLAG_STO2_ONLY | FLAG_SPECULAR)) == 0)
    thb = maps.get("thb")     # the pixel's own THb: the row of a table with a THb axis
    sto2_all = np.where(has, cal.apply(s, thb), np.float32(np.nan)).astype(np.float32)
    if var is None:
        sigma = np.full(s.shape, np.nan, np.float32)
    else:
        noise_sigma = calibration_slope(cal, s, thb) * np.sqrt(var)
        noise_sigma = np.where(has, noise_sigma, np.float32(np.nan)).astype(np.float32)
        if rules.max_sigma is not None:
            with np.errstate(invalid="ignore"):
                flags[(flags == 0)
                      & (noise_sigma > np.float32(rules.max_sigma))] |= FLAG_UNCERTAIN
        sigma = noise_sigma
        fitted = None if rules.model_sigma is not None else \
            model_error(cal, temporal is not None and rules.temporal.enabled)
        model2 = np.float32((plan.model_sigma if fitted is None else fitted[0]) ** 2)
        if fitted is not None and fitted[1] > 0 and guide is not None:
            contrast = guide_contrast(guide)
            spread = np.float32(fitted[2]) * contrast     # b_sigma: sigma's edge term
            model2 = model2 + spread * spread
            edge = np.float32(fitted[1]) * contrast       # b: the edge rule's
            if rules.max_sigma is not None:
                # A pixel whose edge term alone exceeds max_sigma sees two tissues (mosaic
                # misregistration at an organ border): 'uncertain' like a noisy one.
                flags[(flags == 0) & has & (edge > np.float32(rules.max_sigma))] |= \
                    FLAG_UNCERTAIN
        if np.any(model2 > 0):
            sigma = np.sqrt(noise_sigma ** 2 + model2).astype(np.float32)
    maps["sto2"] = np.where(flags == 0, sto2_all, np.float32(np.nan)).astype(np.float32)
    maps["sto2_sigma"] = sigma
    maps["sto2_all"] = sto2_all
