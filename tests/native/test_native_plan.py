"""The native backend runs a ChainPlan: the one given, shared with the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends.native import NativeBackend
from edge.backends.numpy_backend import NumpyBackend
from edge.core.chain import MAP_NAMES, PackSpec
from edge.errors import ConfigError
from edge.processing.plan import ChainPlan
from hsi_cuda_scenes import make_scene


def test_one_plan_for_native_and_reference(native):
    s = make_scene(9, 11, 31, seed=61)
    spec = PackSpec(spectra_bands=tuple(range(0, 31, 3)), maps=("sto2", "nir"))
    plan = ChainPlan.build(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                           baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec)
    nat = NativeBackend(plan, cache_dir=native.cache_dir, threads=2)
    assert nat.plan is plan and not hasattr(nat, "_ref")   # no hidden reference backend
    # An exposure other than the reference's: the plan's factor, the flat field untouched.
    res = nat.run(s.raw, exposure_us=1250.0)
    ref = NumpyBackend(plan).run(s.raw, exposure_us=1250.0)
    assert s.flatfield.dark_mismatch is False
    np.testing.assert_array_equal(res.reflectance, ref.reflectance)   # bit for bit
    np.testing.assert_array_equal(res.flags, ref.flags)
    for name in MAP_NAMES:
        r, g = ref.maps[name], res.maps[name]
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        ok = np.isfinite(r)
        assert np.linalg.norm(g[ok] - r[ok]) <= 1e-4 * max(np.linalg.norm(r[ok]), 1e-6), name
    assert np.linalg.norm(res.input - ref.input) <= 1e-5 * np.linalg.norm(ref.input)


def test_native_plan_with_options_is_refused(native):
    plan = ChainPlan.build(np.linspace(500, 1000, 31))
    with pytest.raises(ConfigError, match=r"native backend: eps given beside a ChainPlan"):
        NativeBackend(plan, eps=1e-3, cache_dir=native.cache_dir)
