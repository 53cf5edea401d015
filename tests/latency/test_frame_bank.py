"""The frame bank: the simulated camera's frames rendered once, replayed on a scripted clock."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.simulated import SimulatedCamera
from edge.errors import ConfigError, DeviceTimeout
from edge.latency.bank import FrameBank
from edge.latency.paced import PacedCamera


class ScriptedClock:
    def __init__(self):
        self.t = 1_000_000_000
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += int(round(s * 1e9))


@pytest.fixture
def camera():
    with SimulatedCamera("snapshot25", rows=8, cols=8, seed=0) as cam:
        cam.configure(exposure_us=5000, trigger_mode="software")
        yield cam


def test_frames_are_the_cameras_own_replayed_in_turn_with_trigger_times(camera):
    clock = ScriptedClock()
    bank = FrameBank(camera, 3, sensor_fps=camera.preset.fps, clock_ns=clock,
                     sleep=clock.sleep)
    cubes = [f.cube for f in bank.frames]
    assert len(cubes) == 3 and not np.array_equal(cubes[0], cubes[1])   # distinct noise
    bank.arm()
    got = []
    for k in range(5):
        t_trig = clock.t
        bank.trigger()
        f = bank.read(timeout=1.0)
        # ready one exposure after the trigger, and not before one sensor frame time
        # (1 / preset fps) after the previous frame
        assert clock.t >= t_trig + 5_000_000
        assert f.meta.frame_id == k and f.meta.timestamp_ns == t_trig
        got.append(f.cube)
    assert got[3] is cubes[0] and got[4] is cubes[1]
    assert not got[0].flags.writeable            # shared: a stage may not write into it
    assert bank.shape == camera.shape and bank.serial == camera.serial


def test_sensor_frame_time_bounds_back_to_back_triggers(camera):
    clock = ScriptedClock()
    bank = FrameBank(camera, 1, sensor_fps=camera.preset.fps, clock_ns=clock,
                     sleep=clock.sleep)
    bank.arm()
    bank.trigger()
    bank.trigger()                                # both at the same instant
    t0 = clock.t
    bank.read()
    bank.read()
    frame_ns = int(1e9 / camera.preset.fps)
    assert clock.t == t0 + 5_000_000 + frame_ns   # the second waits one sensor frame time


def test_read_without_trigger_and_late_exposure_time_out(camera):
    clock = ScriptedClock()
    bank = FrameBank(camera, 1, clock_ns=clock, sleep=clock.sleep)
    bank.arm()
    with pytest.raises(DeviceTimeout, match=r"no frame before the read timeout \(no software "
                                            r"trigger pending\)"):
        bank.read(timeout=0.5)
    bank.trigger()
    with pytest.raises(DeviceTimeout, match=r"exposure of frame 0 not finished before the "
                                            r"read timeout"):
        bank.read(timeout=0.001)


def test_refuses_bad_size_and_trigger_mode(camera):
    with pytest.raises(ConfigError, match=r"frame bank size: expected an integer >= 1, got 0"):
        FrameBank(camera, 0)
    camera.configure(trigger_mode="free_run")
    with pytest.raises(ConfigError, match=r"a frame bank needs 'software', got 'free_run'"):
        FrameBank(camera, 2)


def test_paced_bank_keeps_the_grid_and_the_marker(camera):
    clock = ScriptedClock()
    bank = FrameBank(camera, 2, clock_ns=clock, sleep=clock.sleep)
    paced = PacedCamera(bank, 25.0, clock_ns=clock, sleep=clock.sleep, marker_every=2)
    paced.arm()
    frames = []
    for _ in range(3):
        paced.trigger()
        frames.append(paced.read(timeout=1.0))
    assert [f.meta.frame_id for f in frames] == [0, 1, 2]
    top = (1 << frames[0].meta.bit_depth) - 1
    assert np.all(frames[0].cube[:4, :4] == top) and np.all(frames[2].cube[:4, :4] == top)
    assert not np.all(frames[1].cube[:4, :4] == top)
    assert not np.all(bank.frames[0].cube[:4, :4] == top)   # the bank itself is untouched


def test_paced_camera_refuses_a_camera_not_on_software_trigger(camera):
    camera.configure(trigger_mode="free_run")
    with pytest.raises(ConfigError, match=r"camera trigger mode: PacedCamera needs 'software', "
                                          r"got 'free_run'"):
        PacedCamera(camera, 25.0)
