"""Recorder: bit-exact round trip through ReplayCamera, atomic frames, no overwrite."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.recorder import Recorder
from drivers.replay import ReplayCamera
from edge.core.frame import Frame, FrameMeta
from edge.errors import DataFormatError

WL = np.array([500.0, 512.3456789012345, 700.1, 999.9])


def _frames(dtype, n=3):
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        if dtype == np.uint16:
            cube = rng.integers(0, 1024, (3, 5, 4)).astype(np.uint16)
        else:
            cube = rng.normal(0.4, 0.2, (3, 5, 4)).astype(np.float32)
            cube[0, 0, 0] = np.float32(1e-38)  # denormal-adjacent values survive too
        meta = FrameMeta(frame_id=2 * i, timestamp_ns=123_456_789 + i, exposure_us=8000.5,
                         gain=1.5, illumination={"white": 0.75, "uv": 0.0},
                         serials={"camera": "SIM-0001", "light": "L-9"}, bit_depth=10)
        truth = {"classes": rng.integers(0, 5, (3, 5)).astype(np.uint8),
                 "sto2": rng.random((3, 5)).astype(np.float32)}
        out.append(Frame(cube, WL, meta, truth=truth))
    return out


@pytest.mark.parametrize("fmt, dtype", [("npz", np.uint16), ("npz", np.float32),
                                        ("envi", np.uint16), ("envi", np.float32),
                                        ("tivita", np.float32)])
def test_round_trip_bit_exact(tmp_path, fmt, dtype):
    frames = _frames(dtype)
    with Recorder(tmp_path / "rec", format=fmt) as rec:
        for f in frames:
            rec.write(f)
    assert rec.count == 3
    cam = ReplayCamera(tmp_path / "rec", original_timestamps=True)
    cam.arm()
    for f in frames:
        g = cam.grab()
        assert g.cube.dtype == f.cube.dtype
        assert g.cube.tobytes() == f.cube.tobytes()
        assert g.wavelengths.tobytes() == f.wavelengths.tobytes()
        assert g.meta == f.meta
        assert set(g.truth) == set(f.truth)
        for k in f.truth:
            assert g.truth[k].dtype == f.truth[k].dtype
            np.testing.assert_array_equal(g.truth[k], f.truth[k])


def test_replay_timestamps_are_replay_time_by_default(tmp_path):
    with Recorder(tmp_path / "r") as rec:
        rec.write(_frames(np.uint16, 1)[0])
    cam = ReplayCamera(tmp_path / "r")
    cam.arm()
    assert cam.grab().meta.timestamp_ns != 123_456_789


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "rec"
    with Recorder(out) as rec:
        rec.write(_frames(np.uint16, 1)[0])
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(DataFormatError, match=r"already holds a recording .*allow replacing it \(--overwrite\)"):
        Recorder(out)
    assert sorted(p.name for p in out.iterdir()) == before
    (out / "notes.txt").write_text("keep me")
    with Recorder(out, format="envi", overwrite=True) as rec:
        rec.write(_frames(np.uint16, 1)[0])
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" in names and "frame_000000.npz" not in names
    assert "frame_000000.hdr" in names


def test_tivita_rejects_raw_counts(tmp_path):
    rec = Recorder(tmp_path / "t", format="tivita")
    with pytest.raises(DataFormatError, match="TIVITA recordings hold float32 reflectance, got uint16"):
        rec.write(_frames(np.uint16, 1)[0])
    assert not list((tmp_path / "t").glob("frame_*"))


def test_bad_arguments(tmp_path):
    with pytest.raises(DataFormatError, match="format: expected one of npz, envi, tivita, got 'tif'"):
        Recorder(tmp_path / "x", format="tif")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataFormatError, match="exists and is not a directory"):
        Recorder(tmp_path / "file")
    rec = Recorder(tmp_path / "y")
    rec.close()
    with pytest.raises(DataFormatError, match=r"write\(\) after close\(\)"):
        rec.write(_frames(np.uint16, 1)[0])


def test_interrupted_write_leaves_complete_frames_only(tmp_path):
    """A crash mid-frame leaves a temp file (or orphan sidecar) that replay ignores."""
    out = tmp_path / "rec"
    frames = _frames(np.uint16, 2)
    with Recorder(out, format="envi") as rec:
        for f in frames:
            rec.write(f)
    # What an interrupted third frame can leave behind: a temp file and an orphan sidecar.
    (out / ".frame_000002.img.abc123.tmp").write_bytes(b"\0" * 10)
    (out / "frame_000002.json").write_text('{"meta": {}}')
    cam = ReplayCamera(out)
    assert cam.frame_count == 2
    cam.arm()
    for f in frames:
        np.testing.assert_array_equal(cam.grab().cube, f.cube)
