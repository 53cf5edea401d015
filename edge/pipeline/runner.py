"""The pipeline runner: an acquisition thread feeding a bounded queue, stages, sinks.

Threads and queues live here only.  The acquisition thread triggers (software mode) and reads
the camera and puts frames into a bounded queue; the calling thread runs the stages and sinks
one frame at a time and times each with ``time.monotonic_ns``.

Drop policy (stated, never silent):

``"newest"``
    For live display: when the queue is full the oldest waiting frame is discarded so the
    newest one is shown next; every discard is counted in ``frames_dropped``, and so are
    frames still queued when the run is interrupted.  Frames the producer read ahead beyond
    the requested count at a normal end were never asked for and are not counted.
``"block"``
    For recordings and benchmarks: acquisition waits for room; nothing is dropped.

A gap in the camera's frame ids (a missed trigger) is counted in ``frames_missed``.

Statistics are kept in bounded memory (:class:`~edge.pipeline.metrics.StreamingHistogram`), so
``run(None)`` may last hours.  Per-frame records are not kept here: ``on_record`` hands one
small dict per processed frame to the caller (``edge.latency`` collects them for regression
runs); see :meth:`Pipeline.run`.
Shutdown is clean on Ctrl-C/SIGTERM (the CLI turns SIGTERM into KeyboardInterrupt): the
acquisition thread is stopped and joined, the camera, stages and sinks are closed, and the
metrics of the frames processed so far are returned.  While the run shuts down (at most the
read timeout plus 2 s) a further Ctrl-C/SIGTERM is held and logged instead of aborting the
shutdown, so pressing Ctrl-C twice does not lose the results.  An error of the acquisition
thread after the run was told to stop (e.g. a read cut short by the shutdown) is logged, not
raised.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from edge.core.frame import Frame
from edge.errors import DeviceError, DeviceTimeout, HsiEdgeError
from edge.pipeline.metrics import LatencyStats, StreamingHistogram
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
    on_record : callable, optional
        Called in the processing thread with one dict per processed frame, all times
        ``time.monotonic_ns()``: ``seq`` (camera frame id), ``trigger_ns`` and ``exposure_us``
        (from the frame metadata), ``arrival_ns`` (camera read returned), ``dequeue_ns``,
        ``queue_depth`` (frames still waiting at dequeue), ``stages``: list of
        ``(name, start_ns, end_ns)`` in order, the sinks last as ``"sink"``,
        ``overlay_ready_ns`` (end of the last stage, before the sinks) and ``done_ns`` (sinks
        done), ``sub_ms``: the stages' finer timings (:meth:`Stage.sub_timings_ms`; a GPU stage
        reports its CUDA-event times there).  It must be quick; an error it raises ends the run.
    """

    def __init__(self, camera, stages: Sequence[Stage], sinks: Sequence[Sink] = (), *,
                 queue_size: int = 2, drop_policy: str = "block", read_timeout_s: float = 5.0,
                 on_record=None):
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
        self.on_record = on_record

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
                    if self.camera.exhausted:
                        state["end_of_stream"] = True
                        break
                    raise
                if stop.is_set():
                    break  # read finished after the run ended: not delivered, not counted
                t_arrival = time.monotonic_ns()
                if state["acquire_cap"] is None or produced < state["acquire_cap"]:
                    state["acquire"].add(t_arrival - t0)
                fid = frame.meta.frame_id
                if last_id is not None and fid > last_id + 1:
                    state["missed"] += fid - last_id - 1
                last_id = fid
                produced += 1
                state["produced"] = produced
                self._put(q, (frame, t_arrival), stop, state)
        except BaseException as exc:  # handed to the processing thread
            if stop.is_set():
                # The run is already over (frames reached, error or Ctrl-C in the processing
                # thread); a read cut short by the shutdown is not the run's failure.
                log.debug("acquisition error after stop ignored: %s", exc)
            else:
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
                        old = q.get_nowait()
                    except queue.Empty:
                        continue
                    if old is not _END:
                        # a discard by the policy while running; one at shutdown is a frame
                        # left over (counted as dropped only if the run was interrupted)
                        state["leftover" if stop.is_set() else "dropped"] += 1
                    continue
                if stop.is_set():
                    if not final:
                        state["leftover"] += 1  # a delivered frame that found no room
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
        e2e = StreamingHistogram()
        result = RunResult()
        # acquire times of the frames asked for only (not of frames read ahead and discarded)
        state: dict[str, Any] = {"produced": 0, "missed": 0, "acquire": StreamingHistogram(),
                                 "acquire_cap": frames, "error": None,
                                 "dropped": 0, "leftover": 0,
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
        in_process = 0  # 1 while a frame is inside the stages (lost if Ctrl-C hits there)
        stage_error: HsiEdgeError | None = None
        try:
            while frames is None or result.frames_processed < frames:
                item = q.get()
                if item is _END:
                    break
                in_process = 1
                t_dequeue = time.monotonic_ns()
                spans: list[tuple[str, int, int]] = []
                sub_ms: dict[str, float] = {}
                frame = self._process(item[0], stats, spans, sub_ms)
                in_process = 0
                e2e.add(spans[-1][2] - frame.meta.timestamp_ns)
                if self.on_record is not None:
                    self.on_record(self._record(frame, item[1], t_dequeue, q.qsize(), spans,
                                                sub_ms))
                result.frames_processed += 1
                result.frames_flagged += bool(frame.flags)
                result.last_frame = frame
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted: stopping after %d frames", result.frames_processed)
        except HsiEdgeError as exc:  # a stage failed: shut down, then report with the metrics
            stage_error = exc
        finally:
            with _interrupts_held(self.read_timeout_s + 2.0) as held:
                stop.set()
                leftover = self._drain(q) + in_process
                worker.join(timeout=self.read_timeout_s + 2.0)
                leftover += self._drain(q)  # what the producer put while it stopped
                if worker.is_alive():
                    log.warning("acquisition thread still in camera.read() %.1f s after stop; "
                                "the camera driver does not honour its read timeout",
                                self.read_timeout_s + 2.0)
                result.wall_s = (time.monotonic_ns() - t_start) / 1e9
                if bar is not None:
                    bar.close()
                try:
                    self.camera.disarm()
                except DeviceError as exc:
                    log.warning("camera disarm failed during shutdown: %s", exc)
            if held:
                result.interrupted = True
        error = stage_error or (state["error"] if not result.interrupted else None)
        # Discards by the "newest" policy, plus (after Ctrl-C) frames still queued: delivered
        # while the run was live and never shown.  At a normal end, frames read ahead beyond
        # the requested count were not asked for.
        leftover += state["leftover"]
        result.frames_dropped = state["dropped"] + (leftover if result.interrupted else 0)
        if leftover and not result.interrupted:
            log.debug("%d frame(s) read ahead beyond the requested count discarded", leftover)
        result.frames_missed = state["missed"]
        result.end_of_stream = state["end_of_stream"]
        if result.end_of_stream and frames is not None and result.frames_processed < frames:
            log.warning("source ended after %d of %d frames", result.frames_processed, frames)
        result.stages = {"acquire": state["acquire"].summary_ms()}
        result.stages.update(stats.summary())
        result.end_to_end = e2e.summary_ms()
        if error is not None:
            # The frames processed before the failure keep their figures: callers (hsi-edge
            # run) write them next to the error.
            error.partial_result = result
            raise error
        return result

    def _process(self, frame: Frame, stats: LatencyStats, spans: list[tuple[str, int, int]],
                 sub_ms: dict[str, float]) -> Frame:
        """Run stages and sinks on ``frame``.

        Appends ``(name, start_ns, end_ns)`` to ``spans`` and puts the stages' finer timings
        into ``sub_ms`` (each stage asked once per frame; a later stage's name wins).
        """
        for stage in self.stages:
            t0 = time.monotonic_ns()
            frame = stage.process(frame)
            t1 = time.monotonic_ns()
            stats.add(stage.name, t1 - t0)
            spans.append((stage.name, t0, t1))
            sub = stage.sub_timings_ms()
            for name, ms in sub.items():
                stats.add(name, int(ms * 1e6))
            sub_ms.update(sub)
        t0 = time.monotonic_ns()
        for sink in self.sinks:
            sink.write(frame)
        t1 = time.monotonic_ns()
        stats.add("sink", t1 - t0)
        spans.append(("sink", t0, t1))
        return frame

    def _record(self, frame: Frame, arrival_ns: int, dequeue_ns: int, depth: int,
                spans: list[tuple[str, int, int]], sub: dict[str, float]) -> dict[str, Any]:
        """The per-frame record handed to ``on_record`` (see the class docstring)."""
        return {"seq": int(frame.meta.frame_id), "trigger_ns": int(frame.meta.timestamp_ns),
                "exposure_us": float(frame.meta.exposure_us), "arrival_ns": arrival_ns,
                "dequeue_ns": dequeue_ns, "queue_depth": depth, "stages": spans,
                "overlay_ready_ns": spans[-2][2] if len(spans) > 1 else spans[-1][1],
                "done_ns": spans[-1][2], "sub_ms": sub, "flags": sorted(frame.flags)}

    @staticmethod
    def _drain(q: queue.Queue) -> int:
        """Empty the queue; returns the number of frames (not end markers) removed."""
        frames = 0
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                return frames
            frames += item is not _END

    def close(self) -> None:
        """Close stages and sinks (idempotent); the caller closes the camera."""
        for stage in self.stages:
            stage.close()
        for sink in self.sinks:
            sink.close()


@contextlib.contextmanager
def _interrupts_held(max_s: float) -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM for the duration of the block (main thread only).

    Yields the list of signals received meanwhile; the previous handlers are restored after.
    Outside the main thread (where handlers cannot be set) it does nothing.
    """
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def hold(signum: int, _frame: object) -> None:
        held.append(signum)
        log.warning("already stopping: waiting for the camera to stop (at most %.0f s)", max_s)

    previous = {}
    for name in ("SIGINT", "SIGTERM"):
        sig = getattr(signal, name, None)
        # None: a handler installed outside Python, which could not be put back afterwards
        if sig is None or signal.getsignal(sig) is None:
            continue
        try:
            previous[sig] = signal.signal(sig, hold)
        except (ValueError, OSError):  # pragma: no cover - exotic embedding
            pass
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
