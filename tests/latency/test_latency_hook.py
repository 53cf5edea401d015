"""The pipeline's per-frame record hook and the paced camera (scripted clock)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.simulated import SimulatedCamera
from edge.errors import ConfigError
from edge.latency.paced import PacedCamera
from edge.latency.records import RecordCollector
from edge.latency.slow import SlowStage, apply_slow, parse_slow
from edge.latency.stats import summarise
from edge.pipeline import Pipeline
from edge.pipeline.sinks import NullSink
from edge.pipeline.stages import Stage


class Double(Stage):
    name = "double"

    def process(self, frame):
        frame.products["x"] = frame.cube.astype(np.float32) * 2
        return frame


class Overlay(Stage):
    name = "post"

    def process(self, frame):
        frame.products["overlay"] = frame.products["x"][..., 0]
        return frame


@pytest.fixture
def camera():
    with SimulatedCamera("snapshot25", rows=8, cols=8, seed=0) as cam:
        cam.configure(trigger_mode="software")
        yield cam


def test_on_record_gives_one_ordered_record_per_frame(camera):
    col = RecordCollector(10)
    pipe = Pipeline(camera, [Double(), Overlay()], [NullSink()], on_record=col)
    result = pipe.run(6)
    rec = col.records()
    assert result.frames_processed == 6 and len(rec) == 6
    assert rec.stage_names == ("double", "post", "sink")
    f = rec.fields
    np.testing.assert_array_equal(f["seq"], np.arange(6))
    assert np.all(f["trigger_ns"] <= f["arrival_ns"])
    assert np.all(f["arrival_ns"] <= f["dequeue_ns"])
    assert np.all(f["dequeue_ns"] <= rec.stage_start_ns[:, 0])
    assert np.all(rec.stage_start_ns <= rec.stage_end_ns)
    assert np.all(rec.stage_end_ns[:, :-1] <= rec.stage_start_ns[:, 1:])   # in order
    np.testing.assert_array_equal(f["overlay_ready_ns"], rec.stage_end_ns[:, 1])
    np.testing.assert_array_equal(f["done_ns"], rec.stage_end_ns[:, 2])
    assert np.all((f["queue_depth"] >= 0) & (f["queue_depth"] <= 2))
    np.testing.assert_array_equal(rec.exposure_us, camera.exposure_us)
    # the hook sees what the pipeline's own end-to-end figure is made of
    s = summarise(rec, period_ns=40_000_000)
    assert s["end_to_end"]["max_ms"] >= s["stages"]["double"]["max_ms"]


def test_pipeline_without_hook_is_unchanged(camera):
    result = Pipeline(camera, [Double()], [NullSink()]).run(3)
    assert result.frames_processed == 3 and set(result.stages) == {"acquire", "double", "sink"}
    assert result.end_to_end["max_ms"] > 0


class ScriptedClock:
    """Monotonic ns clock that advances only when told to, or when slept on."""

    def __init__(self, t0=1_000_000_000):
        self.t = t0
        self.slept = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.slept.append(s)
        self.t += int(round(s * 1e9))


def test_paced_camera_fires_on_the_grid_and_skips_late_slots(camera):
    clock = ScriptedClock()
    paced = PacedCamera(camera, 25.0, clock_ns=clock, sleep=clock.sleep)
    paced.arm()
    t0 = clock.t + 40_000_000
    ids, fire = [], []
    for late_ms in (0, 0, 10, 95, 0):
        clock.t += int(late_ms * 1e6)               # the consumer was busy this long
        paced.trigger()
        fire.append(clock.t - t0)
        ids.append(paced.read(timeout=2.0).meta.frame_id)
    assert fire == [0, 40_000_000, 80_000_000, 200_000_000, 240_000_000]
    assert ids == [0, 1, 2, 5, 6]                   # slots 3 and 4 passed: gaps
    assert paced.slots_skipped == 2 and paced.trigger_mode == "software"
    assert paced.serial == camera.serial            # the rest is the inner camera's
    paced.disarm()


def test_paced_camera_refuses_no_rate(camera):
    with pytest.raises(ConfigError, match=r"camera.fps: a paced latency run needs a frame "
                                          r"rate > 0, got 0"):
        PacedCamera(camera, 0)


def test_slow_spec_parsing_and_errors():
    assert parse_slow("chain=10%,post=2ms,chain=500us") == {"chain": (0.10, 500_000),
                                                            "post": (0.0, 2_000_000)}
    assert parse_slow(None) == {}
    with pytest.raises(ConfigError, match=r"--slow-b: expected STAGE=AMOUNT with AMOUNT like "
                                          r"10% , 2ms or 500us, got 'chain=fast'"):
        parse_slow("chain=fast", "--slow-b")
    with pytest.raises(ConfigError, match=r"--slow: no stage 'infer' in this pipeline "
                                          r"\(stages: double, post\)"):
        apply_slow([Double(), Overlay()], {"infer": (0.1, 0)})


def test_slow_stage_adds_at_least_the_set_amount(camera):
    stages = apply_slow([Double(), Overlay()], parse_slow("post=3ms"))
    assert isinstance(stages[1], SlowStage) and stages[1].name == "post"
    col = RecordCollector(4)
    Pipeline(camera, stages, [NullSink()], on_record=col).run(4)
    rec = col.records()
    # a busy wait never returns early: every frame's post stage took >= 3 ms
    assert np.all(rec.stage_ns("post") >= 3_000_000)


def test_glass_to_glass_markers_are_found_in_the_output_pixels():
    from edge.latency.session import LatencySession, with_overrides
    from edge.pipeline.config import AppConfig
    import dataclasses

    cfg = with_overrides(AppConfig(), preset="snapshot25", rows=12, cols=16, fps=50.0)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, card="none"))
    with LatencySession(cfg, marker_every=3) as s:
        rec = s.run_round(12, warmup=0)
    assert rec.stage_names[-2:] == ("marker", "sink")
    det = rec.rounds[0]["marker"]["detections_ns"]
    start = rec.stage_start_ns[:, rec.stage_names.index("marker")]
    end = rec.stage_end_ns[:, rec.stage_names.index("marker")]
    seen = []
    for t in det:     # each detection lies inside the marker stage of one frame
        (i,) = np.flatnonzero((start <= t) & (t <= end))
        seen.append(int(rec.fields["seq"][i]))
    marked = [int(q) for q in rec.fields["seq"] if q % 3 == 0]
    assert seen == marked and len(seen) >= 4          # only and all marked frames
    flashes = rec.rounds[0]["marker"]["flashes_ns"]
    assert len(flashes) >= len(seen)


def test_glass_to_glass_matching():
    from edge.latency.marker import glass_to_glass
    ms = 1_000_000
    g = glass_to_glass([0, 1000 * ms, 2000 * ms], [30 * ms, 2045 * ms])
    assert (g["flashes"], g["detected"], g["undetected"]) == (3, 2, 1)
    assert (g["min_ms"], g["max_ms"]) == (30.0, 45.0)
    g = glass_to_glass([0], [30 * ms, 40 * ms])         # a flash is matched once
    assert g["detected"] == 1 and g["max_ms"] == 30.0
