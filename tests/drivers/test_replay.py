"""ReplayCamera: serving recordings through the Camera contract."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.formats import write_envi, write_npz_frame, write_tivita_cube
from drivers.replay import ReplayCamera, to_frame_dtype
from edge.errors import DataFormatError, DeviceError, DeviceTimeout

WL = np.array([500.0, 600.0, 700.0, 800.0])


def _npz_dir(tmp_path, n=3, dtype=np.uint16):
    rng = np.random.default_rng(1)
    cubes = []
    for i in range(n):
        cube = rng.integers(0, 1023, (3, 2, 4)).astype(dtype)
        write_npz_frame(tmp_path / f"frame_{i:06d}.npz", cube, WL,
                        {"frame_id": 10 + i, "exposure_us": 5000.0, "gain": 2.0,
                         "serials": {"camera": "CAM-7"}, "bit_depth": 12})
        cubes.append(cube)
    return cubes


def test_software_mode_serves_frames_then_ends(tmp_path):
    cubes = _npz_dir(tmp_path)
    with ReplayCamera(tmp_path) as cam:
        assert cam.shape == (3, 2, 4) and cam.frame_count == 3
        assert cam.serial == "CAM-7" and cam.bit_depth == 12 and cam.exposure_us == 5000.0
        np.testing.assert_array_equal(cam.wavelengths, WL)
        cam.arm()
        for i, cube in enumerate(cubes):
            frame = cam.grab(timeout=1.0)
            np.testing.assert_array_equal(frame.cube, cube)
            assert frame.meta.frame_id == 10 + i and frame.meta.gain == 2.0
            assert frame.flags == set()
        cam.trigger()
        with pytest.raises(DeviceTimeout, match=r"the recording ended after 3 frame\(s\).*loop=True"):
            cam.read(timeout=1.0)


def test_software_mode_without_trigger_times_out(tmp_path):
    _npz_dir(tmp_path, n=1)
    cam = ReplayCamera(tmp_path)
    cam.arm()
    with pytest.raises(DeviceTimeout, match="no software trigger pending"):
        cam.read(timeout=0.02)


def test_free_run_loop_continues_frame_ids(tmp_path):
    _npz_dir(tmp_path, n=2)
    cam = ReplayCamera(tmp_path, loop=True)
    cam.configure(trigger_mode="free_run")
    cam.arm()
    ids = [cam.read().meta.frame_id for _ in range(5)]
    # the next pass continues after the last id: a wrap is not a gap (no false frames_missed)
    assert ids == [10, 11, 12, 13, 14]


def test_fps_paces_frames(tmp_path):
    _npz_dir(tmp_path, n=3)
    cam = ReplayCamera(tmp_path, fps=4.0)
    cam.configure(trigger_mode="free_run")
    cam.arm()
    cam.read()
    # The next frame is due 0.25 s later: a shorter read timeout must expire.
    with pytest.raises(DeviceTimeout, match=r"next frame due in .* at 4 fps"):
        cam.read(timeout=0.01)
    t0 = time.monotonic()
    cam.read(timeout=1.0)
    assert time.monotonic() - t0 > 0.1  # paced, not served immediately


def test_external_trigger_and_bad_fps_rejected(tmp_path):
    _npz_dir(tmp_path, n=1)
    cam = ReplayCamera(tmp_path)
    with pytest.raises(DeviceError, match="no external trigger input"):
        cam.configure(trigger_mode="external")
    with pytest.raises(DeviceError, match="fps: expected a frame rate > 0 or None, got -1"):
        ReplayCamera(tmp_path, fps=-1)


def test_tivita_frames_are_float32_and_nonfinite_flagged(tmp_path):
    cube = np.full((3, 2, 100), 0.5, np.float32)
    cube[1, 1, :3] = np.nan
    cube[0, 0, 7] = -np.inf
    write_tivita_cube(tmp_path / "a_SpecCube.dat", cube)
    cam = ReplayCamera(tmp_path / "a_SpecCube.dat")
    cam.arm()
    frame = cam.grab()
    assert frame.cube.dtype == np.float32
    np.testing.assert_array_equal(frame.cube, cube)
    np.testing.assert_array_equal(frame.wavelengths, np.linspace(500, 1000, 100))
    assert "nonfinite" in frame.flags
    assert cam.last_nonfinite_count == 4 and cam.nonfinite_frames == 1


def test_htc_style_nested_tivita_directory(tmp_path):
    for i, ts in enumerate(["2020_01_01_10_00_00", "2020_01_01_10_00_05"]):
        (tmp_path / "P001" / ts).mkdir(parents=True)
        write_tivita_cube(tmp_path / "P001" / ts / f"{ts}_SpecCube.dat",
                          np.full((2, 2, 100), i, np.float32))
    cam = ReplayCamera(tmp_path)
    cam.arm()
    assert [float(cam.grab().cube[0, 0, 0]) for _ in range(2)] == [0.0, 1.0]


def test_envi_and_wavelength_override(tmp_path):
    cube = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    write_envi(tmp_path / "e.hdr", cube)  # no wavelengths in the header
    with pytest.raises(DataFormatError, match=r"has no wavelengths; give them in a sidecar <name>\.json next to it"):
        ReplayCamera(tmp_path / "e.hdr")
    cam = ReplayCamera(tmp_path / "e.hdr", wavelengths=WL)
    cam.arm()
    frame = cam.grab()
    np.testing.assert_array_equal(frame.cube, cube)
    np.testing.assert_array_equal(frame.wavelengths, WL)
    with pytest.raises(DataFormatError, match="strictly ascending"):
        ReplayCamera(tmp_path / "e.hdr", wavelengths=WL[::-1])


def test_npy_stack(tmp_path):
    stack = np.arange(2 * 2 * 3 * 4, dtype=np.uint16).reshape(2, 2, 3, 4)
    np.save(tmp_path / "s.npy", stack)
    np.save(tmp_path / "s.wavelengths.npy", WL)
    cam = ReplayCamera(tmp_path / "s.npy")
    cam.configure(trigger_mode="free_run")
    cam.arm()
    for i in range(2):
        frame = cam.read()
        np.testing.assert_array_equal(frame.cube, stack[i])
        assert frame.meta.frame_id == i
    with pytest.raises(DeviceTimeout, match="recording ended"):
        cam.read()


@pytest.mark.parametrize("make, match", [
    (lambda d: None, "no frames found"),
    (lambda d: ((d / "a.npz").write_bytes(b""), (d / "b.dat").write_bytes(b"")), "mixes formats"),
    (lambda d: (d / "x.txt").write_text("hi"), "no frames found"),
])
def test_bad_directories(tmp_path, make, match):
    make(tmp_path)
    with pytest.raises(DataFormatError, match=match):
        ReplayCamera(tmp_path)


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(DataFormatError, match="no such file or directory"):
        ReplayCamera(tmp_path / "nope")
    (tmp_path / "x.tiff").write_bytes(b"")
    with pytest.raises(DataFormatError, match="unknown recording type"):
        ReplayCamera(tmp_path / "x.tiff")


def test_shape_change_mid_recording(tmp_path):
    write_npz_frame(tmp_path / "frame_000000.npz", np.zeros((2, 2, 4), np.uint16), WL)
    write_npz_frame(tmp_path / "frame_000001.npz", np.zeros((2, 3, 4), np.uint16), WL)
    cam = ReplayCamera(tmp_path)
    cam.arm()
    cam.grab()
    with pytest.raises(DataFormatError, match=r"frame 1 has shape \(2, 3, 4\).*\(2, 2, 4\)"):
        cam.grab()


def test_to_frame_dtype():
    assert to_frame_dtype(np.array([[[3]]], np.uint8)).dtype == np.uint16
    assert to_frame_dtype(np.array([[[0.25]]], np.float64)).dtype == np.float32
    np.testing.assert_array_equal(to_frame_dtype(np.array([[[65535]]], np.int32)), [[[65535]]])
    with pytest.raises(DataFormatError, match=r"int16 raw counts must lie in 0..65535.*-2..5"):
        to_frame_dtype(np.array([[[-2, 5]]], np.int16))


def test_cache_serves_shared_read_only_cubes(tmp_path):
    cubes = _npz_dir(tmp_path, n=2)
    cam = ReplayCamera(tmp_path, loop=True, cache=True)
    cam.configure(trigger_mode="free_run")
    cam.arm()
    first = [cam.read() for _ in range(2)]
    for f in first:
        (tmp_path / f"frame_{f.meta.frame_id - 10:06d}.npz").unlink()  # disk no longer needed
    second = [cam.read() for _ in range(2)]
    for a, b, cube in zip(first, second, cubes):
        assert a.cube is b.cube and not b.cube.flags.writeable
        np.testing.assert_array_equal(b.cube, cube)


def test_wavelength_change_mid_recording(tmp_path):
    write_npz_frame(tmp_path / "frame_000000.npz", np.zeros((2, 2, 4), np.uint16), WL)
    write_npz_frame(tmp_path / "frame_000001.npz", np.zeros((2, 2, 4), np.uint16), WL + 1.0)
    cam = ReplayCamera(tmp_path)
    cam.arm()
    cam.grab()
    with pytest.raises(DataFormatError, match="frame 1 has other wavelengths than the first frame"):
        cam.grab()


def test_paced_frame_is_stamped_when_its_slot_opens(tmp_path):
    """End-to-end latency is measured from the trigger stamp: with fps set, a trigger issued
    before the frame's slot must not count the pacing wait as pipeline latency."""
    _npz_dir(tmp_path, n=2)
    cam = ReplayCamera(tmp_path, fps=10.0)
    cam.arm()
    t_trigger = time.monotonic_ns()
    cam.trigger()
    cam.trigger()  # both triggers at once; the second frame's slot opens 0.1 s later
    first, second = cam.read(1.0), cam.read(1.0)
    delivered = time.monotonic_ns()
    assert first.meta.timestamp_ns >= t_trigger
    gap_s = (second.meta.timestamp_ns - first.meta.timestamp_ns) / 1e9
    assert 0.09 <= gap_s <= 0.2
    assert second.meta.timestamp_ns <= delivered


def test_loop_keeps_gaps_inside_the_recording(tmp_path):
    for i, fid in enumerate((5, 6, 8)):  # one missed trigger between 6 and 8
        write_npz_frame(tmp_path / f"frame_{i:06d}.npz", np.zeros((2, 2, 4), np.uint16), WL,
                        {"frame_id": fid})
    cam = ReplayCamera(tmp_path, loop=True)
    cam.configure(trigger_mode="free_run")
    cam.arm()
    assert [cam.read().meta.frame_id for _ in range(6)] == [5, 6, 8, 9, 10, 12]
