"""processing.quality settings -> the plan's QualityRules and the backend choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from drivers.simulated import SimulatedCamera
from edge.errors import BackendUnavailable, ConfigError
from edge.pipeline.backend_factory import make_backend, quality_rules
from edge.pipeline.config import AppConfig, ProcessingSettings, load_app_config


def _cfg(**processing):
    return dataclasses.replace(AppConfig(), processing=ProcessingSettings(**processing))


@pytest.mark.parametrize("preset, crosstalk", [("tivita", False), ("snapshot25", True)])
def test_noise_model_from_the_camera(preset, crosstalk):
    cam = SimulatedCamera(preset, rows=4, cols=5)
    rules = quality_rules(cam, _cfg())
    own = cam.sensor_noise
    assert rules.noise.counts_per_electron == pytest.approx(own["counts_per_electron"])
    assert rules.noise.read_noise_counts == pytest.approx(own["read_noise_counts"])
    assert (rules.noise.crosstalk is not None) == crosstalk
    assert (rules.spatial, rules.max_sigma, rules.min_blood_volume) == ("bilateral", 0.05,
                                                                         0.0015)


def test_configured_noise_wins_and_quality_can_be_off():
    cam = SimulatedCamera("tivita", rows=4, cols=5)
    rules = quality_rules(cam, _cfg(counts_per_electron=0.5, read_noise_counts=2.0))
    assert (rules.noise.counts_per_electron, rules.noise.read_noise_counts) == (0.5, 2.0)
    assert quality_rules(cam, _cfg(quality=False)) is None


def test_backends_with_quality(caplog):
    cam = SimulatedCamera("snapshot16", rows=4, cols=5)
    with pytest.raises(BackendUnavailable, match=r"^cuda backend: "):
        make_backend("cuda", cam, None, None, _cfg(quality=True))   # no PyCUDA, or quality
    with caplog.at_level("INFO", logger="edge.pipeline.backend_factory"):
        be = make_backend("auto", cam, None, None, _cfg(quality=True))
    assert be.name == "numpy" and be.plan.quality is not None
    assert "backend auto: picked numpy" in caplog.text
    # null (the default): on where the backend has it
    assert ProcessingSettings().quality is None
    assert make_backend("numpy", cam, None, None, _cfg()).plan.quality is not None
    off = make_backend("numpy", cam, None, None, _cfg(quality=False))
    assert off.plan.quality is None
    r = be.run(np.full((4, 5, 16), 0.3, np.float32), exposure_us=None)
    assert np.all(np.isnan(r.maps["sto2_sigma"]))       # float reflectance: no counts, no sigma


def test_spatial_radius_reaches_the_plan():
    cam = SimulatedCamera("snapshot25", rows=4, cols=5)
    be = make_backend("numpy", cam, None, None, _cfg(spatial_radius=5))
    assert be.plan.bilateral.radius == 5
    assert be.plan.bilateral.sigma_s == pytest.approx(10 / 3)


@pytest.mark.parametrize("preset", ["tivita", "snapshot16", "snapshot25"])
def test_spatial_radius_null_is_the_presets_choice(preset):
    """The default (null) takes the radius chosen with the preset's StO2 table (its
    spatial_radius header, 3 where it has none); an explicit one still wins."""
    assert ProcessingSettings().spatial_radius is None
    cam = SimulatedCamera(preset, rows=4, cols=5)
    own = make_backend("numpy", cam, None, None, _cfg()).plan
    header = own.calibration.spatial_radius
    assert own.bilateral.radius == (3 if header is None else header)
    assert make_backend("numpy", cam, None, None,
                        _cfg(spatial_radius=2)).plan.bilateral.radius == 2


@pytest.mark.parametrize("bad", ["0", "9", "2.5", "'wide'", "true"])
def test_bad_spatial_radius_is_one_line(tmp_path, bad):
    p = tmp_path / "run.yaml"
    p.write_text(f"processing:\n  spatial_radius: {bad}\n")
    with pytest.raises(ConfigError, match=r"run.yaml: processing.spatial_radius: expected an "
                                          r"integer in \[1, 8\], got "):
        load_app_config(str(p))


def test_spatial_h_reaches_the_plan(tmp_path):
    """processing.spatial_h: null takes the preset table's header (0.08 where none), a number
    wins; out of range is one line."""
    cam = SimulatedCamera("snapshot25", rows=4, cols=5)
    own = make_backend("numpy", cam, None, None, _cfg()).plan
    header = own.calibration.spatial_h
    assert own.bilateral.h == pytest.approx(0.08 if header is None else header)
    assert make_backend("numpy", cam, None, None,
                        _cfg(spatial_h=0.2)).plan.bilateral.h == pytest.approx(0.2)
    p = tmp_path / "run.yaml"
    p.write_text("processing:\n  spatial_h: 3\n")
    with pytest.raises(ConfigError, match=r"run.yaml: processing.spatial_h: "):
        load_app_config(str(p))


def test_cuda_gets_quality_rules_by_default(caplog):
    """quality null: the cuda backend runs the quality step like the others (no warning), so
    what stops it here is only a missing PyCUDA, never the quality step."""
    cam = SimulatedCamera("snapshot16", rows=4, cols=5)
    with caplog.at_level("WARNING", logger="edge.pipeline.backend_factory"):
        try:
            be = make_backend("cuda", cam, None, None, _cfg())
        except BackendUnavailable as exc:
            assert "processing.quality" not in str(exc)
        else:
            assert be.plan.quality is not None
    assert "no StO2 sigma" not in caplog.text
