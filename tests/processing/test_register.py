"""Band registration of a mosaic camera (edge.processing.register, issue 14).

The camera side is the simulator's own misregistration (drivers.sim.sensor.SensorModel
.misregister, bilinear sampling at drivers.sim.mosaic.mosaic_offsets); registration must give
every band the same kernel, keep flat regions unchanged, keep flagged and saturated pixels from
leaking into their neighbours, and state its noise gain truthfully.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from drivers.sim.mosaic import mosaic_offsets, shift_bilinear
from drivers.simulated import SimulatedCamera
from edge.errors import ConfigError, DataFormatError
from edge.pipeline.backend_factory import band_registration, make_backend, quality_rules
from edge.pipeline.config import AppConfig, ProcessingSettings
from edge.processing.quality import NoiseModel, sto2_raw_variance_mixed
from edge.processing.register import TAPS, BandRegistration


def _reg(bands=25, mosaic=5) -> BandRegistration:
    return BandRegistration.from_offsets(mosaic_offsets(bands, mosaic), bands)


def _misregister(cube: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    out = np.empty_like(cube)
    for k, (dy, dx) in enumerate(offsets):
        out[:, :, k] = shift_bilinear(cube[:, :, k], dy, dx)
    return out


def _cfg(**proc) -> AppConfig:
    return dataclasses.replace(AppConfig(), processing=dataclasses.replace(
        ProcessingSettings(), backend="numpy", quality=True, **proc))


@pytest.mark.parametrize("bands,mosaic", [(16, 4), (25, 5)])
def test_every_band_ends_with_the_same_kernel(bands, mosaic):
    """Camera (bilinear at +δ) then registration: one symmetric kernel for every band, the
    farthest band's [w, 1 - 2w, w], within 4e-3 of a tap (5-tap least squares)."""
    reg = _reg(bands, mosaic)
    np.testing.assert_allclose(reg.ky.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(reg.kx.sum(axis=1), 1.0, atol=1e-12)
    eff = []
    for k, d in enumerate(mosaic_offsets(bands, mosaic)[:, 0]):
        cam = np.zeros(2 * TAPS + 1)
        cam[TAPS] = 1 - abs(d)
        cam[TAPS + int(np.sign(d))] += abs(d)     # S(r) = (1-|d|) R(r) + |d| R(r + sign d)
        # registered(r) = sum_t h[t] S(r + t): the kernel on R is the correlation of both
        eff.append(np.convolve(reg.ky[k][::-1], cam[::-1])[::-1][TAPS:-TAPS])
    eff = np.array(eff)
    far = eff[np.argmax(np.abs(mosaic_offsets(bands, mosaic)[:, 0]))]
    np.testing.assert_allclose(eff, np.broadcast_to(far, eff.shape), atol=4e-3)
    np.testing.assert_allclose(eff, eff[:, ::-1], atol=4e-3)       # centred on the pixel
    w = far[TAPS - 1]
    np.testing.assert_allclose(far, [0, w, 1 - 2 * w, w, 0], atol=1e-12)
    # without registration the bands' kernels differ by up to 2 x max |offset| of a tap
    assert np.abs(reg.ky).max() < 1


def test_an_edge_seen_through_the_mosaic_is_one_profile_in_every_band():
    """A vertical step between two reflectances: misregistered by the simulator's sampling,
    bands disagree by up to 0.4 of the step at the edge; registered, within 0.02 of it."""
    bands, rows, cols = 25, 12, 20
    off = mosaic_offsets(bands, 5)
    scene = np.full((rows, cols, bands), 0.2, np.float32)
    scene[:, 10:] = 0.6
    seen = _misregister(scene, off)
    spread = np.ptp(seen, axis=2)
    assert spread.max() == pytest.approx(0.4 * 0.4, rel=1e-5)
    out = _reg().apply(seen)
    assert np.ptp(out, axis=2).max() < 0.02 * 0.4
    # flat regions are untouched (kernels sum to 1)
    np.testing.assert_allclose(out[:, :7], 0.2, rtol=1e-6)
    np.testing.assert_allclose(out[:, 13:], 0.6, rtol=1e-6)


def test_uniform_counts_come_back_unchanged_and_uint16():
    reg = _reg()
    raw = np.full((9, 11, 25), 500, np.uint16)
    dark = np.full(raw.shape, 16.5, np.float32)
    out = reg.apply(raw, dark)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, raw)


def test_variance_gain_is_the_noise_the_registration_leaves():
    """White noise through the registration: each band's variance falls by variance_gain
    (measured on 200x200 samples: within 4 %)."""
    reg = _reg()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 200, 25)).astype(np.float32)
    out = reg.apply(x)
    measured = out[TAPS:-TAPS, TAPS:-TAPS].var(axis=(0, 1))
    np.testing.assert_allclose(measured, reg.variance_gain, rtol=0.04)
    assert reg.variance_gain.max() < 0.3          # the 5x5 mosaic's bands: 0.15-0.28


def test_a_flagged_pixel_does_not_leak_into_its_neighbours():
    reg = _reg()
    rng = np.random.default_rng(2)
    raw = rng.integers(300, 700, (15, 17, 25)).astype(np.uint16)
    dark = np.full(raw.shape, 16.0, np.float32)
    flags = np.zeros((15, 17), np.uint8)
    flags[7, 8] = 4
    a, b = raw.copy(), raw.copy()
    a[7, 8] = 0
    b[7, 8] = 1023
    out_a = reg.apply(a, dark, flags)
    out_b = reg.apply(b, dark, flags)
    mask = np.ones((15, 17), bool)
    mask[7, 8] = False
    np.testing.assert_array_equal(out_a[mask], out_b[mask])
    np.testing.assert_array_equal(out_a[7, 8], a[7, 8])      # keeps its own (flagged) counts
    np.testing.assert_array_equal(out_b[7, 8], b[7, 8])


def test_a_saturated_pixel_marks_its_window_saturated_and_nothing_else():
    reg = _reg()
    raw = np.full((15, 17, 25), 400, np.uint16)
    raw[7, 8, 3] = 1023
    out = reg.apply(raw, np.zeros(raw.shape, np.float32), None, saturation=1023)
    sat = out.max(axis=2) >= 1023
    rows, cols = np.nonzero(sat)
    assert sat[7, 8]
    assert rows.min() >= 7 - TAPS and rows.max() <= 7 + TAPS
    assert cols.min() >= 8 - TAPS and cols.max() <= 8 + TAPS
    assert sat[6:9, 7:10].all()          # every band reads its 4-neighbours and more
    np.testing.assert_array_equal(out[~sat], 400)


def test_float_reflectance_with_a_nan_pixel():
    reg = _reg()
    refl = np.full((10, 12, 25), 0.3, np.float32)
    refl[4, 5, 7] = np.nan
    out = reg.apply(refl)
    assert np.isnan(out[4, 5, 7])
    np.testing.assert_allclose(np.delete(out.reshape(-1, 25), 4 * 12 + 5, axis=0), 0.3,
                               rtol=1e-6)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((24, 2)), r"band_offsets: expected shape \(25, 2\), .*got shape \(24, 2\)"),
    (np.full((25, 2), 1.0), r"band_offsets: expected .*each \|value\| < 1; got 1.0 as dy of "
                            r"band 0"),
    (np.full((25, 2), np.nan), r"band_offsets: expected .*; got nan as dy of band 0"),
    ([["a", "b"]] * 25, r"band_offsets: expected numbers of shape \(25, 2\)"),
])
def test_bad_offsets_are_refused_with_one_line(bad, match):
    with pytest.raises(DataFormatError, match=match):
        BandRegistration.from_offsets(bad, 25)


def test_apply_refuses_a_frame_with_another_band_count():
    with pytest.raises(DataFormatError, match=r"raw: expected shape \(rows, cols, 25\)"):
        _reg().apply(np.zeros((4, 4, 16), np.float32))


def test_band_gain_scales_the_sto2_variance():
    """A uniform band gain g scales var(StO2) by exactly g, with and without crosstalk; without
    either the model has no correction (the independent-band path)."""
    rng = np.random.default_rng(3)
    n, bands = 50, 25
    signal = rng.uniform(50, 600, (n, bands)).astype(np.float32)
    pinv = rng.standard_normal((4, bands)).astype(np.float32)
    c_o = rng.uniform(0.5, 1, n).astype(np.float32)
    c_d = rng.uniform(0.5, 1, n).astype(np.float32)
    xt = np.eye(bands) * 0.9 + 0.1 / bands
    for cross in (None, xt):
        base = NoiseModel(0.08, 1.0, crosstalk=cross if cross is not None else np.eye(bands))
        half = NoiseModel(0.08, 1.0, crosstalk=cross, band_gain=np.full(bands, 0.25))
        v0 = sto2_raw_variance_mixed(c_o, c_d, signal, pinv, 0, 1, base)
        v1 = sto2_raw_variance_mixed(c_o, c_d, signal, pinv, 0, 1, half)
        np.testing.assert_allclose(v1, 0.25 * v0, rtol=1e-4)
    assert NoiseModel(0.08, 1.0).correction() is None


def test_the_pipeline_registers_snapshot_cameras_and_not_tivita():
    snap = SimulatedCamera("snapshot25", rows=8, cols=10)
    reg = band_registration(snap, _cfg())
    np.testing.assert_array_equal(reg.offsets, mosaic_offsets(25, 5))
    assert band_registration(snap, _cfg(register=False)) is None
    assert quality_rules(snap, _cfg()).noise.band_gain is None
    # ChainPlan.build gives the noise model the registration's gain (one place for it)
    from edge.processing.plan import ChainPlan
    plan = ChainPlan.build(snap.wavelengths, fwhm_nm=snap.fwhm_nm,
                           quality=quality_rules(snap, _cfg()), registration=reg)
    noise = plan.quality.noise
    np.testing.assert_array_equal(noise.band_gain, reg.variance_gain)
    assert plan.registration_gain < 0.5
    tiv = SimulatedCamera("tivita", rows=8, cols=10)
    assert tiv.band_offsets is None
    assert band_registration(tiv, _cfg()) is None
    with pytest.raises(ConfigError, match=r"processing.register: true needs the bands' mosaic "
                                          r"offsets, and this camera reports none"):
        band_registration(tiv, _cfg(register=True))


def test_every_backend_entry_registers_the_frame():
    """run and run_reference of the numpy backend both see the registered frame: they agree,
    and differ from a backend built with register: false at the organ borders."""
    from edge.pipeline.reference import obtain_flatfield
    cam = SimulatedCamera("snapshot16", rows=48, cols=64, seed=4)
    with cam:
        cam.configure(exposure_us=8000, trigger_mode="software")
        cam.arm()
        ff = obtain_flatfield(_cfg(), cam)
        on = make_backend("numpy", cam, ff, None, _cfg())
        off = make_backend("numpy", cam, ff, None, _cfg(register=False))
        frame = cam.grab(timeout=60.0)
    assert on.plan.registration is not None and off.plan.registration is None
    a = on.run(frame.cube, exposure_us=frame.meta.exposure_us)
    b = on.run_reference(frame.cube, exposure_us=frame.meta.exposure_us)
    c = off.run(frame.cube, exposure_us=frame.meta.exposure_us)
    np.testing.assert_allclose(a.reflectance, b.reflectance, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(a.flags, b.flags)
    registered = on.plan.register(frame.cube)
    np.testing.assert_allclose(a.reflectance, off.run(registered, exposure_us=frame.meta
                                                      .exposure_us).reflectance,
                               rtol=1e-6, equal_nan=True)
    assert not np.allclose(a.reflectance, c.reflectance, equal_nan=True)
