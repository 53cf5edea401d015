"""Shutdown races of the runner, strict metrics JSON and output-folder checks (review of
issue 3's "clean shutdown, no leaks" promise)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from edge.core.frame import Frame, FrameMeta
from edge.errors import ConfigError, DeviceError, HsiEdgeError
from edge.pipeline import Pipeline
from edge.pipeline.app import json_safe, prepare_out_dir, write_json
from edge.pipeline.sinks import NpzSink
from edge.pipeline.stages import Stage
from test_runner import WL, CountingCamera, Record


def _strict_loads(text: str):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


class FailsAfter(CountingCamera):
    """Delivers ``n`` frames at once; the next read fails ``delay_s`` later (a cable pulled
    while the run is already shutting down)."""

    def __init__(self, n, delay_s):
        super().__init__()
        self.n, self.delay_s_fail = n, delay_s

    def _do_read(self, deadline):
        if self._next >= self.n:
            time.sleep(self.delay_s_fail)
            raise DeviceError("camera unplugged")
        return super()._do_read(deadline)


def test_acquisition_error_after_stop_does_not_fail_a_finished_run():
    # "newest" mode reads ahead; the read in flight when the run ends fails after stop.
    # The queue holds all three frames, so none is displaced by the newest-wins policy
    # whatever the thread timing (with queue_size 2 the producer could drop frame 0).
    res = Pipeline(FailsAfter(3, 0.5), [Record()], drop_policy="newest",
                   queue_size=8).run(3)
    assert res.frames_processed == 3 and not res.interrupted


def test_acquisition_error_before_the_end_still_fails_the_run():
    with pytest.raises(DeviceError, match="camera unplugged"):
        Pipeline(FailsAfter(2, 0.0), [Record()], drop_policy="block").run(5)


def test_second_interrupt_during_shutdown_is_held():
    """Ctrl-C twice: the second press arrives while the camera is being disarmed."""

    class SecondCtrlC(CountingCamera):
        def _do_disarm(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside the shutdown
            self.disarmed = True

    class Interrupt(Stage):
        name = "interrupt"

        def process(self, frame):
            if frame.meta.frame_id == 2:
                raise KeyboardInterrupt
            return frame

    cam = SecondCtrlC()
    before = signal.getsignal(signal.SIGINT)
    res = Pipeline(cam, [Interrupt()]).run(10)
    assert res.interrupted and res.frames_processed == 2 and cam.disarmed
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_interrupt_during_a_normal_shutdown_marks_the_run_interrupted():
    class CtrlCAtDisarm(CountingCamera):
        def _do_disarm(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    res = Pipeline(CtrlCAtDisarm(), [Record()]).run(3)
    assert res.frames_processed == 3 and res.interrupted


def test_interrupts_held_outside_main_thread_is_a_no_op():
    from edge.pipeline.runner import _interrupts_held

    seen = []

    def worker():
        with _interrupts_held(1.0) as held:
            seen.append(held)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [[]]


def test_metrics_with_no_samples_are_strict_json(tmp_path):
    class Interrupt(Stage):
        name = "interrupt"

        def process(self, frame):
            raise KeyboardInterrupt

    res = Pipeline(CountingCamera(), [Interrupt()]).run(5)
    doc = res.metrics(quality=None)
    assert np.isnan(doc["end_to_end"]["mean_ms"])  # in memory: NaN means "no samples"
    write_json(tmp_path / "metrics.json", doc)
    back = _strict_loads((tmp_path / "metrics.json").read_text())
    assert back["frames_processed"] == 0 and back["interrupted"] is True
    assert back["end_to_end"] == {k: None for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms",
                                                    "max_ms")}


def test_json_safe_converts_numpy_and_non_finite():
    doc = {"a": np.float32(1.5), "b": [np.inf, -np.inf, float("nan")], "c": np.arange(2),
           "d": (np.int64(3), None, "x")}
    assert json_safe(doc) == {"a": 1.5, "b": [None, None, None], "c": [0, 1],
                              "d": [3, None, "x"]}


def test_write_json_failure_is_one_line(tmp_path):
    with pytest.raises(HsiEdgeError, match=r"missing/metrics.json: cannot write: No such file"):
        write_json(tmp_path / "missing" / "metrics.json", {"a": 1})


def test_prepare_out_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--out: '.*file' exists and is not a directory"):
        prepare_out_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"--out: cannot write to '.*file/sub': Not a directory"):
        prepare_out_dir(tmp_path / "file" / "sub")
    assert prepare_out_dir(tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the write probe leaves nothing


def test_sink_write_failure_is_one_clear_error(tmp_path):
    out = tmp_path / "maps"
    sink = NpzSink(out, every=1)
    frame = Frame(np.zeros((2, 3, 4), np.uint16), WL, FrameMeta(frame_id=7))
    frame.products["sto2"] = np.zeros((2, 3), np.float32)
    sink.write(frame)
    # the folder vanishes and a file takes its place (unmounted disk, operator error)
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    out.write_text("not a folder")
    with pytest.raises(HsiEdgeError, match=r"npz sink: cannot write frame 7 to .*maps: Not a "
                                           r"directory"):
        sink.write(frame)


def test_newest_policy_with_a_fast_consumer_drops_nothing():
    """A paced source that processing keeps up with: the frame read ahead at the end is not
    a drop (it used to be reported as one on every live run)."""
    cam = CountingCamera(delay_s=0.02)
    res = Pipeline(cam, [Record()], drop_policy="newest", queue_size=4).run(5)
    assert res.frames_processed == 5 and res.frames_dropped == 0


def test_frames_queued_at_ctrl_c_count_as_dropped():
    class SlowThenInterrupt(Stage):
        name = "slow"

        def process(self, frame):
            time.sleep(0.05)  # the queue fills meanwhile
            if frame.meta.frame_id == 1:
                raise KeyboardInterrupt
            return frame

    cam = CountingCamera()
    res = Pipeline(cam, [SlowThenInterrupt()], drop_policy="block", queue_size=3).run(20)
    assert res.interrupted and res.frames_processed == 1
    # frame 1 (interrupted inside the stage) and the full queue behind it
    # every frame delivered while the run was live is accounted for (a read in flight at
    # the stop is not delivered)
    assert res.frames_dropped >= 2
    assert cam._next - 1 <= res.frames_processed + res.frames_dropped <= cam._next
