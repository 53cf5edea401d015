"""The pipeline runner: an acquisition thread feeding a bounded queue, stages, sinks.

Threads and queues live here only.  The acquisition thread triggers (software mode) and reads
the camera and puts frames into a bounded queue; the calling thread runs the stages and sinks
one frame at a time and times each with ``time.monotonic_ns``.

Drop policy (stated, never silent):

``"newest"``
    For live display: when the queue is full the oldest waiting frame is discarded so the
    newest one is shown next; every discard is counted in ``frames_dropped``.
``"block"``
    For recordings and benchmarks: acquisition waits for room; nothing is dropped.

A gap in the camera's frame ids (a missed trigger) is counted in ``frames_missed``.
Shutdown is clean on Ctrl-C/SIGTERM (the CLI turns SIGTERM into KeyboardInterrupt): the
acquisition thread is stopped and joined, the camera, stages and sinks are closed, and the
metrics of the frames processed so far are returned.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from edge.core.frame import Frame
from edge.errors import DeviceError, DeviceTimeout, HsiEdgeError
from edge.pipeline.metrics import LatencyStats, summarise_ms
from edge.pipeline.sinks import Sink
from edge.pipeline.stages import Stage

__all__ = ["Pipeline", "RunResult", "DROP_POLICIES"]

log = logging.getLogger(__name__)

DROP_POLICIES = ("newest", "block")
_END = object()


@dataclass
class RunResult:
    """What one run did: counts, latency statistics and the last processed frame."""

    frames_processed: int = 0
    frames_dropped: int = 0
    frames_missed: int = 0
    frames_flagged: int = 0
    wall_s: float = 0.0
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    end_to_end: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    end_of_stream: bool = False
    last_frame: Frame | None = None

    @property
    def fps(self) -> float:
        return self.frames_processed / self.wall_s if self.wall_s > 0 else float("nan")

    def metrics(self, **extra: Any) -> dict[str, Any]:
        """The JSON-able metrics document (``metrics.json``)."""
        doc = {"frames_processed": self.frames_processed,
               "frames_dropped": self.frames_dropped,
               "frames_missed": self.frames_missed,
               "frames_flagged": self.frames_flagged,
               "fps": self.fps, "wall_s": self.wall_s,
               "interrupted": self.interrupted, "end_of_stream": self.end_of_stream}
        doc.update(extra)
        doc["stages"] = self.stages
        doc["end_to_end"] = self.end_to_end
        return doc


class Pipeline:
    """Source -> stages -> sinks.

    Parameters
    ----------
    camera : drivers.camera.Camera
        Opened and configured by the caller; armed and disarmed here.
    stages : sequence of Stage
        Run in order on every frame.
    sinks : sequence of Sink
    queue_size : int
        Bound of the acquisition queue (>= 1).
    drop_policy : {"newest", "block"}
    read_timeout_s : float
        Deadline of each camera read; a camera that stays silent longer fails the run with
        DeviceTimeout instead of hanging.
    """

    def __init__(self, camera, stages: Sequence[Stage], sinks: Sequence[Sink] = (), *,
                 queue_size: int = 2, drop_policy: str = "block", read_timeout_s: float = 5.0):
        if drop_policy not in DROP_POLICIES:
            raise HsiEdgeError(f"drop_policy: expected one of {', '.join(DROP_POLICIES)}, "
                               f"got {drop_policy!r}")
        if int(queue_size) < 1:
            raise HsiEdgeError(f"queue_size: expected an integer >= 1, got {queue_size!r}")
        self.camera = camera
        self.stages = list(stages)
        self.sinks = list(sinks)
        self.queue_size = int(queue_size)
        self.drop_policy = drop_policy
        self.read_timeout_s = float(read_timeout_s)

    # -- acquisition thread -----------------------------------------------------------------
    def _acquire(self, q: queue.Queue, stop: threading.Event, limit: int | None,
                 state: dict) -> None:
        produced = 0
        last_id = None
        try:
            while not stop.is_set() and (limit is None or produced < limit):
                t0 = time.monotonic_ns()
                if self.camera.trigger_mode == "software":
                    self.camera.trigger()
                try:
                    frame = self.camera.read(timeout=self.read_timeout_s)
                except DeviceTimeout:
                    if getattr(self.camera, "exhausted", False):
                        state["end_of_stream"] = True
                        break
                    raise
                state["acquire_ns"].append(time.monotonic_ns() - t0)
                fid = frame.meta.frame_id
                if last_id is not None and fid > last_id + 1:
                    state["missed"] += fid - last_id - 1
                last_id = fid
                produced += 1
                state["produced"] = produced
                self._put(q, frame, stop, state)
        except BaseException as exc:  # handed to the processing thread
            state["error"] = exc
        finally:
            self._put(q, _END, stop, state, final=True)

    def _put(self, q: queue.Queue, item: object, stop: threading.Event, state: dict,
             final: bool = False) -> None:
        while True:
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                # The end marker never displaces a frame in "block" mode: it waits for room.
                if self.drop_policy == "newest" or (final and stop.is_set()):
                    try:
                        q.get_nowait()  # counted: dropped = delivered - processed
                    except queue.Empty:
                        pass
                    continue
                if stop.is_set():
                    return
                time.sleep(0.001)

    # -- run ------------------------------------------------------------------------------
    def run(self, frames: int | None, *, progress: bool = False) -> RunResult:
        """Process ``frames`` frames (None: until the source ends or Ctrl-C).

        Returns
        -------
        RunResult
            Counts and latency statistics; ``interrupted`` is True after Ctrl-C/SIGTERM.

        Raises
        ------
        DeviceError, HsiEdgeError
            From the camera or a stage; the pipeline is shut down cleanly first.
        """
        if frames is not None and int(frames) < 1:
            raise HsiEdgeError(f"frames: expected an integer >= 1, got {frames!r}")
        stats = LatencyStats()
        e2e: list[int] = []
        result = RunResult()
        state: dict[str, Any] = {"produced": 0, "missed": 0, "acquire_ns": [], "error": None,
                                 "end_of_stream": False}
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=frames, unit="frame", desc="hsi-edge run", leave=False)
        # In "newest" mode the producer runs ahead and its surplus is dropped; in "block" mode
        # it produces exactly what will be processed.
        limit = frames if self.drop_policy == "block" else None
        self.camera.arm()
        worker = threading.Thread(target=self._acquire, args=(q, stop, limit, state),
                                  name="hsi-edge-acquire", daemon=True)
        t_start = time.monotonic_ns()
        worker.start()
        try:
            while frames is None or result.frames_processed < frames:
                item = q.get()
                if item is _END:
                    break
                frame = self._process(item, stats)
                e2e.append(time.monotonic_ns() - frame.meta.timestamp_ns)
                result.frames_processed += 1
                result.frames_flagged += bool(frame.flags)
                result.last_frame = frame
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted: stopping after %d frames", result.frames_processed)
        finally:
            stop.set()
            self._drain(q)
            worker.join(timeout=self.read_timeout_s + 2.0)
            result.wall_s = (time.monotonic_ns() - t_start) / 1e9
            if bar is not None:
                bar.close()
            try:
                self.camera.disarm()
            except DeviceError as exc:
                log.warning("camera disarm failed during shutdown: %s", exc)
        if state["error"] is not None and not result.interrupted:
            raise state["error"]
        # Every frame the camera delivered that was not processed counts as dropped (queue
        # overflow in "newest" mode, or frames still queued at Ctrl-C).
        result.frames_dropped = state["produced"] - result.frames_processed
        result.frames_missed = state["missed"]
        result.end_of_stream = state["end_of_stream"]
        if result.end_of_stream and frames is not None and result.frames_processed < frames:
            log.warning("source ended after %d of %d frames", result.frames_processed, frames)
        result.stages = {"acquire": summarise_ms(state["acquire_ns"][:max(
            result.frames_processed, 1)])}
        result.stages.update(stats.summary())
        result.end_to_end = summarise_ms(e2e)
        return result

    def _process(self, frame: Frame, stats: LatencyStats) -> Frame:
        for stage in self.stages:
            t0 = time.monotonic_ns()
            frame = stage.process(frame)
            stats.add(stage.name, time.monotonic_ns() - t0)
            for sub, ms in stage.sub_timings_ms().items():
                stats.add(sub, int(ms * 1e6))
        t0 = time.monotonic_ns()
        for sink in self.sinks:
            sink.write(frame)
        stats.add("sink", time.monotonic_ns() - t0)
        return frame

    @staticmethod
    def _drain(q: queue.Queue) -> None:
        while True:
            try:
                q.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        """Close stages and sinks (idempotent); the caller closes the camera."""
        for stage in self.stages:
            stage.close()
        for sink in self.sinks:
            sink.close()
