"""One corpus task: one recording through the ``hsi-edge run`` job, its figures and maps.

The task runs wherever the scheduler puts it (this process, a local worker process or a
worker on another machine: the corpus, the calibration records, the model and ``--out`` must
be reachable under the same paths there).  It calls :func:`edge.pipeline.app.run_job` -- the
function ``hsi-edge run`` calls -- on a copy of the configuration that replays this
recording with its calibration record, no output folder and no sinks but its own (``extra_sinks``:
one that summarises every frame, :mod:`edge.corpus.stats`, and keeps its label and StO2
maps); then it writes, atomically and in this order:

- ``OUT/maps/<name>.npz``: ``classes`` (frames, rows, cols) uint8 (255 = withheld) and
  ``sto2_q`` (frames, rows, cols) uint16, StO2 quantised to 1e-4 (0.01 percentage point),
  65535 = NaN -- what ``hsi-edge corpus compare`` needs for IoU and pixel differences;
- ``OUT/records/<name>.json``: the result record (status, one-line error, figures, timings,
  fingerprint).  Its presence marks the recording done.

A data problem (a truncated or interrupted recording, bands the model cannot use, a missing or
unfitting calibration record) is an :class:`~edge.errors.HsiEdgeError`: the record says
``failed`` with its one-line message.  Anything else propagates, so Dask retries the task
(``retries``) and the run reports what is left of it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.fileio import atomic_write_bytes
from edge.corpus.discover import Recording, recorded_preset, safe_name
from edge.corpus.stats import INDEX_MAPS, RecordingStats
from edge.errors import DataFormatError, HsiEdgeError
from edge.pipeline.sinks import Sink

__all__ = ["CorpusJob", "process_recording", "record_path", "maps_path", "CRASH_ENV",
           "STO2_SCALE", "STO2_NAN"]

log = logging.getLogger(__name__)

#: Test hook: ``<recording id>:<marker file>`` makes the task for that recording end its
#: process with ``os._exit(70)`` the first time (the marker file records that it did), as a
#: worker killed by the OOM killer or a power cut would.
CRASH_ENV = "HSI_EDGE_CORPUS_TEST_CRASH"
#: StO2 quantisation of the stored maps: value * STO2_SCALE as uint16; STO2_NAN = NaN.
STO2_SCALE = 10_000
STO2_NAN = 65535


@dataclass(frozen=True)
class CorpusJob:
    """What every task of a run shares.

    Attributes
    ----------
    cfg : edge.pipeline.config.AppConfig
        The run configuration (camera source, recording and calibration are set per task).
    card : str or None
        Model card overriding ``cfg.model.card`` (``--model``).
    out : str
        The run's output folder.
    threads : int or None
        ONNX Runtime threads when ``cfg.model.threads`` is not set: 1 on Dask workers (one
        single-threaded process per core; ONNX Runtime would otherwise start one thread per
        core in every worker), None (its default) on the serial path.  An execution detail,
        not part of the fingerprint: the results do not depend on it.
    """

    cfg: Any
    card: str | None
    out: str
    threads: int | None = None


def record_path(out: str | os.PathLike, rec_id: str) -> Path:
    return Path(out) / "records" / f"{safe_name(rec_id)}.json"


def maps_path(out: str | os.PathLike, rec_id: str) -> Path:
    return Path(out) / "maps" / f"{safe_name(rec_id)}.npz"


def recording_config(job: CorpusJob, rec: Recording):
    """``job.cfg`` set up to replay ``rec`` as fast as it reads, with its calibration.

    The configuration's sinks are not used: the job runs without an output folder.
    """
    cfg = job.cfg
    camera = dataclasses.replace(cfg.camera, source="replay", replay_path=rec.path, fps=None,
                                 loop=False)
    calibration = dataclasses.replace(cfg.calibration, record=rec.calibration)
    model = cfg.model if job.card is None else dataclasses.replace(cfg.model, card=job.card)
    if model.threads is None and job.threads is not None:
        model = dataclasses.replace(model, threads=job.threads)
    return dataclasses.replace(cfg, camera=camera, calibration=calibration, model=model)


def one_line(message: str) -> str:
    """``message`` on one line (as the CLI prints errors: lines joined by '; ')."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def _maybe_crash(rec_id: str) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    target, _, marker = spec.partition(":")
    if target != rec_id or not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # crashed once already: this attempt runs
    os.close(fd)
    log.warning("corpus test hook: ending this process in the task for %s", rec_id)
    os._exit(70)


def _expected_frames(rec: Recording) -> int | None:
    try:
        doc = json.loads((Path(rec.path) / "recording.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    n = doc.get("frames", doc.get("frames_expected")) if isinstance(doc, dict) else None
    return n if isinstance(n, int) else None


class _Collector(Sink):
    """Summarises every frame and keeps its label map and quantised StO2 map."""

    name = "corpus"

    def __init__(self) -> None:
        self.stats: RecordingStats | None = None
        self.classes: list[np.ndarray] = []
        self.sto2: list[np.ndarray] = []

    def write(self, frame) -> None:
        p = frame.products
        self.stats.add({k: p[k] for k in (*INDEX_MAPS, "classes") if k in p})
        if "classes" in p:
            self.classes.append(np.array(p["classes"], dtype=np.uint8))  # a copy
        s = p["sto2"]
        self.sto2.append(np.where(np.isfinite(s), np.rint(np.clip(s, 0, 1) * STO2_SCALE),
                                  STO2_NAN).astype(np.uint16))


def process_recording(rec: Recording, job: CorpusJob, fingerprint: str) -> dict[str, Any]:
    """Run one recording; write its maps and record; return the record.

    Parameters
    ----------
    rec : Recording
    job : CorpusJob
    fingerprint : str
        :func:`edge.corpus.discover.recording_fingerprint` of this recording and job.

    Returns
    -------
    dict
        The record written to ``records/<name>.json``.
    """
    from edge.pipeline.app import resolve_model_card, run_job, write_json

    t0 = time.perf_counter()
    _maybe_crash(rec.id)
    record: dict[str, Any] = {
        "id": rec.id, "path": rec.path, "calibration": rec.calibration,
        "fingerprint": fingerprint, "status": "ok", "error": None, "error_type": None,
        "frames": 0, "frames_expected": _expected_frames(rec), "frames_flagged": 0,
        "model": None, "backend": None, "runtime": None, "classes": {}, "indices": {},
        "timings": {}, "worker": {"host": socket.gethostname(), "pid": os.getpid()}}
    out = Path(job.out)
    collector = _Collector()
    try:
        cfg = recording_config(job, rec)
        preset = cfg.camera.preset or recorded_preset(rec)
        card_path = resolve_model_card(cfg.model.card, preset)
        class_names: tuple[str, ...] = ()
        if card_path is not None:
            from edge.inference import load_model_card
            class_names = load_model_card(card_path).class_names
        collector.stats = RecordingStats(class_names)
        done = run_job(cfg, frames=None, out=None, progress=False, extra_sinks=[collector])
        if done.result.interrupted:
            # Ctrl-C/SIGTERM in the serial path: no record, so a rerun does this one again
            raise KeyboardInterrupt
        m = done.metrics
        stats = collector.stats
        expected = record["frames_expected"]
        if expected is not None and stats.frames != expected:
            raise DataFormatError(f"{rec.path}: processed {stats.frames} of the {expected} "
                                  "frames the recording holds (truncated or unreadable frames)")
        summary = stats.summary()
        record.update(frames=stats.frames, frames_flagged=int(m["frames_flagged"]),
                      model=m.get("model"), backend=m.get("backend"), runtime=m.get("runtime"),
                      classes=summary["classes"], indices=summary["indices"],
                      pixels=summary["pixels"], withheld_px=summary.get("withheld_px"),
                      class_names=list(class_names))
        record["timings"] = {"wall_s": m["wall_s"], "fps": m["fps"],
                             "stages_ms": {k: v.get("mean_ms")
                                           for k, v in (m.get("stages") or {}).items()}}
        arrays = {"sto2_q": np.stack(collector.sto2)} if collector.sto2 else {}
        if collector.classes:
            arrays["classes"] = np.stack(collector.classes)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(maps_path(out, rec.id), buf.getvalue())
    except HsiEdgeError as exc:
        record.update(status="failed", error=one_line(str(exc)), error_type=type(exc).__name__)
    record["timings"]["task_s"] = time.perf_counter() - t0
    write_json(record_path(out, rec.id), record)
    return record
