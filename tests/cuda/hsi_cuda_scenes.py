"""Shared helpers of the CUDA tests (CPU shim tests and GPU tests): reference scenes,
pointers and the relative-error comparator.

Scenes are modified Beer-Lambert spectra on the unmixing basis (recovered exactly by the
pseudo-inverse, FACTS.md), turned into uint16 raw counts through a random flat field, with a
few saturated, bad, under-exposed and non-finite pixels mixed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.backends.base import PackSpec
from edge.backends.cuda_params import chain_params
from edge.processing.flatfield import FlatField
from edge.processing.indices import IndexParams
from edge.processing.sto2 import Sto2Calibration
from edge.processing.unmixing import Unmixer, recommended_components

def ptr(a: np.ndarray | None) -> int | None:
    """Data pointer of a C-contiguous array (None -> NULL)."""
    if a is None:
        return None
    assert a.flags.c_contiguous, "pass C-contiguous arrays to the shim"
    return a.ctypes.data


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    """‖out − ref‖ / ‖ref‖ over the finite entries, after checking NaN sits where ref has it."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg="NaN pattern differs")
    fin = np.isfinite(ref)
    assert np.any(fin), "nothing finite to compare"
    den = np.linalg.norm(ref[fin])
    assert den > 0, "reference is all zero: compare on something non-trivial"
    return float(np.linalg.norm(out[fin] - ref[fin]) / den)


def synthetic_calibration(n: int = 256) -> Sto2Calibration:
    """A smooth monotone raw -> calibrated table (not fitted: the kernels only interpolate)."""
    x = np.linspace(-0.2, 1.2, n, dtype=np.float32)
    y = np.clip(0.5 + 0.6 * np.tanh(2.0 * (x.astype(np.float64) - 0.5)), 0, 1)
    return Sto2Calibration(x, np.maximum.accumulate(y).astype(np.float32))


def synthetic_calibration_2d(n: int = 256, rows: int = 5, q0: float = 0.14,
                             dq: float = 0.01) -> Sto2Calibration:
    """A table with a THb axis: ``rows`` curves like :func:`synthetic_calibration`'s, each
    shifted and steeper with THb, on sqrt(THb) rows ``q0 + j * dq``. The default axis
    (sqrt(THb) 0.14-0.18) lies inside make_scene's (about 0.124-0.198 unmixed), so its pixels
    fall below, between and above the rows."""
    x = np.linspace(-0.2, 1.2, n, dtype=np.float32).astype(np.float64)
    y = np.empty((rows, n))
    for j in range(rows):
        c, k = 0.4 + 0.05 * j, 1.5 + 0.4 * j
        y[j] = np.maximum.accumulate(np.clip(0.5 + 0.6 * np.tanh(k * (x - c)), 0, 1))
    return Sto2Calibration(x, y.astype(np.float32), thb_axis=(q0, dq))


@dataclass
class Scene:
    wl: np.ndarray
    unmixer: Unmixer
    calibration: Sto2Calibration
    index_params: IndexParams
    flatfield: FlatField
    raw: np.ndarray            # (rows, cols, bands) uint16
    reflectance: np.ndarray    # (rows, cols, bands) float32 with non-finite pixels
    pack: PackSpec


def make_scene(rows: int, cols: int, bands: int, seed: int,
               wl_range: tuple[float, float] = (500.0, 1000.0)) -> Scene:
    rng = np.random.default_rng(seed)
    wl = np.linspace(*wl_range, bands)
    chrom, base = recommended_components(wl)
    um = Unmixer(wl, chrom, base)
    k = len(um.components)
    c = np.zeros((rows, cols, k))
    c[..., um.i_hbo2] = rng.uniform(0.005, 0.05, (rows, cols))
    c[..., um.i_hb] = rng.uniform(0.005, 0.05, (rows, cols))
    for j in range(k):
        if j not in (um.i_hbo2, um.i_hb):
            c[..., j] = rng.uniform(0.0, 0.05, (rows, cols))
    refl = np.exp(-(c @ um.basis.T)).astype(np.float32)       # Beer-Lambert, exact for pinv
    # Flat field: 10-bit counts, white ~75 % of full scale (FACTS.md "Calibration practice").
    dark = rng.uniform(20, 40, (rows, cols, bands))
    white = dark + rng.uniform(600, 760, (rows, cols, bands))
    ff = FlatField.from_references(dark, white, exposure_us=1000.0, white_exposure_us=1000.0,
                                   rho_ref=0.99, bit_depth=10)
    raw = np.rint(dark + refl / 0.99 * (white - dark)).clip(0, 1023).astype(np.uint16)
    flat = raw.reshape(-1, bands)
    n = flat.shape[0]
    if n >= 8:
        flat[rng.integers(0, n), rng.integers(0, bands)] = 1023     # saturated band
        bad = np.zeros((rows, cols), bool)
        bad.flat[rng.integers(0, n)] = True
        white2 = white.copy()
        white2.reshape(-1, bands)[rng.integers(0, n), rng.integers(0, bands)] = dark.reshape(
            -1, bands)[0, 0] + 5                                      # under-exposed white
        ff = FlatField.from_references(dark, white2, exposure_us=1000.0,
                                       white_exposure_us=1000.0, rho_ref=0.99, bit_depth=10,
                                       bad_pixels=bad)
    refl_in = refl.copy()
    if n >= 8:
        refl_in.reshape(-1, bands)[rng.integers(0, n), rng.integers(0, bands)] = np.nan
        refl_in.reshape(-1, bands)[rng.integers(0, n), 0] = np.inf
    spec = PackSpec(spectra_bands=tuple(range(bands)), maps=("sto2", "thi"), dtype="float32")
    return Scene(wl, um, synthetic_calibration(), IndexParams(), ff, raw, refl_in, spec)


def params_for(scene, pack=None, zero_flagged=True):
    """The kernels' parameter block for a scene (the backends' own chain_params)."""
    return chain_params(scene.wl, scene.unmixer, scene.calibration, scene.index_params, pack,
                        saturation=scene.flatfield.saturation, zero_flagged=zero_flagged)
