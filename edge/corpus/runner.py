"""``run_corpus``: every recording of a corpus as one Dask task, results in ``OUT``.

Execution
    ``workers=0``: in this process, one recording after the other (the serial path; the
    reference the distributed runs are compared with).  Otherwise on Dask
    (``dask.distributed``, the optional extra ``corpus``): an existing cluster when a
    scheduler address is given (``Client(address)``), else a ``LocalCluster`` of worker
    *processes* with one thread each (``threads_per_worker=1``; ``workers`` processes,
    default one per CPU core) -- processes, because the NumPy chain holds the GIL for part of
    every frame; each task's ONNX Runtime gets one thread when the config sets none.

Failure handling
    A recording whose data is bad is a ``failed`` record with its one-line error (the task
    catches it); the run goes on.  A task that raises anything else is retried once
    (``retries=1`` on ``submit``).  A worker process that dies mid-task (killed, out of
    memory) loses its tasks; the scheduler reschedules them on the other workers and counts
    the loss against the task: after ``distributed.scheduler.allowed-failures`` losses
    (Dask's default 3) it gives up with ``KilledWorker``, which becomes that recording's
    ``failed`` record (``error_type`` set, ``retry: true``) -- never a stopped run.

Resume
    Each task writes its record atomically when it ends (``OUT/records/``).  A rerun skips a
    recording whose record exists with the same fingerprint (recording files' size and mtime,
    calibration record, config hash, model hash, hsi-edge version) unless the record says
    ``retry`` (a lost worker or an internal error) or it failed and ``redo_failed`` is set;
    everything else is computed again.

Outputs: ``OUT/records/*.json``, ``OUT/maps/*.npz`` (see :mod:`edge.corpus.task`), then
``OUT/results.parquet`` (``results.csv`` when pyarrow is not installed) and
``OUT/summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from edge import __version__
from edge.corpus.discover import (Recording, config_hash, discover, model_hash,
                                  recorded_preset, recording_fingerprint)
from edge.corpus.table import write_table
from edge.corpus.task import CorpusJob, process_recording, record_path
from edge.errors import BackendUnavailable, ConfigError

__all__ = ["run_corpus", "import_distributed", "TASK_RETRIES"]

log = logging.getLogger(__name__)

#: Retries of a task that raised (not a data error: those are results).
TASK_RETRIES = 1
INSTALL_HINT = "pip install 'hsi-edge[corpus]'"


def import_distributed():
    """``dask.distributed``, or BackendUnavailable naming the extra to install."""
    try:
        import distributed
    except ImportError as exc:
        raise BackendUnavailable(f"corpus: dask.distributed is not installed (needed for "
                                 f"--workers >= 1 and --scheduler); {INSTALL_HINT}, or run "
                                 "serially with --workers 0") from exc
    return distributed


def _prepare(out: Path) -> None:
    from edge.pipeline.app import prepare_out_dir

    prepare_out_dir(out)
    for sub in ("records", "maps"):
        (out / sub).mkdir(exist_ok=True)


def _done(path: Path, fingerprint: str, redo_failed: bool = False) -> bool:
    """A current result exists: same fingerprint, not marked for retry (and, with
    ``redo_failed``, not failed)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and doc.get("fingerprint") == fingerprint
            and not doc.get("retry") and not (redo_failed and doc.get("status") != "ok"))


def _lost_record(rec: Recording, fingerprint: str, exc: BaseException) -> dict[str, Any]:
    from edge.corpus.task import one_line
    return {"id": rec.id, "path": rec.path, "calibration": rec.calibration,
            "fingerprint": fingerprint, "status": "failed",
            "error": one_line(f"{type(exc).__name__}: {exc}") or type(exc).__name__,
            "error_type": type(exc).__name__, "retry": True, "frames": 0,
            "frames_flagged": 0, "classes": {}, "indices": {}, "timings": {}}


def run_corpus(corpus: str | os.PathLike, cfg, out: str | os.PathLike, *,
               card: str | None = None, scheduler: str | None = None,
               workers: int | None = None, progress: bool = True, redo_failed: bool = False,
               announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Process every recording of ``corpus``; returns the summary (also ``OUT/summary.json``).

    Parameters
    ----------
    corpus : path-like
        Folder tree of recordings or a manifest YAML (:func:`edge.corpus.discover.discover`).
    cfg : edge.pipeline.config.AppConfig
        Run configuration; camera source, recording and calibration are set per recording.
    out : path-like
        Output folder (created; a previous run there is resumed).
    card : str, optional
        Model card overriding ``cfg.model.card``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    workers : int, optional
        0: serial in this process; N: a local cluster of N worker processes; None: one per
        CPU core.  Ignored with ``scheduler``.
    progress : bool
        Progress bar on stderr.
    redo_failed : bool
        Process recordings whose current record says ``failed`` again (e.g. after fixing a
        worker's installation); by default a rerun keeps them.
    announce : callable, optional
        Called with lines for the user (the dashboard address, what is skipped).

    Raises
    ------
    ConfigError
        Bad corpus, ``workers`` < 0.
    BackendUnavailable
        Dask is needed and not installed.
    """
    say = announce or log.info
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers: expected an integer >= 0 (0: serial), got {workers}")
    recs = discover(corpus)
    out = Path(out)
    if scheduler is not None or workers != 0:
        import_distributed()  # before anything is written
    _prepare(out)
    job = CorpusJob(cfg=cfg, card=card, out=str(out.resolve()))
    cfg_h = config_hash(cfg)
    card_name = card or cfg.model.card
    models: dict[Any, str] = {}
    fingerprints: dict[str, str] = {}
    todo: list[Recording] = []
    from edge.pipeline.app import resolve_model_card
    for rec in recs:
        preset = cfg.camera.preset or recorded_preset(rec)
        try:
            card_path = resolve_model_card(card_name, preset)
        except Exception:  # noqa: BLE001 - the task reports it with the recording
            card_path = None
        key = str(card_path)
        if key not in models:
            models[key] = model_hash(card_path)
        fp = recording_fingerprint(rec, cfg_h, models[key])
        fingerprints[rec.id] = fp
        if not _done(record_path(out, rec.id), fp, redo_failed):
            todo.append(rec)
    skipped = len(recs) - len(todo)
    if skipped:
        say(f"resuming: {skipped} of {len(recs)} recording(s) already done, "
            f"{len(todo)} to process")
    t0 = time.perf_counter()
    where: dict[str, Any] = {"mode": "serial", "workers": 0}
    if todo:
        if scheduler is None and workers == 0:
            _run_serial(todo, job, fingerprints, progress)
        else:
            where = _run_dask(todo, job, fingerprints, progress, scheduler, workers, say)
    wall = time.perf_counter() - t0
    records = [json.loads(record_path(out, r.id).read_text(encoding="utf-8")) for r in recs]
    table = write_table(out, records)
    summary = _summary(records, skipped=skipped, computed=len(todo), wall_s=wall,
                       where=where, table=table, cfg_hash=cfg_h, models=models)
    from edge.pipeline.app import write_json
    write_json(out / "summary.json", summary)
    return summary


def _bar(total: int, progress: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc="corpus", unit="rec", file=sys.stderr,
                disable=None if progress else True)


def _run_serial(todo: list[Recording], job: CorpusJob, fps: dict[str, str],
                progress: bool) -> None:
    with _bar(len(todo), progress) as bar:
        for rec in todo:
            try:
                process_recording(rec, job, fps[rec.id])
            except Exception as exc:  # noqa: BLE001 - reported per recording, run goes on
                log.warning("corpus: %s: %s: %s", rec.id, type(exc).__name__, exc)
                _write_lost(job, rec, fps[rec.id], exc)
            bar.update(1)


def _write_lost(job: CorpusJob, rec: Recording, fp: str, exc: BaseException) -> None:
    from edge.pipeline.app import write_json
    write_json(record_path(job.out, rec.id), _lost_record(rec, fp, exc))


def _run_dask(todo, job, fps, progress, scheduler, workers, say) -> dict[str, Any]:
    import contextlib

    distributed = import_distributed()
    if not log.isEnabledFor(logging.INFO):
        # Dask logs every scheduler/nanny step at INFO; shown with -v, warnings always
        for name in ("distributed", "distributed.scheduler", "distributed.nanny",
                     "distributed.core", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(logging.WARNING)
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(distributed.Client(scheduler, timeout="30s"))
            except OSError as exc:
                raise ConfigError(f"--scheduler: cannot reach a Dask scheduler at "
                                  f"{scheduler!r}: {exc}") from exc
        else:
            n = workers or os.cpu_count() or 1
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"))
            client = stack.enter_context(distributed.Client(cluster))
        client.wait_for_workers(1, timeout=120)
        startup_s = time.perf_counter() - t_start
        info = client.scheduler_info()
        nworkers = len(info.get("workers", {}))
        if "dashboard" in info.get("services", {}):
            say(f"Dask dashboard: {client.dashboard_link}")
        say(f"corpus: {len(todo)} recording(s) on {nworkers} Dask worker(s) "
            f"({client.scheduler.address})")
        # one single-threaded worker process per core: ONNX Runtime gets one thread too
        job = dataclasses.replace(job, threads=1)
        futures = {}
        for rec in todo:
            fut = client.submit(process_recording, rec, job, fps[rec.id], pure=False,
                                retries=TASK_RETRIES, key=f"corpus-{fps[rec.id][:16]}")
            futures[fut] = rec
        with _bar(len(futures), progress) as bar:
            for fut in distributed.as_completed(futures):
                rec = futures[fut]
                try:
                    doc = fut.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker, cancelled, a bug
                    log.warning("corpus: %s: %s: %s", rec.id, type(exc).__name__, exc)
                    _write_lost(job, rec, fps[rec.id], exc)
                else:
                    if not record_path(job.out, rec.id).is_file():
                        # the worker wrote it where this machine does not see it
                        log.warning("corpus: %s: the worker's record is not in %s here; "
                                    "--out must be on a file system every worker shares",
                                    rec.id, job.out)
                        from edge.pipeline.app import write_json
                        write_json(record_path(job.out, rec.id), doc)
                bar.update(1)
        return {"mode": "dask", "scheduler": client.scheduler.address, "workers": nworkers,
                "local_cluster": scheduler is None, "startup_s": startup_s}


def _summary(records, *, skipped, computed, wall_s, where, table, cfg_hash, models):
    ok = [r for r in records if r["status"] == "ok"]
    areas: dict[str, int] = {}
    for r in ok:
        for name, c in (r.get("classes") or {}).items():
            areas[name] = areas.get(name, 0) + int(c.get("area_px") or 0)
    return {
        "version": __version__, "recordings": len(records), "ok": len(ok),
        "failed": len(records) - len(ok), "skipped_done": skipped, "computed": computed,
        "frames": sum(int(r.get("frames") or 0) for r in records),
        "frames_flagged": sum(int(r.get("frames_flagged") or 0) for r in records),
        "class_area_px": areas,
        "failures": [{"id": r["id"], "error": r.get("error"), "error_type": r.get("error_type")}
                     for r in records if r["status"] != "ok"],
        "wall_s": wall_s,
        "recordings_per_min": 60.0 * computed / wall_s if computed and wall_s > 0 else None,
        "execution": where, "table": table, "config_sha256": cfg_hash,
        "model_sha256": sorted(set(models.values())),
    }
