"""One corpus task: one recording through the ``hsi-edge run`` job, its figures and maps.

The task runs wherever the scheduler puts it (this process, a local worker process or a
worker on another machine: the corpus, the calibration records, the model and ``--out`` must
be reachable under the same paths there).  It calls :func:`edge.pipeline.app.run_job` -- the
function ``hsi-edge run`` calls -- on a copy of the configuration that replays this
recording with its calibration record, with the NPZ sink on every frame into a scratch folder;
it reads the maps back, summarises them (:mod:`edge.corpus.stats`) and writes, atomically and
in this order:

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
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.fileio import atomic_write_bytes
from edge.corpus.discover import Recording, safe_name
from edge.corpus.stats import RecordingStats
from edge.errors import DataFormatError, HsiEdgeError

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
    """

    cfg: Any
    card: str | None
    out: str


def record_path(out: str | os.PathLike, rec_id: str) -> Path:
    return Path(out) / "records" / f"{safe_name(rec_id)}.json"


def maps_path(out: str | os.PathLike, rec_id: str) -> Path:
    return Path(out) / "maps" / f"{safe_name(rec_id)}.npz"


def recording_config(job: CorpusJob, rec: Recording):
    """``job.cfg`` set up to replay ``rec`` as fast as it reads, with its calibration."""
    cfg = job.cfg
    camera = dataclasses.replace(cfg.camera, source="replay", replay_path=rec.path, fps=None,
                                 loop=False)
    calibration = dataclasses.replace(cfg.calibration, record=rec.calibration)
    model = cfg.model if job.card is None else dataclasses.replace(cfg.model, card=job.card)
    sinks = dataclasses.replace(cfg.sinks, png_every=0, npz_every=1)
    return dataclasses.replace(cfg, camera=camera, calibration=calibration, model=model,
                               sinks=sinks)


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
    from edge.pipeline.app import resolve_model_card, run_job

    t0 = time.perf_counter()
    _maybe_crash(rec.id)
    record: dict[str, Any] = {
        "id": rec.id, "path": rec.path, "calibration": rec.calibration,
        "fingerprint": fingerprint, "status": "ok", "error": None, "error_type": None,
        "frames": 0, "frames_expected": _expected_frames(rec), "frames_flagged": 0,
        "model": None, "backend": None, "runtime": None, "classes": {}, "indices": {},
        "timings": {}, "worker": {"host": socket.gethostname(), "pid": os.getpid()}}
    out = Path(job.out)
    scratch = Path(tempfile.mkdtemp(prefix=f".{safe_name(rec.id)}.", dir=out / "scratch"))
    try:
        cfg = recording_config(job, rec)
        result = run_job(cfg, frames=None, out=scratch, progress=False)
        m = result.metrics
        class_names: tuple[str, ...] = ()
        if m.get("model"):
            from edge.inference import load_model_card
            preset = (m.get("camera") or {}).get("preset")
            class_names = load_model_card(resolve_model_card(cfg.model.card, preset),
                                          verify_hash=False).class_names
        stats = RecordingStats(class_names)
        classes, sto2 = [], []
        for path in sorted(scratch.glob("maps_*.npz")):
            with np.load(path) as z:
                products = {k: z[k] for k in z.files if k not in ("wavelengths", "frame_id",
                                                                  "timestamp_ns")}
            stats.add(products)
            if "classes" in products:
                classes.append(products["classes"].astype(np.uint8))
            s = products["sto2"]
            sto2.append(np.where(np.isfinite(s), np.rint(np.clip(s, 0, 1) * STO2_SCALE),
                                 STO2_NAN).astype(np.uint16))
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
        buf = io.BytesIO()
        arrays = {"sto2_q": np.stack(sto2)} if sto2 else {}
        if classes:
            arrays["classes"] = np.stack(classes)
        np.savez_compressed(buf, **arrays)
        maps_path(out, rec.id).parent.mkdir(exist_ok=True)
        atomic_write_bytes(maps_path(out, rec.id), buf.getvalue())
    except HsiEdgeError as exc:
        record.update(status="failed", error=one_line(str(exc)), error_type=type(exc).__name__)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record["timings"]["task_s"] = time.perf_counter() - t0
    from edge.pipeline.app import write_json
    write_json(record_path(out, rec.id), record)
    return record
