"""SimulatedBench: trigger pulses make frames, LED state changes what the camera sees."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from drivers.bench import SimulatedBench
from edge.errors import DeviceTimeout


@pytest.fixture
def bench(sim_only):
    with SimulatedBench(rows=12, cols=16, seed=2) as b:
        yield b


def _mean(frame) -> float:
    return float(np.asarray(frame.cube, dtype=np.float64).mean())


def test_pulses_make_frames_and_leds_light_them(bench):
    bench.illumination.set_state({"white": 1.0})
    bench.trigger.configure(source="software")
    bench.trigger.arm()
    ids, means = [], []
    for _ in range(3):
        bench.trigger.trigger()
        frame = bench.camera.read(timeout=5.0)
        ids.append(frame.meta.frame_id)
        means.append(_mean(frame))
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    assert bench.trigger.counter == 3
    bench.illumination.safe()  # all LEDs off -> dark frame
    bench.trigger.arm()
    bench.trigger.trigger()
    dark = bench.camera.read(timeout=5.0)
    assert _mean(dark) < 0.2 * min(means)
    with pytest.raises(DeviceTimeout):
        bench.camera.read(timeout=0.2)  # no pulse, no frame


def test_missed_pulse_shows_as_gap(bench):
    bench.illumination.set_state({"white": 1.0})
    bench.trigger.configure(source="software")
    bench.trigger.arm()
    bench.trigger.trigger()
    first = bench.camera.read(timeout=5.0).meta.frame_id
    bench.camera.disarm()
    bench.camera.arm()
    bench.camera.max_queue = 1
    bench.trigger.trigger()
    bench.trigger.trigger()  # the camera's one-slot queue is full: this pulse is missed
    bench.trigger.trigger()
    got = [bench.camera.read(timeout=5.0).meta.frame_id]
    assert got[0] == first + 1
    bench.trigger.trigger()
    assert bench.camera.read(timeout=5.0).meta.frame_id == first + 4  # ids 2, 3 missed


def test_missed_pulses_reported_once_at_close(sim_only, caplog):
    """Issue 15 item 14: one warning per missed pulse flooded a run (23 lines for 5 frames);
    the bench counts them and says so once, at close."""
    b = SimulatedBench(rows=12, cols=16, seed=2).start()
    try:
        b.illumination.set_state({"white": 1.0})
        b.trigger.configure(source="software")
        b.trigger.arm()
        b.camera.max_queue = 1
        with caplog.at_level(logging.DEBUG):
            for _ in range(4):  # one slot: pulses 2-4 are missed
                b.trigger.trigger()
            b.camera.read(timeout=5.0)
            b.trigger.trigger()
            b.camera.read(timeout=5.0)
            assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
            assert (b.pulses, b.missed_pulses) == (5, 3)
    finally:
        with caplog.at_level(logging.DEBUG):
            b.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["simulated bench: the camera missed 3 of 5 trigger pulses (queue full "
                        "or still exposing; each shows as a frame-id gap)"]
    b.close()  # idempotent, and says nothing more
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_bench_refuses_a_camera_without_trigger_input(sim_only):
    from edge.errors import DeviceError

    class Plain:
        pass

    with pytest.raises(DeviceError, match="camera: the simulated bench needs a camera that "
                                          "takes trigger edges .* got Plain"):
        SimulatedBench(Plain())
