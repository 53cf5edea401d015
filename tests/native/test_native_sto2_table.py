"""processing.sto2_table through the native CPU chain: the table a .csv path chooses is the
one the compiled chain applies (against the NumPy reference, tolerances of
test_native_chain.py: rtol 1e-5, atol 1e-6, NaN positions identical)."""

from __future__ import annotations

import numpy as np

from drivers.simulated import SimulatedCamera
from edge.backends.native import NativeBackend
from edge.backends.numpy_backend import NumpyBackend
from edge.processing.plan import ChainPlan
from edge.processing.sto2 import Sto2Calibration

RTOL, ATOL = 1e-5, 1e-6


def test_native_applies_the_path_table(native, tmp_path):
    cam = SimulatedCamera("snapshot25", rows=4, cols=5)
    wl, fwhm = cam.wavelengths, cam.fwhm_nm
    base = Sto2Calibration.for_grid(wl, fwhm_nm=fwhm)
    axis = None if base.n_rows == 1 else (base.thb_x0, base.thb_dx)
    path = tmp_path / "field.csv"
    Sto2Calibration(base.table_x, base.table_y * np.float32(0.5), base.meta,
                    thb_axis=axis).to_csv(path)
    plan_b = ChainPlan.build(wl, fwhm_nm=fwhm)
    plan_t = ChainPlan.build(wl, fwhm_nm=fwhm, sto2_table=str(path))
    rng = np.random.default_rng(1)
    um = plan_b.unmixer
    c = np.zeros((8, 9, um.basis.shape[1]))
    c[..., um.i_hbo2] = rng.uniform(0.0, 1.0, (8, 9))
    c[..., um.i_hb] = 1.0 - c[..., um.i_hbo2]
    a = c @ um.basis.T
    refl = np.exp(-2.0 * a / np.abs(a).max(axis=2, keepdims=True)).astype(np.float32)
    nat_t = NativeBackend(plan_t, cache_dir=native.cache_dir, threads=1)
    s_t = nat_t.run(refl, exposure_us=None).maps["sto2"]
    s_b = NativeBackend(plan_b, cache_dir=native.cache_dir, threads=1).run(
        refl, exposure_us=None).maps["sto2"]
    ref = NumpyBackend(plan_t).run(refl, exposure_us=None).maps["sto2"]
    assert np.isfinite(ref).sum() >= 60 and np.nanmax(ref) - np.nanmin(ref) > 0.15
    np.testing.assert_allclose(s_t, ref, rtol=RTOL, atol=ATOL, equal_nan=True)
    np.testing.assert_allclose(s_t, 0.5 * s_b, rtol=0, atol=1e-7, equal_nan=True)
