"""Per-preset sensor models (drivers.sim.sensor.SensorModel.for_preset, presets.SensorSpec):
mosaic crosstalk and its correction, band misregistration, push-broom averaged reads, and the
noisy-spectrum helper the StO2 calibration is fitted with."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.mosaic import mosaic_crosstalk, mosaic_offsets
from drivers.sim.presets import SensorSpec, get_preset
from drivers.sim.sensor import SensorModel
from edge.errors import ConfigError

EXPOSURE_US, GAIN = 8000.0, 1.0


def test_crosstalk_matrix_of_a_4x4_mosaic():
    x = mosaic_crosstalk(16, 4, neighbour=0.02, sidelobe=0.10)
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-12)
    # band 0 at (0, 0): neighbours (3, 0)=12, (1, 0)=4, (0, 3)=3, (0, 1)=1 (the mosaic repeats)
    side = 0.10 / 15
    for k in (1, 3, 4, 12):
        assert x[0, k] == pytest.approx(0.02 + side)
    assert x[0, 5] == pytest.approx(side)
    assert x[0, 0] == pytest.approx(1 - 4 * 0.02 - 0.10)


def test_crosstalk_limits_are_checked():
    with pytest.raises(ConfigError, match=r"mosaic: a 4x4 mosaic has no room for 25 bands"):
        mosaic_crosstalk(25, 4, 0.02, 0.1)
    with pytest.raises(ConfigError, match=r"crosstalk: neighbour 0.1 x 4 \+ sidelobe 0.2 leaves"):
        mosaic_crosstalk(16, 4, 0.1, 0.2)


def test_mosaic_offsets_are_centred():
    off = mosaic_offsets(25, 5)
    np.testing.assert_allclose(off[0], [-0.4, -0.4])
    np.testing.assert_allclose(off[24], [0.4, 0.4])
    np.testing.assert_allclose(off.mean(axis=0), [0.0, 0.0], atol=1e-12)


def _flat_field(sensor: SensorModel, refl: float, frames: int) -> np.ndarray:
    """Flat-fielded reflectance of a uniform target over ``frames`` exposures,
    shape (frames, rows, cols, bands)."""
    dark, per_unit, _ = sensor.response(EXPOSURE_US, GAIN)
    cube = np.full(per_unit.shape, refl, dtype=np.float32)
    raws = [sensor.expose(cube, EXPOSURE_US, GAIN, frame_id=i) for i in range(frames)]
    return (np.stack(raws).astype(np.float64) - dark) / per_unit


def _quiet(preset: str, **kw) -> SensorModel:
    p = get_preset(preset, rows=24, cols=24)
    return SensorModel.for_preset(p, seed=3, vignetting=0.0, prnu=0.0, hot_pixel_fraction=0.0,
                                  noise="exact", **kw)


def test_crosstalk_correction_keeps_the_mean_and_amplifies_the_noise():
    """snapshot16 (4x4, 2 % per neighbour, 10 % side-lobes): the corrected mean of a uniform
    0.3 target is 0.3 within 0.3 % (rounding of ~1000-count signals); the noise is 1.1-1.6x
    that of the same chip without crosstalk (the correction matrix's noise gain)."""
    with_xt = _flat_field(_quiet("snapshot16"), 0.3, 6)
    without = _flat_field(_quiet("snapshot16", neighbour_crosstalk=0.0, sidelobe_leak=0.0),
                          0.3, 6)
    assert abs(with_xt.mean() / 0.3 - 1) < 3e-3
    ratio = with_xt.std() / without.std()
    assert 1.1 < ratio < 1.6, ratio


def test_pushbroom_reads_cut_the_noise():
    """tivita averages 4 detector reads per pixel: half the relative noise of one read (the
    generic 10 ke- / 10 e- sensor), within 10 %."""
    four = _flat_field(_quiet("tivita"), 0.3, 2)
    spec = get_preset("tivita").sensor
    assert spec.reads_per_pixel == 4
    one = _flat_field(_quiet("tivita", full_well_e=spec.full_well_e,
                             read_noise_e=spec.read_noise_e, dark_current_e_s=200.0), 0.3, 2)
    assert four.std() / one.std() == pytest.approx(0.5, rel=0.1)


def test_misregistration_samples_each_band_at_its_mosaic_position():
    """A vertical step (0.1 | 0.6) seen by snapshot25: band k at column c samples
    c + dx_k, so the column left of the step reads 0.1 + 0.5·dx_k for dx_k > 0."""
    p = get_preset("snapshot25", rows=6, cols=10)
    sensor = SensorModel.for_preset(p)
    refl = np.full((6, 10, 25), 0.1, dtype=np.float32)
    refl[:, 5:] = 0.6
    got = sensor.misregister(refl)
    dx = mosaic_offsets(25, 5)[:, 1]
    want_left = 0.1 + 0.5 * np.clip(dx, 0, None)
    want_right = 0.6 - 0.5 * np.clip(-dx, 0, None)
    np.testing.assert_allclose(got[2, 4], want_left, atol=1e-6)
    np.testing.assert_allclose(got[2, 5], want_right, atol=1e-6)
    np.testing.assert_allclose(got[2, 0], 0.1, atol=1e-6)   # flat regions unchanged


def test_tivita_has_no_mosaic_and_direct_sensors_keep_their_defaults():
    s = SensorModel.for_preset(get_preset("tivita", rows=4, cols=4))
    assert s.mosaic == 0 and s.crosstalk is None
    cube = np.full((4, 4, 100), 0.4, dtype=np.float32)
    np.testing.assert_array_equal(s.misregister(cube), cube)
    assert SensorSpec() == SensorSpec(10_000.0, 10.0, 1, 0, 0.0, 0.0)


@pytest.mark.parametrize("preset", ["tivita", "snapshot16", "snapshot25"])
def test_reflectance_noise_matches_the_camera_path(preset):
    """The calibration's noise model (reflectance_noise: Gaussian, image centre) against the
    real exposure path (expose -> flat field with 8-frame references): per-band noise of a
    uniform 0.3 target within 15 %."""
    sensor = _quiet(preset)
    dark, per_unit, _ = sensor.response(EXPOSURE_US, GAIN)
    cube = np.full(per_unit.shape, 0.3, dtype=np.float32)
    white = np.mean([sensor.expose(np.full_like(cube, 0.99), EXPOSURE_US, GAIN, 100 + i)
                     for i in range(8)], axis=0)
    darkf = np.mean([sensor.expose(np.zeros_like(cube), EXPOSURE_US, GAIN, 200 + i)
                     for i in range(8)], axis=0)
    frames = np.stack([sensor.expose(cube, EXPOSURE_US, GAIN, i) for i in range(4)])
    real = 0.99 * (frames - darkf) / (white - darkf)
    model = sensor.reflectance_noise(np.full((4000, per_unit.shape[2]), 0.3), EXPOSURE_US,
                                     GAIN, np.random.default_rng(0))
    sd_real = real.reshape(-1, real.shape[-1]).std(axis=0)
    sd_model = model.std(axis=0)
    np.testing.assert_allclose(sd_model, sd_real, rtol=0.15)
    assert abs(model.mean() / 0.3 - 1) < 0.01
