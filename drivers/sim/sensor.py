"""Sensor model of the simulated camera: illumination, exposure, noise, quantisation.

The mean raw signal of band ``b`` at pixel ``(r, c)`` is ::

    mean = dark(r, c, b) + S(r, c, b) · R(r, c, b)
    dark = black_level + dark_current(r, c) · t_exp · gain            (counts)
    S    = K_fs · illum(b) · QE(b) · vignette(r, c) · prnu(r, c) · (t_exp / t_ref) · gain

``K_fs`` is chosen so that a white tile (R = 0.99) under the default halogen illumination
reads 75 % of full scale in the brightest band at the image centre at the reference exposure
(10 ms) and gain 1 -- the white-reference practice of FACTS.md ("Calibration practice").
Noise: shot noise of signal and dark current (Gaussian approximation of Poisson, variance
``K·gain·(mean − black)`` in counts², ``K`` = counts per electron at gain 1) plus read noise;
then rounding to integer counts and clipping to ``[0, 2**bits − 1]`` (saturation).

Per preset (:meth:`SensorModel.for_preset`, :class:`drivers.sim.presets.SensorSpec`, sources
and **unverified** figures in the presets' docstring): the full well and read noise of the
chip; averaged detector reads per delivered pixel (push-broom binning: tivita); and for the
mosaic snapshot cameras the band misregistration and the filter crosstalk.  A mosaic band
``k`` sits at ``(k // n, k % n)`` of its ``n×n`` super-pixel, so it samples the scene
``((k // n − (n−1)/2)/n, (k % n − (n−1)/2)/n)`` spectral pixels away from the super-pixel
centre (bilinear interpolation of the reflectance; no demosaicing, as the vendor cube
delivers it).  Crosstalk mixes the mean signal of the bands with the matrix ``X`` of
:func:`mosaic_crosstalk` before the noise; the camera then applies the correction ``X⁺`` to
the dark-subtracted counts (assumed exact), which restores the mean and amplifies and
correlates the noise.  The white and dark references go through the same path.

Random numbers come from ``numpy.random.default_rng`` seeded with ``[seed, frame_id, ...]``
so a frame depends only on the seed and its frame id, never on thread timing (see the
``noise`` option of :class:`SensorModel` for the fast noise pool).

Light sources and the silicon QE are in :mod:`drivers.sim.light`.
"""

from __future__ import annotations

import logging

import numpy as np

from drivers.sim.light import (LED_CHANNELS, halogen_spectrum, led_illumination,
                               quantum_efficiency)
from drivers.sim.mosaic import mosaic_crosstalk, mosaic_offsets, shift_bilinear
from drivers.sim.workers import worker_pool
from edge.errors import ConfigError

__all__ = ["LED_CHANNELS", "NOISE_MODES", "REFERENCE_EXPOSURE_US", "SensorModel",
           "halogen_spectrum", "led_illumination", "quantum_efficiency"]

log = logging.getLogger(__name__)

#: Reference exposure at which the white tile reads 75 % of full scale (µs).
REFERENCE_EXPOSURE_US = 10_000.0
_WHITE_FRACTION = 0.75
_N_CHUNKS = 4
#: Settings (exposure, gain, illumination) whose response cubes are kept.
_CACHE_SIZE = 5
#: Size of the pre-drawn noise pool (standard normals).
_NOISE_POOL = 2 ** 23
#: Noise generation modes of :class:`SensorModel`.
NOISE_MODES = ("pool", "exact")


class SensorModel:
    """Deterministic sensor model turning reflectance cubes into raw counts.

    Parameters
    ----------
    wavelengths_nm : ndarray of shape (bands,)
    rows, cols : int
    bit_depth : int
    fwhm_nm : float
        Band FWHM (for integrating illumination spectra).
    seed : int
        Seed of the fixed patterns (PRNU, dark-current non-uniformity, hot pixels) and of the
        per-frame noise.
    full_well_e : float
        Electrons at full scale and gain 1 (sets the shot noise).
    read_noise_e : float
        Read noise in electrons (rms).
    black_level_frac : float
        Black level as a fraction of full scale (keeps read noise from clipping at 0).
    dark_current_e_s : float
        Mean dark current, electrons per second.
    vignetting : float
        Relative fall-off at the image corners (0 = none).
    prnu : float
        Pixel response non-uniformity (relative rms).
    hot_pixel_fraction : float
        Fraction of pixels with 100× dark current.
    noise : {"pool", "exact"}
        ``"exact"`` draws fresh normals for every sample.  ``"pool"`` (default, ~3× faster)
        draws 2**23 standard normals once and takes each row's noise from a random offset in
        that pool (offsets from ``default_rng([seed, frame_id])``): every sample is still
        N(0, 1) and effectively independent between frames, but two rows of the same frame may share a
        stretch of noise values -- invisible to per-pixel statistics, which is what
        calibration and the pipeline use.
    mosaic : int
        ``n`` of an ``n×n`` filter mosaic (0: none): bands are misregistered by
        :func:`mosaic_offsets` and mixed by :func:`mosaic_crosstalk`.
    neighbour_crosstalk, sidelobe_leak : float
        Crosstalk fractions of the mosaic (see :func:`mosaic_crosstalk`).
    """

    def __init__(self, wavelengths_nm: np.ndarray, rows: int, cols: int, *, bit_depth: int = 10,
                 fwhm_nm: float = 10.0, seed: int = 0, full_well_e: float = 10_000.0,
                 read_noise_e: float = 10.0, black_level_frac: float = 16 / 1023,
                 dark_current_e_s: float = 200.0, vignetting: float = 0.25, prnu: float = 0.01,
                 hot_pixel_fraction: float = 2e-4, noise: str = "pool", mosaic: int = 0,
                 neighbour_crosstalk: float = 0.0, sidelobe_leak: float = 0.0) -> None:
        if noise not in NOISE_MODES:
            raise ConfigError(f"noise: expected one of {', '.join(NOISE_MODES)}, got {noise!r}")
        self.noise = noise
        self._pool_noise: np.ndarray | None = None
        self.wavelengths = np.asarray(wavelengths_nm, dtype=np.float64)
        self.rows, self.cols = int(rows), int(cols)
        self.bit_depth = int(bit_depth)
        self.full_scale = float(2 ** self.bit_depth - 1)
        self.fwhm_nm = float(fwhm_nm)
        self.seed = int(seed)
        self.counts_per_e = self.full_scale / float(full_well_e)
        self.read_noise_counts = float(read_noise_e) * self.counts_per_e
        self.black_level = float(black_level_frac) * self.full_scale
        rng = np.random.default_rng([self.seed, 0x5E15])
        y = (np.arange(self.rows) - (self.rows - 1) / 2) / max(self.rows / 2, 1)
        x = (np.arange(self.cols) - (self.cols - 1) / 2) / max(self.cols / 2, 1)
        radius2 = (y[:, None] ** 2 + x[None, :] ** 2) / 2.0  # 1 at the corners
        self._pixel_gain = ((1.0 - vignetting * radius2)
                            * (1.0 + prnu * rng.standard_normal((self.rows, self.cols))))
        dark_rate = dark_current_e_s * rng.lognormal(0.0, 0.3, (self.rows, self.cols))
        hot = rng.random((self.rows, self.cols)) < hot_pixel_fraction
        dark_rate[hot] *= 100.0
        self._dark_rate_e_s = dark_rate
        self._band_response = quantum_efficiency(self.wavelengths)
        default = self.default_illumination()
        # Brightest band of the default light at the image centre reads 75 % of the range.
        self._k_fs = (_WHITE_FRACTION * (self.full_scale - self.black_level)
                      / (0.99 * float(np.max(default * self._band_response))))
        self._illumination = default
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.mosaic = int(mosaic)
        self._offsets = (mosaic_offsets(self.wavelengths.size, self.mosaic)
                         if self.mosaic else None)
        self.crosstalk: np.ndarray | None = None
        self._xt = self._ct = None
        if self.mosaic and (neighbour_crosstalk or sidelobe_leak):
            self.crosstalk = mosaic_crosstalk(self.wavelengths.size, self.mosaic,
                                              neighbour_crosstalk, sidelobe_leak)
            # Right-multiplied row vectors: mixed = sig @ X.T, corrected = mixed @ pinv(X).T
            self._xt = np.ascontiguousarray(self.crosstalk.T.astype(np.float32))
            self._ct = np.ascontiguousarray(np.linalg.pinv(self.crosstalk).T.astype(np.float32))

    @classmethod
    def for_preset(cls, preset, *, seed: int = 0, **overrides) -> "SensorModel":
        """The sensor of a camera preset (:class:`drivers.sim.presets.CameraPreset`).

        Its :class:`~drivers.sim.presets.SensorSpec` sets the full well, read noise and dark
        current (times ``reads_per_pixel``, the read noise times its square root: averaged
        reads keep the mean and cut the relative noise by √reads) and the mosaic;
        ``overrides`` (any keyword of :class:`SensorModel`) win over them.
        """
        spec = preset.sensor
        reads = int(spec.reads_per_pixel)
        kw = dict(bit_depth=preset.bit_depth, fwhm_nm=preset.fwhm_nm, seed=seed,
                  full_well_e=spec.full_well_e * reads,
                  read_noise_e=spec.read_noise_e * float(np.sqrt(reads)),
                  dark_current_e_s=200.0 * reads, mosaic=spec.mosaic,
                  neighbour_crosstalk=spec.neighbour_crosstalk,
                  sidelobe_leak=spec.sidelobe_leak)
        kw.update(overrides)
        return cls(preset.wavelength_array(), preset.rows, preset.cols, **kw)

    # -- illumination --------------------------------------------------------------------
    def default_illumination(self) -> np.ndarray:
        """The halogen-like default illumination per band (white channel at full intensity)."""
        return led_illumination({"white": 1.0}, self.wavelengths, self.fwhm_nm)

    @property
    def illumination(self) -> np.ndarray:
        """Current illumination per band, ndarray of shape (bands,), float64."""
        return self._illumination

    def set_illumination(self, spectrum_per_band: np.ndarray | None) -> None:
        """Set the illumination per band (relative units; ``None`` = default halogen,
        all zeros = dark)."""
        self._illumination = self.check_illumination(spectrum_per_band)

    def check_illumination(self, spectrum_per_band: np.ndarray | None) -> np.ndarray:
        """Validate an illumination per band (``None`` -> the default) and return it."""
        if spectrum_per_band is None:
            return self.default_illumination()
        spec = np.asarray(spectrum_per_band, dtype=np.float64)
        if spec.shape != self.wavelengths.shape or not np.all(np.isfinite(spec)) \
                or np.any(spec < 0):
            raise ConfigError(
                f"illumination: expected {self.wavelengths.size} finite values >= 0 (one "
                f"per band), got shape {spec.shape}")
        return spec

    # -- mean response -------------------------------------------------------------------
    def response(self, exposure_us: float, gain: float,
                 illumination: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
        """Mean dark, signal per unit reflectance and white-tile frames for a setting.

        Parameters
        ----------
        exposure_us, gain : float
        illumination : ndarray of shape (bands,), optional
            Illumination per band; default: the current one (:meth:`set_illumination`).

        Returns
        -------
        dark : ndarray of shape (rows, cols, bands), float32
            Mean counts with the lens capped.
        per_unit : ndarray of shape (rows, cols, bands), float32
            Mean counts above dark for reflectance 1.
        white : ndarray of shape (rows, cols, bands), float32
            Mean counts of a 99 % white tile, ``dark + 0.99 · per_unit``.

        All three are read-only and shared between frames with the same setting (a few
        settings are cached, so LED sequences do not recompute them every frame).
        """
        illum = self._illumination if illumination is None else illumination
        key_dark = (float(exposure_us), float(gain), None)
        key = (float(exposure_us), float(gain), illum.tobytes())
        if key_dark not in self._cache:
            dc = self._dark_rate_e_s * (exposure_us * 1e-6) * gain * self.counts_per_e
            dark = np.broadcast_to((self.black_level + dc)[:, :, None].astype(np.float32),
                                   (self.rows, self.cols, self.wavelengths.size))
            self._cache[key_dark] = (dark, dark, dark)
        dark = self._cache[key_dark][0]
        if key not in self._cache:
            if len(self._cache) >= _CACHE_SIZE:  # each entry holds full cubes
                self._cache = {key_dark: self._cache[key_dark]}
            band = (self._k_fs * illum * self._band_response
                    * (exposure_us / REFERENCE_EXPOSURE_US) * gain)
            per_unit = (self._pixel_gain[:, :, None] * band[None, None, :]).astype(np.float32)
            white = dark + np.float32(0.99) * per_unit
            per_unit.setflags(write=False)
            white.setflags(write=False)
            self._cache[key] = (dark, per_unit, white)
        return self._cache[key]

    # -- exposure ------------------------------------------------------------------------
    def expose(self, reflectance: np.ndarray, exposure_us: float, gain: float,
               frame_id: int, illumination: np.ndarray | None = None) -> np.ndarray:
        """Raw counts for one exposure of a reflectance cube.

        Parameters
        ----------
        reflectance : ndarray of shape (rows, cols, bands), float32
        exposure_us, gain : float
        frame_id : int
            Selects the noise realisation.
        illumination : ndarray of shape (bands,), optional
            Light at this exposure (default: the current illumination).

        Returns
        -------
        ndarray of shape (rows, cols, bands), uint16
        """
        dark, per_unit, _ = self.response(exposure_us, gain, illumination)
        if reflectance.shape != per_unit.shape:
            raise ConfigError(f"reflectance: expected shape {per_unit.shape}, "
                              f"got {reflectance.shape}")
        rows = self.rows
        out = np.empty(reflectance.shape, dtype=np.uint16)
        edges = np.linspace(0, rows, _N_CHUNKS + 1).astype(int)
        kg = np.float32(self.counts_per_e * gain)
        # +0.5 makes the float->uint16 truncation a rounding; the variance offset undoes it.
        half = np.float32(0.5)
        offset = np.float32(self.read_noise_counts ** 2
                            - self.counts_per_e * gain * (self.black_level + 0.5))
        top = np.float32(self.full_scale + 0.5)
        pool = self._noise_pool() if self.noise == "pool" else None
        row_len = per_unit.shape[1] * per_unit.shape[2]
        if pool is not None:
            starts = np.random.default_rng([self.seed, int(frame_id)]).integers(
                0, pool.size - row_len, rows)

        if self._offsets is not None:
            reflectance = self.misregister(reflectance)
        xt, ct = self._xt, self._ct

        def work(i: int) -> None:
            rng = np.random.default_rng([self.seed, int(frame_id), i])
            m = np.empty(per_unit.shape[1:], dtype=np.float32)
            sd = np.empty_like(m)
            # Row by row so every temporary stays in cache: ~10 passes cost ~2-3 here.
            for r in range(edges[i], edges[i + 1]):
                np.multiply(per_unit[r], reflectance[r], out=m)
                if xt is not None:
                    m = m @ xt
                m += dark[r]
                m += half
                np.multiply(m, kg, out=sd)
                sd += offset
                np.maximum(sd, 0, out=sd)
                np.sqrt(sd, out=sd)
                if pool is None:
                    sd *= rng.standard_normal(m.shape, dtype=np.float32)
                else:
                    sd *= pool[starts[r]:starts[r] + row_len].reshape(m.shape)
                m += sd
                np.clip(m, 0, top, out=m)
                if ct is not None:
                    # The ADC's counts, then the camera's crosstalk correction on them.
                    np.floor(m, out=m)
                    m -= dark[r]
                    m = m @ ct
                    m += dark[r]
                    m += half
                    np.clip(m, 0, top, out=m)
                out[r] = m  # truncation of (x + 0.5) >= 0 == rounding

        list(worker_pool().map(work, range(_N_CHUNKS)))
        return out

    def misregister(self, reflectance: np.ndarray) -> np.ndarray:
        """Each band sampled at its mosaic offset (:func:`mosaic_offsets`); identity without
        a mosaic.

        Parameters
        ----------
        reflectance : ndarray of shape (rows, cols, bands), float32

        Returns
        -------
        ndarray of shape (rows, cols, bands), float32 (a new array with a mosaic)
        """
        if self._offsets is None:
            return reflectance
        out = np.empty(reflectance.shape, dtype=np.float32)
        for k, (dy, dx) in enumerate(self._offsets):
            out[:, :, k] = shift_bilinear(reflectance[:, :, k].astype(np.float32), dy, dx)
        return out

    def reflectance_noise(self, reflectance: np.ndarray, exposure_us: float, gain: float,
                          rng: np.random.Generator, *, reference_frames: int = 8,
                          rho_ref: float = 0.99) -> np.ndarray:
        """Noisy flat-fielded reflectance of spectra seen at the image centre.

        What the chain computes, ``rho_ref · (raw − dark_ref) / (white_ref − dark_ref)``, with
        this sensor's noise (shot, read, dark shot, quantisation, crosstalk correction) on the
        raw frame and on references averaged over ``reference_frames`` frames; Gaussian
        approximation, no saturation, no fixed patterns, no misregistration (spectra have no
        neighbours).  Used to fit the StO2 calibration with noise
        (``tools/fit_sto2_calibration.py``).

        Parameters
        ----------
        reflectance : ndarray of shape (n, bands)
        exposure_us, gain : float
        rng : numpy Generator

        Returns
        -------
        ndarray of shape (n, bands), float64
        """
        r = np.asarray(reflectance, dtype=np.float64)
        ill = self._illumination
        band = (self._k_fs * ill * self._band_response
                * (exposure_us / REFERENCE_EXPOSURE_US) * gain)
        kg = self.counts_per_e * gain
        dark = float(np.median(self._dark_rate_e_s)) * exposure_us * 1e-6 * gain \
            * self.counts_per_e
        x = self.crosstalk if self.crosstalk is not None else np.eye(band.size)
        c = np.linalg.pinv(x)

        def measure(sig: np.ndarray, frames: int) -> np.ndarray:
            mixed = sig @ x.T
            var = kg * (mixed + dark) + self.read_noise_counts ** 2 + 1.0 / 12.0
            noisy = mixed + np.sqrt(var / frames) * rng.standard_normal(mixed.shape)
            return noisy @ c.T

        signal = measure(r * band, 1)
        white = measure(np.broadcast_to(rho_ref * band, r.shape), reference_frames)
        # The dark reference: dark shot and read noise, averaged (the frames' own dark noise
        # is in measure()).
        dvar = kg * dark + self.read_noise_counts ** 2 + 1.0 / 12.0
        d_ref = np.sqrt(dvar / reference_frames) * rng.standard_normal(r.shape)
        return rho_ref * (signal - d_ref) / (white - d_ref)

    def _noise_pool(self) -> np.ndarray:
        """Standard normals drawn once per sensor (float32, 2**23 + one row)."""
        if self._pool_noise is None:
            n = _NOISE_POOL + self.cols * self.wavelengths.size
            self._pool_noise = np.random.default_rng([self.seed, 0x0015E]).standard_normal(
                n, dtype=np.float32)
        return self._pool_noise

