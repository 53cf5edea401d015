"""Units of the corpus package: histogram statistics, the table in both formats, ids."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edge.corpus.discover import safe_name
from edge.corpus.stats import BINS, MapStats, RecordingStats
from edge.corpus.table import read_table, write_table


def test_histogram_percentiles_within_one_bin_of_numpy():
    rng = np.random.default_rng(4)
    values = rng.beta(5, 2, size=(3, 40, 50)).astype(np.float32)
    values[0, :5] = np.nan  # invalid pixels are skipped, never counted as 0
    acc = MapStats()
    for frame in values:
        acc.add(frame)
    s = acc.summary()
    finite = values[np.isfinite(values)].astype(np.float64)
    assert s["n"] == finite.size
    assert s["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    for q in (5, 50, 95):
        assert abs(s[f"p{q}"] - np.percentile(finite, q)) <= 1.0 / BINS


def test_class_areas_and_per_class_sto2():
    classes = np.array([[0, 0, 1], [1, 255, 2]], np.uint8)
    sto2 = np.array([[0.2, 0.4, 0.9], [np.nan, 0.5, 0.6]], np.float32)
    acc = RecordingStats(("a", "b", "c"))
    acc.add({"classes": classes, "sto2": sto2})
    s = acc.summary()
    assert [s["classes"][n]["area_px"] for n in "abc"] == [2, 2, 1]
    assert s["withheld_px"] == 1 and s["pixels"] == 6
    assert s["classes"]["a"]["sto2"]["mean"] == pytest.approx(0.3, abs=1e-7)
    assert s["classes"]["b"]["sto2"]["n"] == 1  # the NaN pixel has a class but no StO2
    assert s["classes"]["c"]["sto2"]["p50"] == pytest.approx(0.6005)  # centre of its bin


def test_per_class_figures_equal_a_mask_per_class():
    """All classes in one bincount give what masking each class and adding it gives."""
    rng = np.random.default_rng(7)
    names = ("a", "b", "c", "d")
    acc = RecordingStats(names)
    ref_sto2 = [MapStats() for _ in names]
    ref_nir = [MapStats(fraction=False) for _ in names]
    for _ in range(4):
        classes = rng.choice(np.array([0, 1, 2, 3, 9, 255], np.uint8), size=(30, 40))
        classes[classes == 3] = 0  # class "d" never occurs: no values, no figures
        sto2 = rng.uniform(-0.05, 1.05, size=(30, 40)).astype(np.float32)  # clipped bins
        sto2[rng.random((30, 40)) < 0.1] = np.nan
        nir = rng.uniform(0, 1, size=(30, 40)).astype(np.float32)
        nir[:3] = np.inf
        acc.add({"classes": classes, "sto2": sto2, "nir": nir})
        for c in range(len(names)):
            ref_sto2[c].add(sto2[classes == c])
            ref_nir[c].add(nir[classes == c])
    for c in range(len(names)):
        got, want = acc.class_sto2[c], ref_sto2[c]
        assert got.n == want.n and np.array_equal(got.hist, want.hist)
        assert got.total == pytest.approx(want.total, rel=1e-12, abs=1e-12)
        assert acc.class_index["nir"][c].n == ref_nir[c].n
        assert acc.class_index["nir"][c].total == pytest.approx(ref_nir[c].total, rel=1e-12)
    s = acc.summary()["classes"]
    assert s["d"]["sto2"] == {"n": 0, "mean": None, "p5": None, "p50": None, "p95": None}
    assert s["a"]["sto2"]["p50"] == ref_sto2[0].summary()["p50"]
    assert s["b"]["index_means"]["nir"] == pytest.approx(ref_nir[1].summary()["mean"],
                                                         rel=1e-12)


RECORDS = [
    {"id": "b", "status": "failed", "error": "x: bad", "error_type": "DataFormatError",
     "frames": 0, "classes": {}, "indices": {}, "timings": {"task_s": 0.5}},
    {"id": "a", "status": "ok", "error": None, "frames": 2, "frames_flagged": 0,
     "indices": {"sto2": {"n": 10, "mean": 0.61, "p5": 0.1005, "p50": 0.6005, "p95": 0.9005}},
     "classes": {"liver": {"area_px": 7, "area_frac": 0.7,
                           "sto2": {"n": 7, "mean": 0.5, "p5": 0.1, "p50": 0.5, "p95": 0.9},
                           "index_means": {"nir": 0.4}}},
     "timings": {"task_s": 1.5, "wall_s": 1.0, "fps": 2.0, "stages_ms": {"chain": 3.0}}},
]


def test_parquet_and_csv_tables_hold_the_same_rows(tmp_path, monkeypatch):
    (tmp_path / "p").mkdir()
    pq = write_table(tmp_path / "p", RECORDS)
    assert pq["format"] == "parquet"
    rows = read_table(tmp_path / "p")
    assert [r["id"] for r in rows] == ["a", "b"]  # sorted by id
    assert rows[0]["class_liver_sto2_p50"] == 0.5 and rows[0]["sto2_p95"] == 0.9005
    assert rows[0]["class_liver_nir_mean"] == 0.4 and rows[0]["time_chain_ms"] == 3.0
    assert rows[1]["error"] == "x: bad" and rows[1]["sto2_mean"] is None
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    (tmp_path / "c").mkdir()
    assert write_table(tmp_path / "c", RECORDS)["format"] == "csv"
    csv_rows = read_table(tmp_path / "c")
    assert list(csv_rows[0]) == list(rows[0])  # same columns, same order
    assert float(csv_rows[0]["sto2_p95"]) == 0.9005 and csv_rows[1]["sto2_mean"] == ""


def test_safe_names_are_distinct_file_names():
    names = {safe_name(i) for i in ("a/b", "a__b", "a b", "a:b", "../x")}
    assert len(names) == 5
    assert all("/" not in n and not n.startswith(".") for n in names)
