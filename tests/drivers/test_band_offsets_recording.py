"""Band offsets (a snapshot mosaic's filter positions) go through a recording (issue 14).

The recorder writes ``camera.band_offsets`` into recording.json and the replay camera gives
them back exactly, so a replayed snapshot recording is registered like the live camera; bad
values are refused with one line on either side.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from drivers.recorder import Recorder
from drivers.replay import ReplayCamera
from drivers.simulated import SimulatedCamera
from edge.core.frame import Frame, FrameMeta
from edge.errors import DataFormatError

WL = np.array([500.0, 550.0, 600.0, 650.0])


def _record(tmp_path, preset, fmt="npz", frames=2):
    """Record ``frames`` frames of a small SimulatedCamera; returns (camera offsets, path)."""
    out = tmp_path / f"rec-{preset}-{fmt}"
    cam = SimulatedCamera(preset, rows=6, cols=8, seed=3)
    with cam, Recorder(out, fmt, fwhm_nm=cam.fwhm_nm, band_offsets=cam.band_offsets,
                       preset=cam.preset.name) as rec:
        cam.configure(trigger_mode="software")
        cam.arm()
        for _ in range(frames):
            frame = cam.grab(timeout=60.0)
            if fmt == "tivita":   # TIVITA files hold float32 reflectance only
                frame = frame.replace(cube=frame.cube.astype(np.float32) / 1023.0)
            rec.write(frame)
    return cam.band_offsets, out


@pytest.mark.parametrize("preset, fmt", [("snapshot25", "npz"), ("snapshot16", "envi"),
                                         ("snapshot25", "tivita")])
def test_replay_gives_the_live_cameras_offsets(tmp_path, preset, fmt):
    live, out = _record(tmp_path, preset, fmt)
    assert live is not None and live.shape == (25 if preset == "snapshot25" else 16, 2)
    manifest = json.loads((out / "recording.json").read_text())
    assert manifest["camera"]["band_offsets"] == live.tolist()
    cam = ReplayCamera(out)
    assert isinstance(cam.band_offsets, np.ndarray) and cam.band_offsets.dtype == np.float64
    np.testing.assert_array_equal(cam.band_offsets, live)
    assert ReplayCamera.band_offsets is None          # the class default is not touched
    cam.band_offsets[0, 0] = 0.9                      # a copy: the next replay is unchanged
    np.testing.assert_array_equal(ReplayCamera(out).band_offsets, live)


def test_tivita_and_old_recordings_give_none(tmp_path):
    live, out = _record(tmp_path, "tivita", frames=1)
    assert live is None
    assert json.loads((out / "recording.json").read_text())["camera"]["band_offsets"] is None
    assert ReplayCamera(out).band_offsets is None
    # a recording made before the key existed
    path = out / "recording.json"
    doc = json.loads(path.read_text())
    del doc["camera"]["band_offsets"]
    path.write_text(json.dumps(doc))
    assert ReplayCamera(out).band_offsets is None


@pytest.mark.parametrize("value, message", [
    ([[0.1, 0.2]] * 24,
     r"recording\.json: key 'camera\.band_offsets': expected shape \(25, 2\), .* got shape "
     r"\(24, 2\)"),
    ([0.1] * 25,
     r"recording\.json: key 'camera\.band_offsets': expected shape \(25, 2\), .* got shape "
     r"\(25,\)"),
    ("NaN-row", r"recording\.json: key 'camera\.band_offsets': expected \(dy, dx\) per band in "
                r"spectral pixels, finite, each \|value\| < 1; got nan as dx of band 3$"),
    ("big", r"recording\.json: key 'camera\.band_offsets': expected .*each \|value\| < 1; got "
            r"-1\.0 as dy of band 7$"),
    ("centre", r"recording\.json: key 'camera\.band_offsets': expected numbers of shape "
               r"\(25, 2\), .*; got 'centre'$"),
    ([["a", "b"]] * 25, r"key 'camera\.band_offsets': expected numbers of shape \(25, 2\)"),
    ([[0.1, 0.2], [0.3]] + [[0.0, 0.0]] * 23,
     r"key 'camera\.band_offsets': expected numbers of shape \(25, 2\)"),
])
def test_corrupt_offsets_in_recording_json_are_one_line(tmp_path, value, message):
    live, out = _record(tmp_path, "snapshot25", frames=1)
    path = out / "recording.json"
    doc = json.loads(path.read_text())
    if value == "NaN-row":
        value = live.tolist()
        value[3][1] = float("nan")       # json writes NaN, and reads it back
    elif value == "big":
        value = live.tolist()
        value[7][0] = -1.0
    doc["camera"]["band_offsets"] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=message) as err:
        ReplayCamera(out)
    assert "\n" not in str(err.value) and str(out) in str(err.value)


def _frame(bands=4):
    cube = np.arange(2 * 3 * bands, dtype=np.uint16).reshape(2, 3, bands)
    return Frame(cube, WL[:bands], FrameMeta(frame_id=0, timestamp_ns=1, exposure_us=1000.0))


@pytest.mark.parametrize("value, message", [
    ([0.1, 0.2], r"band_offsets: expected shape \(bands, 2\), .* got shape \(2,\)"),
    (np.zeros((4, 3)), r"band_offsets: expected shape \(bands, 2\), .* got shape \(4, 3\)"),
    (np.zeros((0, 2)), r"band_offsets: expected shape \(bands, 2\), .* got shape \(0, 2\)"),
    ([[0.0, 0.0], [0.0, np.inf], [0.0, 0.0], [0.0, 0.0]],
     r"band_offsets: expected \(dy, dx\) per band .*finite, each \|value\| < 1; got inf as dx "
     r"of band 1"),
    ([[0.0, 0.0]] * 3 + [[1.5, 0.0]], r"band_offsets: .*; got 1\.5 as dy of band 3"),
    ("mosaic", r"band_offsets: expected numbers of shape \(bands, 2\), .*; got 'mosaic'"),
    ([[True, False]] * 4, r"band_offsets: expected numbers of shape \(bands, 2\)"),
])
def test_recorder_refuses_bad_offsets(tmp_path, value, message):
    with pytest.raises(DataFormatError, match=message):
        Recorder(tmp_path / "rec", band_offsets=value)
    assert not (tmp_path / "rec").exists()   # refused before anything was written


def test_recorder_checks_the_band_count_against_the_frames(tmp_path):
    rec = Recorder(tmp_path / "rec", band_offsets=np.zeros((3, 2)))
    with pytest.raises(DataFormatError, match=r"band_offsets: 3 \(dy, dx\) pairs given, but "
                                              r"the frame has 4 bands; expected one pair per "
                                              r"band"):
        rec.write(_frame())
    assert not list((tmp_path / "rec").glob("frame_*"))
    rec.close()
    offsets = np.array([[0.25, -0.25], [0.0, 0.5], [-0.5, 0.0], [0.125, 0.875]])
    with Recorder(tmp_path / "ok", band_offsets=offsets.tolist()) as rec:
        rec.write(_frame())
    np.testing.assert_array_equal(ReplayCamera(tmp_path / "ok").band_offsets, offsets)
