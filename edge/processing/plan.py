"""The chain plan: one configuration of the per-pixel chain, built and checked once.

A :class:`ChainPlan` holds everything that is constant while frames flow -- the wavelength
grid, the flat field, the unmixer, the StO2 table, the index layout, the pack spec -- and the
two rules every backend applies to a frame before its own arithmetic: the frame check
(:meth:`ChainPlan.check_frame`) and the exposure factor (:meth:`ChainPlan.exposure_factor`).
:meth:`ChainPlan.build` makes it from the options the backends take; every backend (numpy,
native, cuda) runs a plan, so the reference and the compiled chains start from the same
numbers and no backend builds another one to get them.

The plan never changes the objects it was given: a frame whose exposure differs from the flat
field's reference exposure is reported by :meth:`ChainPlan.dark_mismatch` (derived from the
plan and the frame), not by setting a flag on the caller's :class:`FlatField`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from edge.core.chain import FLAG_NONFINITE, MAP_NAMES, PackSpec
from edge.core.frame import validate_wavelengths
from edge.errors import CalibrationError, DataFormatError
from edge.processing.flatfield import FlatField
from edge.processing.indices import IndexParams, index_linear_terms
from edge.processing.quality import (QualityRules, model_sigma, quadratic_weights,
                                     registration_gain, resolve_spatial_h,
                                     resolve_spatial_radius, thb_floor)
from edge.processing.register import BandRegistration
from edge.processing.spatial import BilateralParams, guide_groups
from edge.processing.sto2 import Sto2Calibration
from edge.processing.unmixing import Unmixer, recommended_components

__all__ = ["ChainPlan", "pass_through"]

log = logging.getLogger(__name__)


def pass_through(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 reflectance without a flat field: non-finite pixels -> all-NaN + FLAG_NONFINITE.

    Returns
    -------
    reflectance : ndarray of shape (rows, cols, bands), float32 (a copy)
    flags : ndarray of shape (rows, cols), uint8
    """
    refl = np.array(cube, dtype=np.float32, copy=True)
    flags = np.zeros(cube.shape[:2], np.uint8)
    bad = ~np.isfinite(refl).all(axis=2)
    flags[bad] = FLAG_NONFINITE
    refl[bad] = np.nan
    return refl, flags


@dataclass(frozen=True, eq=False)
class ChainPlan:
    """One checked configuration of the per-pixel chain (see module docstring).

    Build it with :meth:`build`; the fields are the built objects.

    Attributes
    ----------
    wavelengths : ndarray of shape (bands,), float64
        Validated band centres (nm), ascending.
    flatfield : FlatField or None
        None: frames are float32 reflectance.
    unmixer : Unmixer
    calibration : Sto2Calibration
        StO2 table for this grid and unmixer (``processing.sto2_table``;
        :meth:`~edge.processing.sto2.Sto2Calibration.describe` names it).
    index_params : IndexParams
    index_terms : ndarray of shape (bands, m), float64
        Linear part of the TIVITA-style indices (:func:`index_linear_terms`).
    index_layout : dict of str to slice
        Column of each index term in ``A @ index_terms``.
    pack : PackSpec or None
        Network input to build; None: no input.
    quality : QualityRules or None
        StO2 standard error, validity bits and spatial step (issue 14,
        :mod:`edge.processing.quality`; the numpy, native and cuda backends run them);
        None: the chain as before.
    thb_min : float or None
        ``FLAG_LOW_BLOOD`` limit in this unmixing's THb units (:func:`thb_floor`).
    sigma_weights : ndarray of shape (bands, 3), float32, or None
        ``[P_o**2, P_d**2, P_o P_d]`` for the delta method.
    guide_terms : ndarray of shape (bands, G), float64, or None
        Band-group means of A: the spatial step's guide.
    bilateral : BilateralParams
        The spatial step's window; its radius resolved from the quality rules or the StO2
        table (:func:`~edge.processing.quality.resolve_spatial_radius`).
    model_sigma : float
        Calibration error in the stated StO2 standard error (fraction, quality rules).
    registration_gain : float
        Factor by which the registration lowered one pixel's StO2 variance
        (:func:`~edge.processing.quality.registration_gain`; 1 without): the spatial step's
        propagated variance is divided by it.
    registration : BandRegistration or None
        Resampling of a mosaic camera's bands to one kernel before the chain
        (:mod:`edge.processing.register`; :meth:`register`, run by every backend's
        ``checked_frame``);
        None: frames go in as delivered.
    """

    wavelengths: np.ndarray
    flatfield: FlatField | None
    unmixer: Unmixer
    calibration: Sto2Calibration
    index_params: IndexParams
    index_terms: np.ndarray
    index_layout: dict
    pack: PackSpec | None
    quality: QualityRules | None = None
    thb_min: float | None = None
    sigma_weights: np.ndarray | None = None
    guide_terms: np.ndarray | None = None
    bilateral: BilateralParams = field(default_factory=BilateralParams)
    model_sigma: float = 0.0
    registration_gain: float = 1.0
    registration: BandRegistration | None = None
    # Exposures already warned about: a log de-duplication cache, not configuration.
    _warned: set = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def build(cls, wavelengths_nm, *, flatfield: FlatField | None = None,
              chromophores: Sequence[str] | None = None,
              baseline: Sequence[str] | None = None, fwhm_nm: float | None = None,
              eps: float = 1e-4, index_params: IndexParams = IndexParams(),
              pack: PackSpec | None = None,
              calibration: Sto2Calibration | None = None,
              quality: QualityRules | None = None,
              registration: BandRegistration | None = None,
              sto2_table: str | None = None) -> "ChainPlan":
        """Check a configuration and build its objects.

        Parameters
        ----------
        wavelengths_nm : array_like (bands,)
        flatfield : FlatField or None
            None: frames are float32 reflectance.
        chromophores, baseline : sequence of str or None
            Unmixing basis; None: :func:`edge.processing.unmixing.recommended_components`.
        fwhm_nm : float or None
            Band FWHM used for the unmixing basis and the StO2 calibration table.
        eps : float
            Reflectance floor of the absorbance.
        index_params : IndexParams
        pack : PackSpec or None
        calibration : Sto2Calibration or None
            StO2 table; None: the one ``sto2_table`` chooses.
        quality : QualityRules or None
            StO2 sigma, validity bits and spatial step (numpy, native); None: none.
        registration : BandRegistration or None
            Band registration of a mosaic camera; its per-band noise gain goes into
            ``quality.noise`` (:attr:`~edge.processing.quality.NoiseModel.band_gain`) unless
            that already has one.
        sto2_table : str or None
            ``processing.sto2_table`` (:meth:`Sto2Calibration.select`, used when
            ``calibration`` is None): None the grid's base table (shipped or fitted), a
            shipped variant's name (``human``), or a path to a .csv table for this grid.

        Raises
        ------
        CalibrationError
            The flat field has another number of bands than the grid; ``sto2_table`` names
            no table for this grid (unknown variant, unreadable file, another grid's table);
            both ``calibration`` and ``sto2_table`` given.
        DataFormatError
            Unknown packed map or a packed band outside the grid.
        """
        wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
        rec_c, rec_b = recommended_components(wl)
        chromophores = rec_c if chromophores is None else tuple(chromophores)
        baseline = rec_b if baseline is None else tuple(baseline)
        if flatfield is not None and flatfield.shape[2] != wl.size:
            raise CalibrationError(f"flatfield: reference has {flatfield.shape[2]} bands, "
                                   f"wavelengths_nm has {wl.size}")
        unmixer = Unmixer(wl, chromophores, baseline, fwhm_nm=fwhm_nm, eps=eps)
        if calibration is not None and sto2_table is not None:
            raise CalibrationError(f"sto2_table: {sto2_table!r} chooses a table, and a "
                                   f"calibration table was given too; give one of them")
        calibration = calibration or Sto2Calibration.select(
            wl, fwhm_nm=fwhm_nm, chromophores=chromophores, baseline=baseline, eps=eps,
            table=sto2_table)
        if pack is not None:
            unknown = [m for m in pack.maps if m not in MAP_NAMES]
            if unknown:
                raise DataFormatError(f"pack.maps: unknown map(s) {unknown}; allowed: "
                                      f"{', '.join(MAP_NAMES)}")
            if pack.spectra_bands and (min(pack.spectra_bands) < 0
                                       or max(pack.spectra_bands) >= wl.size):
                raise DataFormatError(f"pack.spectra_bands: indices must be in [0, "
                                      f"{wl.size - 1}], got {pack.spectra_bands}")
        terms, layout = index_linear_terms(wl, index_params)
        extra = {}
        if registration is not None and registration.bands != wl.size:
            raise DataFormatError(f"registration: built for {registration.bands} bands, "
                                  f"wavelengths_nm has {wl.size}")
        if (registration is not None and isinstance(quality, QualityRules)
                and quality.noise is not None and quality.noise.band_gain is None):
            quality = dataclasses.replace(quality, noise=dataclasses.replace(
                quality.noise, band_gain=registration.variance_gain))
        if quality is not None:
            if not isinstance(quality, QualityRules):
                raise DataFormatError(f"quality: expected a QualityRules or None, got "
                                      f"{type(quality).__name__}")
            # null: the radius chosen with the preset's table (its spatial_radius header)
            r = resolve_spatial_radius(quality, calibration)
            bil = BilateralParams(radius=r, sigma_s=2.0 * r / 3.0,
                                  h=resolve_spatial_h(quality, calibration))
            extra = {"quality": quality, "bilateral": bil,
                     "sigma_weights": quadratic_weights(unmixer.pinv, unmixer.i_hbo2,
                                                        unmixer.i_hb),
                     "guide_terms": guide_groups(wl.size, bil.groups),
                     "thb_min": None if quality.min_blood_volume is None
                     else thb_floor(unmixer, quality.min_blood_volume, fwhm_nm),
                     "model_sigma": model_sigma(unmixer, calibration, fwhm_nm)
                     if quality.model_sigma is None else float(quality.model_sigma),
                     "registration_gain": registration_gain(unmixer, quality.noise, fwhm_nm)}
        return cls(wavelengths=wl, flatfield=flatfield, unmixer=unmixer,
                   calibration=calibration, index_params=index_params, index_terms=terms,
                   index_layout=layout, pack=pack, registration=registration, **extra)

    # ---- derived values ---------------------------------------------------------------------
    @property
    def bands(self) -> int:
        return int(self.wavelengths.size)

    @property
    def eps(self) -> float:
        """Reflectance floor of the absorbance (the unmixer's)."""
        return float(self.unmixer.eps)

    @property
    def index_minima_cols(self) -> np.ndarray | None:
        """Columns of ``index_terms`` holding the StO2 index's ``A''`` (r1 then r2 window);
        None when the grid lacks either window (the index is all NaN there)."""
        r1, r2 = self.index_layout["r1"], self.index_layout["r2"]
        if r1.stop == r1.start or r2.stop == r2.start:
            return None
        return np.r_[r1, r2]

    @property
    def saturation(self) -> float:
        """Raw counts at/above which a band is saturated (inf without a flat field)."""
        return self.flatfield.saturation if self.flatfield is not None else float(np.inf)

    # ---- per frame ----------------------------------------------------------------------------
    def check_raw(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` as an array of shape (rows, cols, bands); float32 without a flat field."""
        raw = np.asarray(raw)
        if raw.ndim != 3 or raw.shape[2] != self.bands:
            raise DataFormatError(f"raw: expected shape (rows, cols, {self.bands}), "
                                  f"got {raw.shape}")
        if self.flatfield is None and raw.dtype != np.float32:
            raise DataFormatError(f"raw: without a flatfield the backend takes float32 "
                                  f"reflectance, got {raw.dtype}")
        return raw

    def check_frame(self, raw: np.ndarray, *, compiled: bool = False) -> np.ndarray:
        """:meth:`check_raw` plus the checks every backend's ``run`` makes on a frame: counts
        must have the calibration reference's shape; ``compiled`` (the native and CUDA
        kernels) also needs uint16 counts or float32 reflectance in native byte order (a
        big-endian ``>u2`` frame is converted, not read byte-swapped).  The band
        registration is :meth:`register` (each backend's ``checked_frame`` runs both).
        """
        raw = self.check_raw(raw)
        ff = self.flatfield
        if ff is not None and raw.dtype != np.float32 and raw.shape != ff.shape:
            raise CalibrationError(f"raw: frame shape {raw.shape} does not match the "
                                   f"calibration reference shape {ff.shape}")
        if compiled:
            if not raw.dtype.isnative:
                raw = raw.astype(raw.dtype.newbyteorder("="))
            if raw.dtype not in (np.uint16, np.float32):
                raise DataFormatError(f"raw: expected uint16 counts or float32 reflectance, "
                                      f"got {raw.dtype}")
        return raw

    def register(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` with its bands registered (:attr:`registration`; unchanged without one):
        counts above the flat field's dark, its static flags left out, saturation kept."""
        reg = self.registration
        if reg is None:
            return raw
        ff = self.flatfield
        if ff is None or raw.dtype == np.float32:
            return reg.apply(raw)
        return reg.apply(raw, ff.dark, ff.static_flags, ff.saturation)

    def dark_mismatch(self, raw: np.ndarray, exposure_us: float | None) -> bool:
        """True when ``raw`` is rescaled from another exposure than the dark was recorded at
        (the reflectance is then approximate: capture a new dark)."""
        ff = self.flatfield
        return not (ff is None or np.asarray(raw).dtype == np.float32 or exposure_us is None
                    or exposure_us == ff.exposure_us)

    def exposure_factor(self, raw: np.ndarray, exposure_us: float | None) -> float:
        """``t_ref / t_I`` for a raw frame (1.0 for reflectance input or the reference
        exposure); logs a warning once per other exposure (:meth:`dark_mismatch`).

        Raises
        ------
        CalibrationError
            ``exposure_us`` not a finite value > 0.
        """
        if not self.dark_mismatch(raw, exposure_us):
            return 1.0
        ff = self.flatfield
        factor = ff.exposure_factor(exposure_us)
        if exposure_us not in self._warned:
            self._warned.add(exposure_us)
            log.warning("flat-field: frame exposure %g µs differs from the reference's %g µs; "
                        "reflectance rescaled but the dark was recorded at %g µs: capture a "
                        "new dark", exposure_us, ff.exposure_us, ff.exposure_us)
        return factor

    def calibrate(self, raw: np.ndarray, exposure_us: float | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance and flags of one frame, as :meth:`FlatField.apply` but leaving the flat
        field unchanged.

        Returns
        -------
        reflectance : ndarray of shape (rows, cols, bands), float32
        flags : ndarray of shape (rows, cols), uint8
        """
        raw = self.check_raw(raw)
        if self.flatfield is None or raw.dtype == np.float32:
            return pass_through(raw)
        return self.flatfield.calibrate(raw, self.exposure_factor(raw, exposure_us))
