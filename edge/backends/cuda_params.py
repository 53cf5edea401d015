"""Host side of the CUDA kernels' parameter block (``ChainParams`` in cuda_kernels/common.cuh).

The kernels read everything that is constant for a configuration -- the unmixing
pseudo-inverse, the StO2 table, the index windows and Savitzky-Golay taps, the pack channel
selection -- from one ``__constant__`` struct.  :data:`CHAIN_PARAMS_DTYPE` is its byte layout
(only 4-byte fields, so no padding; the CPU tests check it against ``sizeof``/``offsetof``
from the host shim), and :func:`chain_params` fills it from the same reference objects the
NumPy backend uses, so both backends run the same numbers.  No PyCUDA here: this module is
imported and tested on machines without a GPU.
"""

from __future__ import annotations

import numpy as np

from edge.core.chain import MAP_NAMES, PackSpec
from edge.errors import ConfigError
from edge.processing.indices import IndexParams, savgol_matrix

__all__ = ["MAX_BANDS", "MAX_COMPONENTS", "MAX_TABLE", "MAX_TABLE_ROWS", "MAX_CLASSES",
           "D2_TAPS", "MAP_NAMES",
           "CHAIN_PARAMS_DTYPE", "chain_params", "index_windows"]

# Limits of cuda_kernels/common.cuh (HSI_MAX_*); the CPU tests compare them with the header.
MAX_BANDS = 256
MAX_COMPONENTS = 8
MAX_TABLE = 256
MAX_TABLE_ROWS = 16      # rows of a 2-D StO2 table (its THb axis)
MAX_CLASSES = 256
D2_TAPS = 5
# MAP_NAMES (edge.core.chain, re-exported) is the map order of the kernels' ``maps`` output
# (HsiMapId); the CPU tests compare it with the header.

_i4, _f4 = np.int32, np.float32
CHAIN_PARAMS_DTYPE = np.dtype([
    ("nb", _i4), ("nk", _i4), ("i_hbo2", _i4), ("i_hb", _i4), ("eps", _f4),
    ("sat_level", _f4), ("n_table", _i4), ("table_x0", _f4), ("table_dx", _f4),
    ("n_rows", _i4), ("thb_x0", _f4), ("thb_dx", _f4),
    ("n_spec", _i4), ("n_maps", _i4), ("zero_flagged", _i4),
    ("mean_lo", _i4, 6), ("mean_hi", _i4, 6), ("mean_w", _f4, 6),
    ("ratio_off", _f4, 3), ("ratio_div", _f4, 3),
    ("min_lo", _i4, 2), ("min_hi", _i4, 2), ("s1", _f4), ("s2", _f4),
    ("d2_start", _i4, MAX_BANDS), ("d2_w", _f4, MAX_BANDS * D2_TAPS),
    ("pinv", _f4, MAX_COMPONENTS * MAX_BANDS),
    ("table_y", _f4, MAX_TABLE_ROWS * MAX_TABLE),     # (n_rows, n_table) packed, stride n_table
    ("spec_bands", _i4, MAX_BANDS), ("map_ids", _i4, 8),
])

_MEAN_WINDOWS = ("nir_num", "nir_den", "thi_num", "thi_den", "twi_num", "twi_den")


def _band_range(wl: np.ndarray, lo_hi: tuple[float, float]) -> tuple[int, int]:
    """Bands whose centres lie within [lo, hi] nm (indices.py's rule) as a range [i0, i1)."""
    idx = np.flatnonzero((wl >= lo_hi[0]) & (wl <= lo_hi[1]))
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)


def index_windows(wl: np.ndarray, params: IndexParams) -> dict[str, tuple[int, int]]:
    """Band ranges [i0, i1) of the TIVITA-style index windows on a grid (empty: (0, 0))."""
    out = {name: _band_range(wl, getattr(params, name + "_nm")) for name in _MEAN_WINDOWS}
    short = wl.size < params.sg_window       # no 2nd derivative on a grid this short
    out["r1"] = (0, 0) if short else _band_range(wl, params.sto2_r1_nm)
    out["r2"] = (0, 0) if short else _band_range(wl, params.sto2_r2_nm)
    return out


def chain_params(wavelengths_nm: np.ndarray, unmixer, calibration, index_params: IndexParams,
                 pack: PackSpec | None = None, *, saturation: float = np.inf,
                 zero_flagged: bool = True) -> np.ndarray:
    """Fill one ChainParams block.

    Parameters
    ----------
    wavelengths_nm : ndarray (bands,), float64
    unmixer : edge.processing.unmixing.Unmixer
        Supplies ``pinv`` (k, bands) float32, ``i_hbo2``, ``i_hb`` and ``eps``.
    calibration : edge.processing.sto2.Sto2Calibration
        Supplies ``table_grid`` (rows, knots) float32, the float32 ``x0`` / ``dx`` and,
        for a table with a THb axis (``n_rows`` > 1), ``thb_x0`` / ``thb_dx`` (sqrt(THb)).
    index_params : IndexParams
    pack : PackSpec or None
    saturation : float
        Raw counts at/above which a band is saturated (``FlatField.saturation``).
    zero_flagged : bool
        Pack flagged pixels as 0 (the backend's rule; ``pack_input`` alone does not).

    Returns
    -------
    ndarray of shape (), dtype :data:`CHAIN_PARAMS_DTYPE`

    Raises
    ------
    ConfigError
        If the configuration exceeds what the kernels support (bands, components, table
        length, Savitzky-Golay window, packed maps).
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    nb, pinv = wl.size, np.asarray(unmixer.pinv, dtype=np.float32)
    nk = pinv.shape[0]
    if not 1 <= nb <= MAX_BANDS:
        raise ConfigError(f"bands: the compiled kernels (cuda, native) support 1-{MAX_BANDS} bands, got {nb}")
    if not 1 <= nk <= MAX_COMPONENTS:
        raise ConfigError(f"unmixing components: the compiled kernels (cuda, native) support 1-{MAX_COMPONENTS}, "
                          f"got {nk} {tuple(unmixer.components)}")
    ty = np.asarray(calibration.table_grid, dtype=np.float32)
    n_rows, n_knots = ty.shape
    if not 2 <= n_knots <= MAX_TABLE:
        raise ConfigError(f"StO2 calibration table: the compiled kernels (cuda, native) support 2-{MAX_TABLE} "
                          f"knots, got {n_knots}")
    if not 1 <= n_rows <= MAX_TABLE_ROWS:
        raise ConfigError(f"StO2 calibration table: the compiled kernels (cuda, native) support 1-"
                          f"{MAX_TABLE_ROWS} rows on its THb axis, got {n_rows}")
    if index_params.sg_window > D2_TAPS:
        raise ConfigError(f"index_params.sg_window: the compiled kernels (cuda, native) support windows up to "
                          f"{D2_TAPS}, got {index_params.sg_window}")
    p = np.zeros((), CHAIN_PARAMS_DTYPE)
    p["nb"], p["nk"] = nb, nk
    p["i_hbo2"], p["i_hb"] = unmixer.i_hbo2, unmixer.i_hb
    p["eps"], p["sat_level"] = unmixer.eps, saturation
    p["n_table"], p["table_x0"], p["table_dx"] = n_knots, calibration.x0, calibration.dx
    p["n_rows"], p["thb_x0"], p["thb_dx"] = n_rows, calibration.thb_x0, calibration.thb_dx
    p["table_y"][:ty.size] = ty.ravel()     # row stride n_knots (common.cuh)
    p["pinv"].reshape(MAX_COMPONENTS, MAX_BANDS)[:nk, :nb] = pinv

    win = index_windows(wl, index_params)
    for i, name in enumerate(_MEAN_WINDOWS):
        lo, hi = win[name]
        p["mean_lo"][i], p["mean_hi"][i] = lo, hi
        # float32 of the reference weight 1/count (indices.index_linear_terms)
        p["mean_w"][i] = 1.0 / (hi - lo) if hi > lo else 0.0
    ip = index_params
    p["ratio_off"] = (0.0, ip.thi_offset, ip.twi_offset)
    p["ratio_div"] = (ip.nir_scale, ip.thi_scale, ip.twi_scale)
    p["s1"], p["s2"] = ip.sto2_s1, ip.sto2_s2
    (p["min_lo"][0], p["min_hi"][0]), (p["min_lo"][1], p["min_hi"][1]) = win["r1"], win["r2"]
    if nb >= ip.sg_window:
        # The 2nd-derivative operator as taps per band (edges included) from the reference
        # matrix: A''[i] = sum_j D[start + j, i] * A[start + j].
        d = savgol_matrix(nb, ip.sg_window, ip.sg_order, 2)
        starts = np.clip(np.arange(nb) - D2_TAPS // 2, 0, max(nb - D2_TAPS, 0))
        w = p["d2_w"].reshape(MAX_BANDS, D2_TAPS)
        for i in range(nb):
            s = int(starts[i])
            taps = d[s:s + D2_TAPS, i]
            if not np.allclose(np.delete(d[:, i], np.arange(s, s + taps.size)), 0):
                raise ConfigError(f"index_params.sg_window: band {i}'s derivative does not fit "
                                  f"{D2_TAPS} taps")
            p["d2_start"][i] = s
            w[i, :taps.size] = taps

    if pack is not None:
        unknown = [m for m in pack.maps if m not in MAP_NAMES]
        if unknown:
            raise ConfigError(f"pack.maps: unknown map(s) {unknown}; allowed: "
                              f"{', '.join(MAP_NAMES)}")
        if len(pack.maps) > 8:
            raise ConfigError(f"pack.maps: the CUDA kernels pack at most 8 maps, got "
                              f"{len(pack.maps)}")
        bands = np.asarray(pack.spectra_bands, dtype=np.int64)
        if bands.size and (bands.min() < 0 or bands.max() >= nb):
            raise ConfigError(f"pack.spectra_bands: indices must be in [0, {nb - 1}], got "
                              f"{pack.spectra_bands}")
        p["n_spec"], p["n_maps"] = bands.size, len(pack.maps)
        p["spec_bands"][:bands.size] = bands
        p["map_ids"][:len(pack.maps)] = [MAP_NAMES.index(m) for m in pack.maps]
    p["zero_flagged"] = int(bool(zero_flagged))
    return p
