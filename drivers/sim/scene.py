"""Synthetic surgical scenes with per-pixel ground truth.

A scene is a laparoscopic-looking view: smooth organ-like regions framed by a surgical drape,
texture in the tissue parameters, a few specular highlights, a malperfused patch
whose StO2 falls over time, and breathing motion (a small periodic shift of the whole view).

Class ids (:data:`SCENE_CLASSES`, stable):

== ============ ================================================================
id name         tissue parameters (mean, FACTS.md "Physiological ranges")
== ============ ================================================================
0  background   surgical drape (green cloth; not tissue, StO2/blood volume NaN)
1  liver        S 0.70, B 5.0 %, W 0.75, F 0.05, µs′(500) 15 cm⁻¹, b 1.0
2  bowel        S 0.78, B 3.0 %, W 0.80, F 0.05, µs′(500) 20 cm⁻¹, b 1.3
3  stomach      S 0.74, B 3.5 %, W 0.78, F 0.08, µs′(500) 22 cm⁻¹, b 1.2
4  fat          S 0.80, B 0.8 %, W 0.50, F 0.30, µs′(500) 28 cm⁻¹, b 1.1
5  muscle       S 0.65, B 4.0 %, W 0.75, F 0.02, µs′(500) 12 cm⁻¹, b 1.5
6  malperfused  bowel-like with B 4.5 % (congestion); S falls from 0.55 to 0.25
== ============ ================================================================

Spectra use the tissue model of :mod:`edge.physics` (Jacques 2013 absorption mix, power-law
scattering, Farrell 1992 reflectance).  Band integration is the forward model's own: the
reflectance is evaluated on the 1 nm grid that covers every band ±4σ (clipped to the
450-1000 nm tables) and integrated with the Gaussian band responses of
:func:`edge.physics.band_weights` -- exactly what :func:`edge.physics.tissue_reflectance`
does with ``fwhm_nm``, and so what the StO2 calibration is fitted on; the two agree to float32
rounding (``tests/drivers/sim/test_scene_render.py``).  The bands share the grid, so this costs
one model evaluation per nm of the covered range (tivita ~520, snapshot16 ~180, snapshot25
~360 per pixel), not one per band and nm.  The renderer used to average µa over each band and
evaluate the model once at the band centre: that is biased where µa changes within a band
(up to 13 % relative at 591 nm, +5 to +11 points of StO2 on snapshot16;
/work/shared/research/science.md, defect 2).  A 5-node Gauss rule per band was measured as
the cheaper alternative (300 random spectra over the scene's parameter limits, against the
dense integration): StO2 differences of mean/max 0.04/0.11 points on tivita, 0.12/0.44 on
snapshot16 but 1.5/6.8 on snapshot25, whose unmixing is ill conditioned enough to turn
0.2 % reflectance errors into points -- not good enough, and on tivita it costs as many model
evaluations as the dense grid.

Texture: each tissue parameter is its class mean plus a smooth random field (a coarse grid
at the scale of the organ layout) plus a fine grain.  The grain is white noise filtered with
a Gaussian of :data:`~drivers.sim.presets.TEXTURE_SIGMA_MM` (1.5 mm) at the scene's pixel
size ``pixel_mm``: light spreads laterally over 1/µeff (about 0.4 mm at 560 nm, 4 mm at
800 nm) before it leaves the tissue, so a camera cannot see tissue variation from one 0.5 mm
pixel to the next -- and a per-pixel grain put about 2 points of StO2 texture into the ground
truth that no camera could resolve (science.md defect 8).  The texture is added to the class
means after they are painted, so organ and perfusion boundaries stay sharp steps.

Species (:data:`SPECIES`, :class:`Species`): named presets of optics modifiers applied to the
class means above before the texture is added -- a′ multiplier and b offset of the scattering
power law, blood-volume multiplier, fat and water offsets, and a melanin volume fraction
weighted per class (:data:`MELANIN_WEIGHT`).  They model the differences between the species
of the xeno-learning study (FACTS.md, "The science behind the product") so that a model can be
trained on one and tested on another.  The default, ``"pig"``, is the identity: the species code changes
no bit of its renders (tested against stored renders: ``scene_reference_v2.npz``, made when
the band integration and the texture scale changed; v1 held the renders before species).  ``malperfused_patch=False`` renders the same scene without the patch (the patch
pixels keep their organ): the "before clamping" recording of the same view, used to learn
perfused→malperfused spectral changes (:mod:`edge.models.train.xeno`).

Speed: the static scene (on a canvas padded by the breathing amplitude) is computed once;
each frame crops it at the breathing offset and recomputes only the malperfused pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivers.sim.presets import TEXTURE_SIGMA_MM
from drivers.sim.tissue_classes import (CLASS_PARAMS, DEFAULT_SPECIES, MELANIN_WEIGHT,
                                        SCENE_CLASSES, SPECIES, Species, get_species)
from drivers.sim.workers import worker_pool
from edge.errors import ConfigError
from edge.physics import band_weights, chromophore_range, chromophore_spectra
from edge.physics.reflectance import FWHM_TO_SIGMA, internal_reflection_A

__all__ = ["SCENE_CLASSES", "CLASS_PARAMS", "MELANIN_WEIGHT", "SPECIES", "DEFAULT_SPECIES",
           "Species", "get_species", "SceneSample", "SurgicalScene"]

#: Texture amplitude (absolute rms) per parameter, and the physiological clip range.
_TEXTURE = (0.04, 0.006, 0.03, 0.02, 2.0, 0.08)
_LIMITS = ((0.0, 1.0), (0.005, 0.065), (0.5, 0.8), (0.0, 0.3), (5.0, 40.0), (0.5, 2.0))
_CHROMOPHORES = ("HbO2", "Hb", "water", "fat")
#: Pixels per block in the reflectance computation (a few MB of float32 temporaries on the
#: fine grid).
_BLOCK = 512


@dataclass
class SceneSample:
    """One rendered scene state (read-only arrays).

    Attributes
    ----------
    reflectance : ndarray (rows, cols, bands), float32
        Noise-free reflectance the camera sees (diffuse + specular).
    classes : ndarray (rows, cols), uint8
        Class ids of :data:`SCENE_CLASSES`.
    sto2, blood_volume : ndarray (rows, cols), float32
        Tissue parameters (NaN on the background).
    """

    reflectance: np.ndarray
    classes: np.ndarray
    sto2: np.ndarray
    blood_volume: np.ndarray


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Zero-mean, unit-rms smooth random field: a coarse random grid interpolated with
    Gaussian kernels (separable, so it costs two small matmuls)."""
    cy, cx = cells
    grid = rng.standard_normal((cy, cx))

    def kernel(n: int, c: int) -> np.ndarray:
        pos = (np.arange(n) + 0.5) / n * c - 0.5
        k = np.exp(-0.5 * ((pos[:, None] - np.arange(c)[None, :]) / 0.6) ** 2)
        return k / k.sum(axis=1, keepdims=True)

    f = kernel(h, cy) @ grid @ kernel(w, cx).T
    f -= f.mean()
    return f / max(float(f.std()), 1e-12)


def _gaussian_grain(rng: np.random.Generator, h: int, w: int, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-rms white noise filtered with a Gaussian of ``sigma_px`` pixels
    (separable, truncated at 4σ, mirrored edges; plain NumPy so that rendering a scene loads
    no SciPy)."""
    noise = rng.standard_normal((h, w))
    if sigma_px >= 0.2:
        half = int(math.ceil(4.0 * sigma_px))
        x = np.arange(-half, half + 1, dtype=np.float64)
        k = np.exp(-0.5 * (x / sigma_px) ** 2)
        k /= k.sum()
        for axis in (0, 1):
            pad = [(0, 0), (0, 0)]
            pad[axis] = (half, half)
            padded = np.pad(noise, pad, mode="symmetric" if half < noise.shape[axis]
                            else "wrap")
            noise = np.apply_along_axis(np.convolve, axis, padded, k, mode="valid")
    noise -= noise.mean()
    return noise / max(float(noise.std()), 1e-12)


def _drape_spectrum(wl: np.ndarray) -> np.ndarray:
    """Reflectance of a green surgical drape: a dye band near 520 nm, NIR-transparent dye."""
    return (0.06 + 0.10 * np.exp(-0.5 * ((wl - 520.0) / 35.0) ** 2)
            + 0.45 / (1.0 + np.exp(-(wl - 700.0) / 18.0)))


class SurgicalScene:
    """Deterministic synthetic scene generator.

    Parameters
    ----------
    wavelengths_nm : ndarray of shape (bands,)
        Band centres in nm (within 450-1000 nm).
    rows, cols : int
        View size in pixels.
    fwhm_nm : float
        Camera band FWHM (absorption is band-averaged, see module docstring).
    seed : int
        Selects the layout, textures and highlights.
    breathing_amplitude_px : float
        Peak vertical shift of the breathing motion (horizontal is 40 % of it).
    breathing_period_s : float
        Breathing period (about 15 breaths per minute).
    malperfusion : (start, end, tau_s)
        StO2 of the malperfused patch falls as ``end + (start − end)·exp(−t/tau)``.
    n : float
        Refractive index of tissue (Farrell boundary term).
    species : str or Species
        Tissue-optics preset (:data:`SPECIES`); default ``"pig"`` = the reference optics.
    malperfused_patch : bool
        False renders the same view without the malperfused patch (its pixels keep their
        organ class and parameters); everything else, noise included, is unchanged.
    pixel_mm : float
        Size of a pixel on the tissue, mm (sets the scale of the fine texture; the camera
        passes its preset's :attr:`~drivers.sim.presets.CameraPreset.pixel_mm`).
    """

    def __init__(self, wavelengths_nm: np.ndarray, rows: int, cols: int, *, fwhm_nm: float = 10.0,
                 seed: int = 0, breathing_amplitude_px: float = 3.0,
                 breathing_period_s: float = 4.0,
                 malperfusion: tuple[float, float, float] = (0.55, 0.25, 30.0),
                 n: float = 1.4, species: "str | Species" = DEFAULT_SPECIES,
                 malperfused_patch: bool = True, pixel_mm: float = 0.5) -> None:
        self.species = get_species(species)
        if isinstance(pixel_mm, bool) or not isinstance(pixel_mm, (int, float)) \
                or not 0.001 <= pixel_mm <= 100.0:
            raise ConfigError(f"pixel_mm: expected a pixel size in mm within [0.001, 100], "
                              f"got {pixel_mm!r}")
        self.pixel_mm = float(pixel_mm)
        if not isinstance(malperfused_patch, bool):
            raise ConfigError(f"malperfused_patch: expected True or False, got "
                              f"{malperfused_patch!r}")
        self.malperfused_patch = malperfused_patch
        self.wavelengths = np.asarray(wavelengths_nm, dtype=np.float64)
        self.rows, self.cols = int(rows), int(cols)
        self.breathing_amplitude_px = float(breathing_amplitude_px)
        self.breathing_period_s = float(breathing_period_s)
        self.malperfusion = tuple(float(v) for v in malperfusion)
        self._margin = int(math.ceil(self.breathing_amplitude_px)) + 1
        self._big_a = np.float32(internal_reflection_A(n))
        self._fine = self._fine_grid(fwhm_nm)
        # (n_fine, bands): the band responses of the forward model, applied by one matmul.
        self._band_w = np.ascontiguousarray(
            band_weights(self._fine, self.wavelengths, fwhm_nm).T.astype(np.float32))
        self._basis = chromophore_spectra(_CHROMOPHORES, self._fine).astype(np.float32)
        self._log_wl = np.log(self._fine / 500.0).astype(np.float32)
        self._melanin_basis = (chromophore_spectra(("melanin",), self._fine)[0]
                               .astype(np.float32) if self.species.melanin > 0 else None)
        self._seed = int(seed)
        self._build(np.random.default_rng([int(seed), 0x5CE7E]))
        self._last_s: float | None = None

    # -- construction --------------------------------------------------------------------
    def _fine_grid(self, fwhm_nm: float) -> np.ndarray:
        """The 1 nm grid of :func:`edge.physics.tissue_reflectance` (bands ±4σ, clipped to
        the absorption tables)."""
        names = _CHROMOPHORES + ("melanin",)
        lo = max(chromophore_range(c)[0] for c in names)
        hi = min(chromophore_range(c)[1] for c in names)
        half = 4.0 * FWHM_TO_SIGMA * fwhm_nm
        return np.arange(max(lo, math.floor(self.wavelengths[0] - half)),
                         min(hi, math.ceil(self.wavelengths[-1] + half)) + 0.5, 1.0)

    def _build(self, rng: np.random.Generator) -> None:
        m = self._margin
        h, w = self.rows + 2 * m, self.cols + 2 * m
        yy, xx = np.mgrid[0:h, 0:w]
        ny = (yy - (h - 1) / 2) / (h / 2)
        nx = (xx - (w - 1) / 2) / (w / 2)
        # Organ layout: argmax of smooth random scores, one per organ class.
        organs = [SCENE_CLASSES.index(c) for c in ("liver", "bowel", "stomach", "fat", "muscle")]
        scores = np.stack([_smooth_field(rng, h, w, (3, 4)) for _ in organs])
        classes = np.asarray(organs, dtype=np.uint8)[np.argmax(scores, axis=0)]
        # Surgical drape around an elliptical, wobbly opening.
        radius = np.sqrt(ny ** 2 + nx ** 2) + 0.08 * _smooth_field(rng, h, w, (4, 5))
        classes[radius > 0.92] = 0
        # Malperfused patch: an ellipse on tissue, off-centre.
        cy, cx = rng.uniform(-0.35, 0.35, 2)
        ry, rx = rng.uniform(0.18, 0.28, 2)
        patch = (((ny - cy) / ry) ** 2 + ((nx - cx) / rx) ** 2 < 1.0) & (classes != 0)
        if not self.malperfused_patch:  # geometry drawn anyway: the rng stream is unchanged
            patch = np.zeros_like(patch)
        classes[patch] = SCENE_CLASSES.index("malperfused")
        self._classes = classes

        # Per-pixel parameters: class mean + smooth texture + fine grain, clipped.
        # A seventh row (melanin fraction) only for species with melanin.
        params = np.zeros((7 if self._melanin_basis is not None else 6, h, w), dtype=np.float64)
        for cid, name in enumerate(SCENE_CLASSES[1:], start=1):
            sel = classes == cid
            means = self.species.class_means(name)
            for k in range(6):
                params[k][sel] = means[k]
            if params.shape[0] == 7:
                params[6][sel] = self.species.melanin * MELANIN_WEIGHT[name]
        grain_sigma_px = TEXTURE_SIGMA_MM / self.pixel_mm
        for k in range(6):
            grain = _gaussian_grain(rng, h, w, grain_sigma_px)
            tex = 0.8 * _smooth_field(rng, h, w, (12, 16)) + 0.6 * grain
            params[k] += _TEXTURE[k] * tex
            params[k] = np.clip(params[k], *_LIMITS[k])
        if params.shape[0] == 7:
            # Pigment texture from its own stream so the other draws stay those of the
            # identity species.
            mel_rng = np.random.default_rng([self._seed, 0x5CE7E, 1])
            params[6] *= np.clip(1.0 + 0.25 * _smooth_field(mel_rng, h, w, (12, 16)), 0.2, 2.0)
        self._params = params
        self._patch = patch
        self._patch_sto2_offset = params[0][patch] - CLASS_PARAMS["malperfused"][0]

        tissue = classes != 0
        refl = np.empty((h, w, self.wavelengths.size), dtype=np.float32)
        refl[tissue] = self.diffuse_reflectance(params[:, tissue])
        drape = _drape_spectrum(self.wavelengths).astype(np.float32)
        shade = (1.0 + 0.08 * _smooth_field(rng, h, w, (6, 8)))[~tissue].astype(np.float32)
        refl[~tissue] = shade[:, None] * drape[None, :]
        # Specular highlights: flat, bright, small; only on wet tissue.
        spec = np.zeros((h, w), dtype=np.float32)
        n_spots = max(1, int(round(10 * h * w / (480 * 640))))
        for _ in range(n_spots):
            sy, sx = rng.uniform(0, h), rng.uniform(0, w)
            sigma = rng.uniform(1.0, 4.0) * max(h, w) / 640
            spec += rng.uniform(0.3, 1.0) * np.exp(
                -0.5 * ((yy - sy) ** 2 + (xx - sx) ** 2) / max(sigma, 0.7) ** 2)
        spec *= tissue
        self._specular = spec
        refl += spec[:, :, None]
        self._refl = refl
        nan = np.float32(np.nan)
        self._sto2 = np.where(tissue, params[0], nan).astype(np.float32)
        self._blood = np.where(tissue, params[1], nan).astype(np.float32)

    def diffuse_reflectance(self, p: np.ndarray) -> np.ndarray:
        """Band-integrated Farrell reflectance of tissue parameter columns.

        Parameters
        ----------
        p : ndarray of shape (6, N) or (7, N)
            Rows sto2, blood_volume, water, fat, scatter_a (cm⁻¹ at 500 nm), scatter_b, and
            melanin (only for a species with melanin, whose basis the scene then holds).

        Returns
        -------
        ndarray of shape (N, bands), float32
            What :func:`edge.physics.tissue_reflectance` returns with this scene's band
            centres and FWHM (n = the scene's), to float32 rounding.

        Works in blocks of pixels on the shared worker pool: the temporaries of a block stay
        in cache and NumPy releases the GIL, so blocks run on all cores.
        """
        n = p.shape[1]
        out = np.empty((n, self.wavelengths.size), dtype=np.float32)
        starts = range(0, n, _BLOCK)

        def work(i: int) -> None:
            out[i:i + _BLOCK] = self._diffuse_block(p[:, i:i + _BLOCK])

        list(worker_pool().map(work, starts))
        return out

    def _diffuse_block(self, p: np.ndarray) -> np.ndarray:
        s, b, w, f, a, bb = (x.astype(np.float32) for x in p[:6])
        weights = np.stack([b * s, b * (1 - s), w, f], axis=1)
        mua = weights @ self._basis
        if p.shape[0] == 7:  # Jacques 2013: + M·µa,mel
            mua += p[6].astype(np.float32)[:, None] * self._melanin_basis[None, :]
        musp = a[:, None] * np.exp(-bb[:, None] * self._log_wl[None, :])
        # Farrell 1992 with x = mua/musp: albedo = 1/(1+x), sqrt(3(1-albedo)) = sqrt(3x/(1+x))
        # (x/(1+x) rather than 1 - albedo: no cancellation in float32 where x is small).
        mua /= musp
        albedo = 1.0 / (1.0 + mua)
        root = np.sqrt(3.0 * mua * albedo)
        r = 0.5 * albedo * np.exp(-root)
        r *= 1.0 + np.exp(np.float32(-4.0 / 3.0) * self._big_a * root)
        return r @ self._band_w

    # -- rendering -----------------------------------------------------------------------
    @property
    def classes_canvas(self) -> np.ndarray:
        """Class ids on the padded canvas (read-only view)."""
        v = self._classes.view()
        v.setflags(write=False)
        return v

    def malperfused_sto2(self, t_s: float) -> float:
        """Mean StO2 of the malperfused patch at scene time ``t_s``."""
        start, end, tau = self.malperfusion
        return end + (start - end) * math.exp(-max(t_s, 0.0) / tau)

    def offset(self, t_s: float) -> tuple[int, int]:
        """Breathing shift (dy, dx) in whole pixels at scene time ``t_s``."""
        phase = 2 * math.pi * t_s / self.breathing_period_s
        a = self.breathing_amplitude_px
        return int(round(a * math.sin(phase))), int(round(0.4 * a * math.sin(phase + 0.7)))

    def render(self, t_s: float) -> SceneSample:
        """The scene at time ``t_s`` seconds (deterministic).

        The arrays are read-only views of an internal canvas that is never modified after it
        was returned (updates copy it first), so earlier samples stay valid.
        """
        # StO2 steps of 0.005 (half a point): below any sensible error, and the patch is only
        # recomputed when the step changes.
        s_mean = round(self.malperfused_sto2(t_s) / 0.005) * 0.005
        if s_mean != self._last_s and np.any(self._patch):
            s = np.clip(s_mean + self._patch_sto2_offset, 0.0, 1.0)
            p = self._params[:, self._patch].copy()
            p[0] = s
            self._params[0][self._patch] = s
            self._sto2 = self._sto2.copy()
            self._sto2[self._patch] = s
            self._refl = self._refl.copy()
            self._refl[self._patch] = (self.diffuse_reflectance(p)
                                       + self._specular[self._patch][:, None])
            self._last_s = s_mean
        dy, dx = self.offset(t_s)
        m = self._margin
        win = (slice(m + dy, m + dy + self.rows), slice(m + dx, m + dx + self.cols))
        views = []
        for arr in (self._refl, self._classes, self._sto2, self._blood):
            v = arr[win]
            v.setflags(write=False)
            views.append(v)
        return SceneSample(*views)
