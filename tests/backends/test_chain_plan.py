"""The chain plan (edge.processing.plan) and the core vocabulary (edge.core.chain).

One plan is built once and run by every backend; it never changes the flat field it holds,
and a backend built from options runs the same plan as one given it.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

import edge.backends.base as base
import edge.core.chain as chain
from edge.backends.cuda_params import MAP_NAMES as KERNEL_MAP_NAMES
from edge.backends.numpy_backend import NumpyBackend
from edge.errors import CalibrationError, ConfigError, DataFormatError
from edge.inference.modelcard import MAP_FEATURES
from edge.processing.flatfield import FlatField
from edge.processing.plan import ChainPlan
from edge.processing.sto2 import simulate_spectra

WL = np.linspace(500, 1000, 40)
ROWS, COLS = 5, 6
SPEC = chain.PackSpec(spectra_bands=tuple(range(0, 40, 4)), maps=("sto2", "thi"))


@pytest.fixture(scope="module")
def scene():
    refl, _ = simulate_spectra(WL, ROWS * COLS, seed=11, fwhm_nm=10.0)
    refl = refl.reshape(ROWS, COLS, WL.size)
    dark = np.full(refl.shape, 40.0, np.float32)
    white = np.full(refl.shape, 900.0, np.float32)
    raw = np.rint(40 + refl / 0.99 * 860).astype(np.uint16)
    return dark, white, raw


def _flatfield(scene) -> FlatField:
    dark, white, _ = scene
    return FlatField.from_references(dark, white, exposure_us=1000, white_exposure_us=1000)


def test_vocabulary_has_one_definition():
    for name in ("PackSpec", "ChainResult", "chain_bytes", "FLAG_NAMES", "MAP_NAMES",
                 "FLAG_SATURATED", "FLAG_UNMIX_INVALID"):
        assert getattr(base, name) is getattr(chain, name), name   # re-exported, not copied
    assert KERNEL_MAP_NAMES is chain.MAP_NAMES and MAP_FEATURES is chain.MAP_NAMES


def test_processing_and_model_card_do_not_import_backends():
    code = ("import sys, edge.processing.flatfield, edge.processing.pack, "
            "edge.processing.plan, edge.inference.modelcard; "
            "print(sorted(m for m in sys.modules if m.startswith('edge.backends')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_backend_from_a_plan_equals_backend_from_options(scene):
    ff = _flatfield(scene)
    raw = scene[2]
    plan = ChainPlan.build(WL, flatfield=ff, fwhm_nm=10.0, pack=SPEC)
    a = NumpyBackend(plan).run(raw, exposure_us=1000)
    b = NumpyBackend(WL, flatfield=ff, fwhm_nm=10.0, pack=SPEC).run(raw, exposure_us=1000)
    assert NumpyBackend(plan).plan is plan
    np.testing.assert_array_equal(a.reflectance, b.reflectance)
    np.testing.assert_array_equal(a.flags, b.flags)
    np.testing.assert_array_equal(a.input, b.input)
    for name in chain.MAP_NAMES:
        np.testing.assert_array_equal(a.maps[name], b.maps[name])


def test_plan_and_options_together_are_refused(scene):
    plan = ChainPlan.build(WL, fwhm_nm=10.0)
    with pytest.raises(ConfigError, match=r"numpy backend: fwhm_nm, pack given beside a "
                                          r"ChainPlan, which already holds its configuration"):
        NumpyBackend(plan, pack=SPEC, fwhm_nm=10.0)


def test_other_exposure_leaves_the_flat_field_unchanged(scene, caplog):
    ff = _flatfield(scene)
    raw = scene[2]
    plan = ChainPlan.build(WL, flatfield=ff, fwhm_nm=10.0)
    be = NumpyBackend(plan)
    assert not plan.dark_mismatch(raw, 1000) and plan.dark_mismatch(raw, 2000)
    assert not plan.dark_mismatch(raw.astype(np.float32), 2000)    # reflectance: no dark
    with caplog.at_level(logging.WARNING, logger="edge.processing.plan"):
        res = be.run(raw, exposure_us=2000)
        ref = be.run_reference(raw, exposure_us=2000)
        be.run(raw, exposure_us=2000)
    assert ff.dark_mismatch is False and ff._warned == set()   # the caller's object: untouched
    warnings = [r for r in caplog.records if "capture a new dark" in r.getMessage()]
    assert len(warnings) == 1                                     # once per exposure, per plan
    # The same arithmetic as FlatField.apply (which does record the mismatch on itself).
    refl, flags = _flatfield(scene).apply(raw, 2000)
    np.testing.assert_array_equal(res.reflectance, refl)
    np.testing.assert_array_equal(ref.reflectance, refl)
    assert plan.exposure_factor(raw, 2000) == 0.5


@pytest.mark.parametrize("exposure", [0.0, -5.0, float("nan"), float("inf")])
def test_plan_rejects_bad_exposure(scene, exposure):
    plan = ChainPlan.build(WL, flatfield=_flatfield(scene), fwhm_nm=10.0)
    with pytest.raises(CalibrationError, match=r"exposure_us: expected a finite exposure > 0"):
        plan.exposure_factor(scene[2], exposure)


def test_plan_checks_configuration_and_frames(scene):
    with pytest.raises(DataFormatError, match=r"pack.maps: unknown map\(s\) \['oxygen'\]"):
        ChainPlan.build(WL, pack=chain.PackSpec(maps=("oxygen",)))
    with pytest.raises(DataFormatError, match=r"pack.spectra_bands: indices must be in "
                                              r"\[0, 39\], got \(40,\)"):
        ChainPlan.build(WL, pack=chain.PackSpec(spectra_bands=(40,)))
    with pytest.raises(CalibrationError, match=r"flatfield: reference has 40 bands, "
                                               r"wavelengths_nm has 20"):
        ChainPlan.build(WL[:20], flatfield=_flatfield(scene))
    plan = ChainPlan.build(WL, flatfield=_flatfield(scene), fwhm_nm=10.0)
    with pytest.raises(CalibrationError, match=r"raw: frame shape \(4, 6, 40\) does not match "
                                               r"the calibration reference shape \(5, 6, 40\)"):
        plan.check_frame(scene[2][:4])
    big = scene[2].astype(">u2")
    fixed = plan.check_frame(big, compiled=True)
    assert fixed.dtype == np.uint16 and fixed.dtype.isnative
    np.testing.assert_array_equal(fixed, scene[2])
    with pytest.raises(DataFormatError, match=r"raw: expected uint16 counts or float32 "
                                              r"reflectance, got int32"):
        plan.check_frame(scene[2].astype(np.int32), compiled=True)
