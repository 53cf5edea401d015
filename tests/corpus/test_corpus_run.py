"""`hsi-edge corpus run`: serial against a 2-process local cluster, broken recordings, a
killed worker, a resumed run, manifests and the missing-Dask message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from corpus_helpers import BROKEN, FRAMES, GOOD, corpus_run
from edge.cli import main
from edge.corpus.table import read_table
from edge.corpus.task import CRASH_ENV, maps_path, record_path

ALL = tuple(sorted(GOOD + BROKEN))


def _rows(out: Path) -> list[dict]:
    """The table without the ``time_*`` columns (measurements, not results)."""
    return [{k: v for k, v in row.items() if not k.startswith("time_")}
            for row in read_table(out)]


def _same_maps(a: Path, b: Path, ids) -> None:
    for rid in ids:
        with np.load(maps_path(a, rid)) as za, np.load(maps_path(b, rid)) as zb:
            assert sorted(za.files) == sorted(zb.files) == ["classes", "sto2_q"]
            for key in za.files:
                np.testing.assert_array_equal(za[key], zb[key], err_msg=f"{rid} {key}")


def test_broken_recordings_are_reported_and_the_rest_processed(serial_mixed, capsys):
    rows = {r["id"]: r for r in read_table(serial_mixed)}
    assert tuple(rows) == ALL
    for rid in GOOD:
        r = rows[rid]
        assert (r["status"], r["error"], r["frames"], r["frames_expected"]) == \
            ("ok", None, FRAMES, FRAMES)
        assert 0 < r["sto2_mean"] < 1 and 0 <= r["sto2_p5"] <= r["sto2_p50"] <= r["sto2_p95"] <= 1
        # the class areas cover every pixel that was not withheld
        areas = sum(r[f"class_class{c}_area_px"] for c in range(3))
        rec = json.loads(record_path(serial_mixed, rid).read_text())
        assert areas + rec["withheld_px"] == rec["pixels"] == FRAMES * 16 * 20
    errors = {rid: (rows[rid]["status"], rows[rid]["error_type"], rows[rid]["error"])
              for rid in BROKEN}
    assert errors["broken/no-calibration"][:2] == ("failed", "CalibrationError")
    assert "calibration.record" in errors["broken/no-calibration"][2]
    assert errors["broken/truncated"][0] == "failed"
    assert "frame_000001.npz" in errors["broken/truncated"][2]
    assert errors["broken/wrong-bands"][:2] == ("failed", "EngineError")
    assert "540.0 nm has no camera band" in errors["broken/wrong-bands"][2]
    for _, _, message in errors.values():
        assert "\n" not in message
    summary = json.loads((serial_mixed / "summary.json").read_text())
    assert (summary["recordings"], summary["ok"], summary["failed"]) == (6, 3, 3)
    assert summary["table"]["format"] == "parquet"
    assert {f["id"] for f in summary["failures"]} == set(BROKEN)


def test_local_cluster_gives_the_serial_table(corpus_parts, serial_mixed, tmp_path):
    out = tmp_path / "cluster"
    assert corpus_run(corpus_parts, corpus_parts["mixed"], out, "--workers", "2") == 0
    assert _rows(out) == _rows(serial_mixed)
    _same_maps(out, serial_mixed, GOOD)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["execution"]["mode"] == "dask" and summary["execution"]["workers"] == 2
    pids = {json.loads(record_path(out, rid).read_text())["worker"]["pid"] for rid in GOOD}
    assert os.getpid() not in pids  # ran in the worker processes, not here


def test_killed_worker_task_is_rerun_elsewhere(corpus_parts, serial_mixed, tmp_path,
                                               monkeypatch):
    """On an existing cluster (--scheduler): a worker process dies inside one task."""
    distributed = pytest.importorskip("distributed")
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv(CRASH_ENV, f"{GOOD[1]}:{marker}")  # inherited by the worker processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        out = tmp_path / "cluster"
        assert corpus_run(corpus_parts, corpus_parts["mixed"], out, "--scheduler",
                          cluster.scheduler_address) == 0
    assert marker.exists()  # a worker really died in the task for GOOD[1]
    assert _rows(out) == _rows(serial_mixed)  # and every recording is accounted for
    _same_maps(out, serial_mixed, GOOD)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["execution"]["local_cluster"] is False


def test_interrupted_run_resumes_without_redoing_finished_recordings(corpus_parts, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, **{CRASH_ENV: f"{GOOD[1]}:{tmp_path / 'marker'}"})
    # serial: the process dies in the second recording, after the first was written
    proc = subprocess.run([sys.executable, "-m", "edge", "corpus", "run",
                           str(corpus_parts["good"]), "--config", str(corpus_parts["config"]),
                           "--model", str(corpus_parts["model_a"]), "--out", str(out),
                           "--workers", "0", "--no-progress"], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 70, proc.stderr
    assert record_path(out, GOOD[0]).exists() and not record_path(out, GOOD[1]).exists()
    assert not (out / "summary.json").exists()
    first = record_path(out, GOOD[0]).stat().st_mtime_ns
    assert corpus_run(corpus_parts, corpus_parts["good"], out, "--workers", "0") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["skipped_done"], summary["computed"], summary["ok"]) == (1, 2, 3)
    assert record_path(out, GOOD[0]).stat().st_mtime_ns == first
    # a third run has nothing to do; another model makes every result stale
    assert corpus_run(corpus_parts, corpus_parts["good"], out, "--workers", "0") == 0
    assert json.loads((out / "summary.json").read_text())["computed"] == 0
    assert corpus_run(corpus_parts, corpus_parts["good"], out, "--workers", "0",
                      model_key="model_b") == 0
    assert json.loads((out / "summary.json").read_text())["computed"] == 3


def test_manifest_names_recordings_and_calibration(corpus_parts, tmp_path):
    good = corpus_parts["good"]
    # a recording whose calibration record is kept elsewhere
    shutil.copytree(good / GOOD[2], tmp_path / "recs" / "c3")
    shutil.move(tmp_path / "recs" / "c3" / "calibration", tmp_path / "cal-0317")
    manifest = tmp_path / "corpus.yaml"
    manifest.write_text(yaml.safe_dump({"recordings": [
        {"path": str(good / GOOD[0]), "id": "first"},
        {"path": "recs/c3", "calibration": "cal-0317"},
        # another camera's record: refused by the calibration check, reported
        {"path": str(good / GOOD[1]), "id": "wrong-cal",
         "calibration": str(good / GOOD[0] / "calibration")}]}))
    out = tmp_path / "run"
    assert corpus_run(corpus_parts, manifest, out, "--workers", "0") == 0
    rows = {r["id"]: r for r in read_table(out)}
    assert set(rows) == {"first", "recs/c3", "wrong-cal"}
    assert rows["first"]["status"] == rows["recs/c3"]["status"] == "ok"
    assert rows["wrong-cal"]["status"] == "failed"
    assert "does not fit the camera: camera serial 'SIM-tivita-0001'" in rows["wrong-cal"]["error"]
    rec = json.loads(record_path(out, "recs/c3").read_text())
    assert rec["calibration"] == str((tmp_path / "cal-0317").resolve())


@pytest.mark.parametrize("doc, message", [
    ({"recordings": [{"path": "x", "calibraton": "y"}]},
     r"recordings\[0\]: unknown key\(s\) calibraton; allowed: calibration, id, path"),
    ({"recordings": [{"id": "x"}]}, r"recordings\[0\]\.path: required"),
    ({"recordings": ["a", {"path": "b", "id": "a"}]}, r"recordings\[1\]\.id: 'a' is listed twice"),
    ({"recording": []}, r"recordings: expected a list of recordings, got NoneType"),
])
def test_bad_manifest_is_one_line(corpus_parts, tmp_path, capsys, doc, message):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    assert corpus_run(corpus_parts, manifest, tmp_path / "out", "--workers", "0") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    import re
    assert re.search(message, err), err


def test_without_dask_one_line_names_the_extra(corpus_parts, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    assert corpus_run(corpus_parts, corpus_parts["good"], tmp_path / "out", "--workers",
                      "2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "dask.distributed is not installed" in err and "pip install 'hsi-edge[corpus]'" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_empty_corpus_and_bad_workers(corpus_parts, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert corpus_run(corpus_parts, tmp_path / "empty", tmp_path / "out") == 2
    assert "CORPUS: no recordings in" in capsys.readouterr().err
    assert corpus_run(corpus_parts, corpus_parts["good"], tmp_path / "out", "--workers",
                      "-1") == 2
    assert "--workers: expected an integer >= 0 (0: serial), got -1" in capsys.readouterr().err


def test_rerun_keeps_failures_unless_asked(corpus_parts, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_parts["good"] / GOOD[0], corpus / "uncalibrated")
    shutil.rmtree(corpus / "uncalibrated" / "calibration")
    shutil.copytree(corpus_parts["good"] / GOOD[2], corpus / "fine")
    out = tmp_path / "run"
    assert corpus_run(corpus_parts, corpus, out, "--workers", "0") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ok"], summary["failed"], summary["computed"]) == (1, 1, 2)
    assert corpus_run(corpus_parts, corpus, out, "--workers", "0") == 0
    assert json.loads((out / "summary.json").read_text())["computed"] == 0
    assert corpus_run(corpus_parts, corpus, out, "--workers", "0", "--redo-failed") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["computed"], summary["skipped_done"], summary["failed"]) == (1, 1, 1)


def test_tivita_cube_folders_are_recordings(corpus_parts, tmp_path):
    """htc's subject/timestamp/<timestamp>_SpecCube.dat layout: reflectance, no calibration."""
    from drivers.formats.tivita import write_tivita_cube

    src = corpus_parts["good"] / GOOD[0] / "frame_000000.npz"
    with np.load(src) as z:
        reflectance = np.ascontiguousarray(z["truth_reflectance"], dtype=np.float32)
    corpus = tmp_path / "htc"
    for stamp in ("2019_12_14_12_00_00", "2019_12_14_12_01_00"):
        (corpus / "P001" / stamp).mkdir(parents=True)
        write_tivita_cube(corpus / "P001" / stamp / f"{stamp}_SpecCube.dat", reflectance)
    cfg = tmp_path / "none.yaml"
    cfg.write_text(yaml.safe_dump({"processing": {"backend": "numpy"}, "model": {"card": "none"}}))
    out = tmp_path / "run"
    assert main(["corpus", "run", str(corpus), "--config", str(cfg), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    rows = read_table(out)
    assert [r["id"] for r in rows] == ["P001/2019_12_14_12_00_00", "P001/2019_12_14_12_01_00"]
    for r in rows:
        assert (r["status"], r["frames"], r["model"]) == ("ok", 1, None)
        assert 0 < r["sto2_mean"] < 1
    assert rows[0]["sto2_mean"] == rows[1]["sto2_mean"]  # the same cube twice
