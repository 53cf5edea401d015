"""Bad recordings are one clear DataFormatError naming the file and the key (issue 15 items 6,
16, 17, 19, 23): malformed cubes and metadata, impossible values and band counts, sidecars that
disagree with their header, interrupted recordings, and the camera layout a recording carries.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from drivers.formats.checks import MAX_BANDS
from drivers.formats.envi import write_envi
from drivers.formats.npyseq import write_npz_frame
from drivers.formats.tivita import write_tivita_cube
from drivers.recorder import Recorder
from drivers.replay import ReplayCamera
from edge.core.frame import Frame, FrameMeta
from edge.errors import ConfigError, DataFormatError

WL = np.array([500.0, 600.0, 700.0, 800.0])


def _frame(i=0, dtype=np.uint16):
    rng = np.random.default_rng(i)
    cube = (rng.integers(0, 1024, (2, 3, 4)).astype(np.uint16) if dtype == np.uint16
            else rng.uniform(0.1, 0.9, (2, 3, 4)).astype(np.float32))
    return Frame(cube, WL, FrameMeta(frame_id=i, exposure_us=5000.0, gain=1.0,
                                     serials={"camera": "SIM-1"}, bit_depth=10),
                 truth={"sto2": np.full((2, 3), 0.5, np.float32)})


# -- item 16: tracebacks that must be one line ---------------------------------------------------
def test_npz_frame_with_a_2d_cube(tmp_path):
    write_npz_frame(tmp_path / "f.npz", np.zeros((4, 5), np.uint16), [500.0, 600.0])
    with pytest.raises(DataFormatError, match=r"f\.npz: NPZ key 'cube'.*expected shape "
                                              r"\(rows, cols, bands\), got \(4, 5\)"):
        ReplayCamera(tmp_path / "f.npz")


def test_npy_stack_with_no_frames(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((0, 2, 3, 4), np.uint16))
    with pytest.raises(DataFormatError, match=r"s\.npy: NPY stack: expected at least one frame"):
        ReplayCamera(tmp_path / "s.npy", wavelengths=WL)


@pytest.mark.parametrize("meta, key", [
    ({"bit_depth": "x"}, "bit_depth"),
    ({"exposure_us": "fast"}, "exposure_us"),
    ({"serials": ["SN1"]}, "serials"),
    ({"gain": None}, "gain"),
])
def test_npz_meta_of_the_wrong_type(tmp_path, meta, key):
    write_npz_frame(tmp_path / "f.npz", np.zeros((2, 3, 4), np.uint16), WL, meta)
    with pytest.raises(DataFormatError, match=rf"f\.npz: NPZ key 'meta'.*'{key}': expected"):
        ReplayCamera(tmp_path / "f.npz")


def test_npz_meta_that_is_a_list(tmp_path):
    np.savez(tmp_path / "f.npz", cube=np.zeros((2, 3, 4), np.uint16), wavelengths=WL,
             meta=np.array("[1, 2]"))
    with pytest.raises(DataFormatError, match=r"f\.npz: NPZ key 'meta'.*expected a JSON object"):
        ReplayCamera(tmp_path / "f.npz")


@pytest.mark.parametrize("doc, match", [
    ({"meta": {"bit_depth": "x"}, "wavelengths": list(WL)}, r"'bit_depth': expected"),
    ({"meta": {"serials": "SN1"}, "wavelengths": list(WL)}, r"'serials': expected"),
    ({"meta": [1], "wavelengths": list(WL)}, r"meta: expected a JSON object, got list"),
    ([1, 2], r"frame sidecar: expected a JSON object, got list"),
])
def test_envi_sidecar_meta_of_the_wrong_type(tmp_path, doc, match):
    with Recorder(tmp_path / "r", format="envi") as rec:
        rec.write(_frame())
    (tmp_path / "r" / "frame_000000.json").write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=r"frame_000000\.json.*" + match):
        ReplayCamera(tmp_path / "r")


def test_corrupt_truth_file(tmp_path):
    with Recorder(tmp_path / "r", format="envi") as rec:
        rec.write(_frame())
    (tmp_path / "r" / "frame_000000.truth.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataFormatError, match=r"frame_000000\.truth\.npz: cannot read ground "
                                              r"truth"):
        ReplayCamera(tmp_path / "r")


def test_garbage_npz_gets_no_pickle_advice(tmp_path):
    (tmp_path / "f.npz").write_bytes(b"\x80\x04garbage that looks like a pickle")
    with pytest.raises(DataFormatError, match=r"f\.npz: cannot read NPZ frame: not an NPZ") as e:
        ReplayCamera(tmp_path / "f.npz")
    assert "pickle" not in str(e.value)
    np.savez(tmp_path / "o.npz", cube=np.array([object()], dtype=object))
    with pytest.raises(DataFormatError, match=r"o\.npz: .*object \(pickled\) arrays") as e:
        ReplayCamera(tmp_path / "o.npz")
    assert "allow_pickle" not in str(e.value)


# -- item 17: band counts bounded before anything is allocated ------------------------------------
def test_tivita_header_claiming_60000_bands(tmp_path):
    # 12-byte header (1, 1, 60000) + 60000 floats: the file size matches the header exactly
    path = tmp_path / "x_SpecCube.dat"
    path.write_bytes(np.array([1, 1, 60000], ">i4").tobytes() + b"\0" * 240_000)
    with pytest.raises(DataFormatError, match=r"x_SpecCube\.dat: bad TIVITA header: bands: "
                                              r"expected 1-501 .*got 60000"):
        ReplayCamera(path)


def test_envi_and_npy_band_counts_are_bounded(tmp_path):
    (tmp_path / "e.hdr").write_text(
        f"ENVI\nsamples = 1\nlines = 1\nbands = {MAX_BANDS + 1}\ndata type = 12\n"
        "interleave = bip\nbyte order = 0\n")
    (tmp_path / "e.img").write_bytes(b"\0" * 2 * (MAX_BANDS + 1))
    with pytest.raises(DataFormatError, match=rf"e\.hdr: ENVI key 'bands': expected 1-{MAX_BANDS}"
                                              rf" bands .*got {MAX_BANDS + 1}"):
        ReplayCamera(tmp_path / "e.hdr")
    np.save(tmp_path / "s.npy", np.zeros((1, 1, 1, MAX_BANDS + 1), np.uint16))
    with pytest.raises(DataFormatError, match=rf"s\.npy: NPY stack: bands: expected 1-{MAX_BANDS}"):
        ReplayCamera(tmp_path / "s.npy", wavelengths=np.linspace(400, 900, MAX_BANDS + 1))


# -- item 19: values no camera can deliver; wavelengths overridden without a word ----------------
def test_tivita_cube_of_3e38_is_refused(tmp_path):
    write_tivita_cube(tmp_path / "c_SpecCube.dat", np.full((2, 3, 4), 3e38, np.float32))
    with pytest.raises(DataFormatError, match=r"c_SpecCube\.dat: reflectance 3e\+38\.\.3e\+38 is "
                                              r"outside what a camera can deliver"):
        ReplayCamera(tmp_path / "c_SpecCube.dat")


def test_plausible_reflectance_and_nan_still_replay(tmp_path):
    cube = np.full((2, 3, 100), 0.5, np.float32)
    cube[0, 0, 0], cube[1, 1, 1], cube[0, 1, 2] = np.nan, 1.7, -0.05
    write_tivita_cube(tmp_path / "c_SpecCube.dat", cube)
    cam = ReplayCamera(tmp_path / "c_SpecCube.dat")
    cam.arm()
    assert "nonfinite" in cam.grab().flags


def test_float_envi_and_counts_above_the_bit_depth_are_refused(tmp_path):
    write_envi(tmp_path / "f.hdr", np.full((2, 3, 4), -1e30, np.float32), WL)
    with pytest.raises(DataFormatError, match=r"f\.hdr: reflectance -1e\+30"):
        ReplayCamera(tmp_path / "f.hdr")
    frame = _frame()
    frame.cube[0, 0, 0] = 4000                       # a 10-bit sensor tops out at 1023
    with Recorder(tmp_path / "r") as rec:
        rec.write(frame)
    with pytest.raises(DataFormatError, match=r"frame_000000\.npz: raw counts \d+\.\.4000 outside "
                                              r"0\.\.1023 of a 10-bit sensor"):
        ReplayCamera(tmp_path / "r")


def test_envi_header_wavelengths_that_disagree_with_the_sidecar(tmp_path):
    with Recorder(tmp_path / "r", format="envi") as rec:
        rec.write(_frame())
    hdr = tmp_path / "r" / "frame_000000.hdr"
    text = hdr.read_text()
    hdr.write_text(text.replace("500.0 , 600.0 , 700.0 , 800.0", "800.0 , 700.0 , 600.0 , 500.0"))
    with pytest.raises(DataFormatError, match=r"frame_000000\.json: key 'wavelengths' disagrees "
                                              r"with the wavelengths of frame_000000\.hdr"):
        ReplayCamera(tmp_path / "r")
    hdr.write_text(text.replace("500.0 , 600.0", "nan , 600.0"))
    with pytest.raises(DataFormatError, match=r"frame_000000\.hdr: ENVI key 'wavelength': "
                                              r"expected finite band centres, got nan for band 0"):
        ReplayCamera(tmp_path / "r")


# -- item 6: a truncated recording does not look complete ----------------------------------------
def test_recording_killed_before_close_is_refused(tmp_path):
    rec = Recorder(tmp_path / "r", expected_frames=4)
    for i in range(3):
        rec.write(_frame(i))
    # no close(): what a kill leaves behind
    with pytest.raises(DataFormatError, match=r"recording\.json: incomplete recording: found 3 of "
                                              r"4 frame\(s\); the recording was interrupted"):
        ReplayCamera(tmp_path / "r")


def test_recording_ended_by_an_exception_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="camera died"):
        with Recorder(tmp_path / "r", format="envi") as rec:
            rec.write(_frame())
            raise RuntimeError("camera died")
    with pytest.raises(DataFormatError, match=r"incomplete recording: found 1 frame\(s\)"):
        ReplayCamera(tmp_path / "r")


def test_recording_that_lost_a_frame_file_is_refused(tmp_path):
    with Recorder(tmp_path / "r", expected_frames=2) as rec:
        rec.write(_frame(0))
        rec.write(_frame(1))
    assert ReplayCamera(tmp_path / "r").frame_count == 2
    (tmp_path / "r" / "frame_000001.npz").unlink()
    with pytest.raises(DataFormatError, match=r"r/recording\.json: incomplete recording: found 1 "
                                              r"of 2 frame\(s\) \(missing frame files\)"):
        ReplayCamera(tmp_path / "r")


def test_recording_without_the_mark_replays_with_a_warning(tmp_path, caplog):
    with Recorder(tmp_path / "r") as rec:
        rec.write(_frame())
    # a recording.json as hsi-edge wrote it before the completion mark existed
    (tmp_path / "r" / "recording.json").write_text(json.dumps(
        {"format": "npz", "software": "hsi-edge 0.1.0", "created": "2025-01-01T00:00:00+00:00"}))
    with caplog.at_level(logging.WARNING, logger="drivers.formats.sequence"):
        cam = ReplayCamera(tmp_path / "r")
    assert cam.frame_count == 1
    assert "no completion mark" in caplog.text and "replaying the 1 frame(s) found" in caplog.text


@pytest.mark.parametrize("change, match", [
    ({"complete": "yes"}, r"key 'complete': expected true or false, got 'yes'"),
    ({"frames": -1}, r"key 'frames': expected an integer >= 0, got -1"),
    ({"camera": {"fwhm_nm": "wide"}}, r"key 'camera.fwhm_nm': expected a band width"),
])
def test_manifest_of_the_wrong_type(tmp_path, change, match):
    with Recorder(tmp_path / "r") as rec:
        rec.write(_frame())
    doc = json.loads((tmp_path / "r" / "recording.json").read_text())
    doc.update(change)
    (tmp_path / "r" / "recording.json").write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=r"recording\.json: " + match):
        ReplayCamera(tmp_path / "r")


# -- item 23 / issue 14: the recording carries its camera layout ----------------------------------
def test_replay_takes_preset_and_fwhm_from_the_recording(tmp_path):
    with Recorder(tmp_path / "r", fwhm_nm=20.0, preset="snapshot25", expected_frames=1) as rec:
        rec.write(_frame())
    doc = json.loads((tmp_path / "r" / "recording.json").read_text())
    assert doc["complete"] is True and doc["frames"] == 1
    assert doc["camera"] == {"preset": "snapshot25", "fwhm_nm": 20.0, "band_offsets": None,
                             "serial": "SIM-1",
                             "bit_depth": 10, "exposure_us": 5000.0, "gain": 1.0,
                             "shape": [2, 3, 4], "dtype": "uint16"}
    assert doc["wavelengths"] == list(WL)
    cam = ReplayCamera(tmp_path / "r")
    assert cam.fwhm_nm == 20.0 and cam.preset_name == "snapshot25"
    # agreeing explicit values are fine; disagreeing ones are one clear error
    assert ReplayCamera(tmp_path / "r", fwhm_nm=20.0, preset="snapshot25").fwhm_nm == 20.0
    with pytest.raises(ConfigError, match=r"fwhm_nm: 10 nm given, but .*recording\.json records "
                                          r"band widths of 20 nm"):
        ReplayCamera(tmp_path / "r", fwhm_nm=10.0)
    with pytest.raises(ConfigError, match=r"preset: 'tivita' given, but .*recording\.json was "
                                          r"made by a 'snapshot25' camera"):
        ReplayCamera(tmp_path / "r", preset="tivita")


# -- item 5 at the recorder: the old recording stays until the new one is complete ---------------
def test_overwrite_keeps_the_old_recording_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "rec"
    old = [_frame(i) for i in range(2)]
    with Recorder(out) as rec:
        for f in old:
            rec.write(f)
    (out / "notes.txt").write_text("keep me")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RuntimeError, match="interrupted"):
        with Recorder(out, overwrite=True) as rec:
            rec.write(_frame(7))
            assert {p.name: p.read_bytes() for p in out.iterdir()} == before
            raise RuntimeError("interrupted")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]   # no temporary left
    with Recorder(out, format="envi", overwrite=True, expected_frames=1) as rec:
        rec.write(_frame(7))
        assert (out / "frame_000000.npz").exists()      # still the old one while recording
    names = sorted(p.name for p in out.iterdir())
    assert names == ["frame_000000.hdr", "frame_000000.img", "frame_000000.json",
                     "frame_000000.truth.npz", "notes.txt", "recording.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]
    cam = ReplayCamera(out)
    cam.arm()
    np.testing.assert_array_equal(cam.grab().cube, _frame(7).cube)
