"""The pipeline runner with a small deterministic camera (a real implementation of the
Camera contract that produces known cubes), so queueing, drops, gaps, errors and shutdown are
checked exactly."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from drivers.camera import Camera
from edge.core.frame import Frame, FrameMeta
from edge.errors import DeviceError, DeviceTimeout, HsiEdgeError
from edge.pipeline import Pipeline
from edge.pipeline.sinks import NullSink
from edge.pipeline.stages import Stage

WL = np.linspace(500, 1000, 4)


class CountingCamera(Camera):
    """Software-triggered camera whose frame i has every value = i; ids may skip."""

    def __init__(self, *, skip_every=0, delay_s=0.0, stop_after=None):
        super().__init__()
        self._wavelengths, self._shape, self._serial = WL, (2, 3, 4), "COUNT-1"
        self._pending = 0
        self._next = 0
        self.skip_every, self.delay_s, self.stop_after = skip_every, delay_s, stop_after
        self.exhausted = False
        self.armed_count = 0

    def _do_arm(self):
        self.armed_count += 1

    def _do_trigger(self):
        self._pending += 1

    def _do_read(self, deadline):
        if self.stop_after is not None and self._next >= self.stop_after:
            self.exhausted = True
            raise DeviceTimeout("recording ended")
        while self._pending == 0:
            if time.monotonic() > deadline:
                raise DeviceTimeout("no frame")
            time.sleep(0.001)
        self._pending -= 1
        time.sleep(self.delay_s)
        fid = self._next
        self._next += 1 + (1 if self.skip_every and fid % self.skip_every == self.skip_every - 1
                           else 0)
        cube = np.full(self._shape, fid, np.uint16)
        return Frame(cube, WL, FrameMeta(frame_id=fid))


class Record(Stage):
    name = "record"

    def __init__(self, sleep_s=0.0, fail_at=None):
        self.ids, self.sleep_s, self.fail_at = [], sleep_s, fail_at

    def process(self, frame):
        if self.fail_at is not None and frame.meta.frame_id == self.fail_at:
            raise HsiEdgeError("stage failed on purpose")
        time.sleep(self.sleep_s)
        assert int(frame.cube[0, 0, 0]) == frame.meta.frame_id
        self.ids.append(frame.meta.frame_id)
        return frame


def test_block_policy_processes_every_frame_in_order():
    cam, rec, sink = CountingCamera(), Record(), NullSink()
    res = Pipeline(cam, [rec], [sink], drop_policy="block").run(25)
    assert rec.ids == list(range(25)) and sink.count == 25
    assert (res.frames_processed, res.frames_dropped, res.frames_missed) == (25, 0, 0)
    assert set(res.stages) == {"acquire", "record", "sink"}
    for s in res.stages.values():
        assert s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert res.end_to_end["mean_ms"] > 0


def test_newest_policy_drops_and_counts_when_processing_is_slow():
    cam, rec = CountingCamera(), Record(sleep_s=0.02)
    res = Pipeline(cam, [rec], drop_policy="newest", queue_size=1).run(10)
    assert res.frames_processed == 10 and len(rec.ids) == 10
    assert res.frames_dropped > 0
    # every frame the camera delivered while the run was live was either shown or counted
    # as dropped; at most the one queued frame and the one read in flight at the end were
    # read ahead beyond the requested count and are not counted
    assert res.frames_processed + res.frames_dropped >= rec.ids[-1] + 1
    assert cam._next - 2 <= res.frames_processed + res.frames_dropped <= cam._next
    assert rec.ids == sorted(rec.ids)


def test_missed_triggers_show_as_gaps():
    res = Pipeline(CountingCamera(skip_every=5), [Record()]).run(12)
    assert res.frames_missed == 2  # ids 0-4, 6-10, 12.. -> two gaps in 12 frames


def test_stage_error_shuts_down_and_propagates():
    cam = CountingCamera()
    before = threading.active_count()
    with pytest.raises(HsiEdgeError, match="stage failed on purpose"):
        Pipeline(cam, [Record(fail_at=3)]).run(10)
    assert threading.active_count() == before
    assert not cam.is_armed


def test_camera_timeout_propagates_without_hanging():
    class Silent(CountingCamera):
        def _do_trigger(self):
            pass  # the trigger is lost

    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match="no frame"):
        Pipeline(Silent(), [Record()], read_timeout_s=0.2).run(3)
    assert time.monotonic() - t0 < 2.0


def test_end_of_stream_stops_cleanly():
    res = Pipeline(CountingCamera(stop_after=4), [Record()]).run(10)
    assert res.frames_processed == 4 and res.end_of_stream


def test_repeated_runs_leak_no_threads():
    cam = CountingCamera()
    before = threading.active_count()
    for _ in range(3):
        Pipeline(cam, [Record()]).run(5)
    assert threading.active_count() == before and cam.armed_count == 3


def test_keyboard_interrupt_returns_partial_result():
    class Interrupt(Stage):
        name = "interrupt"

        def process(self, frame):
            if frame.meta.frame_id == 2:
                raise KeyboardInterrupt
            return frame

    res = Pipeline(CountingCamera(), [Interrupt()]).run(10)
    assert res.interrupted and res.frames_processed == 2


def test_invalid_arguments():
    with pytest.raises(HsiEdgeError, match=r"drop_policy: expected one of newest, block, got 'oldest'"):
        Pipeline(CountingCamera(), [], drop_policy="oldest")
    with pytest.raises(HsiEdgeError, match=r"frames: expected an integer >= 1, got 0"):
        Pipeline(CountingCamera(), []).run(0)


def test_camera_contract_errors():
    cam = CountingCamera()
    with pytest.raises(DeviceError, match=r"read\(\): camera is not armed"):
        cam.read(0.1)
    with pytest.raises(DeviceError, match=r"exposure_us: expected 10-1e\+06 µs, got -1"):
        cam.configure(exposure_us=-1)
    with pytest.raises(DeviceError, match=r"trigger_mode: expected one of software, external, free_run"):
        cam.configure(trigger_mode="hardware")
    cam.arm()
    with pytest.raises(DeviceError, match=r"timeout: expected seconds > 0"):
        cam.read(0)
    with pytest.raises(DeviceError, match=r"cannot change while armed"):
        cam.configure(trigger_mode="external")
    cam.close()
    cam.close()  # idempotent


def test_stage_error_keeps_the_figures_of_frames_before_it():
    with pytest.raises(HsiEdgeError, match="stage failed on purpose") as info:
        Pipeline(CountingCamera(), [Record(fail_at=3)]).run(10)
    partial = info.value.partial_result
    assert partial.frames_processed == 3
    assert partial.stages["record"]["max_ms"] >= partial.stages["record"]["p50_ms"]


class SubTimed(Stage):
    """A stage with finer timings: frame i reports ``{"part": i ms}``; counts the asks."""

    name = "subtimed"

    def __init__(self):
        self.asked, self._last = 0, {}

    def process(self, frame):
        self._last = {"part": float(frame.meta.frame_id)}
        return frame

    def sub_timings_ms(self):
        self.asked += 1
        return self._last


def test_sub_timings_are_asked_once_per_frame_and_reach_stats_and_records():
    stage, records = SubTimed(), []
    res = Pipeline(CountingCamera(), [stage], on_record=records.append).run(6)
    assert stage.asked == 6
    assert [r["sub_ms"] for r in records] == [{"part": float(i)} for i in range(6)]
    # 0..5 ms: the per-stage figures see every frame's value
    assert res.stages["part"]["max_ms"] == pytest.approx(5.0, abs=1e-6)
