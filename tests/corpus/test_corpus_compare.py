"""`hsi-edge corpus compare`: identical runs pass with IoU 1, a changed model or a new
failure fails with the differences named, thresholds and errors are one line."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import yaml

from corpus_helpers import GOOD, corpus_run
from edge.cli import main
from edge.corpus.compare import compare_runs
from edge.corpus.task import maps_path


@pytest.fixture(scope="module")
def runs(corpus_parts, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    good = corpus_parts["good"]
    out = {}
    for name, model_key in (("a1", "model_a"), ("a2", "model_a"), ("b", "model_b")):
        out[name] = root / name
        assert corpus_run(corpus_parts, good, out[name], "--workers", "0",
                          model_key=model_key) == 0
    # another unmixing basis: StO2 moves (and the classes through the model's sto2 input)
    cfg = tmp_path_factory.mktemp("cfg") / "two-chromophores.yaml"
    cfg.write_text(yaml.safe_dump({"processing": {"backend": "numpy",
                                                  "chromophores": ["HbO2", "Hb"]},
                                   "model": {"runtime": "onnxruntime"}}))
    out["basis"] = root / "basis"
    assert main(["corpus", "run", str(good), "--config", str(cfg), "--model",
                 str(corpus_parts["model_a"]), "--out", str(out["basis"]), "--workers", "0",
                 "--no-progress"]) == 0
    # the same corpus with one calibration record lost: that recording now fails
    lost = root / "lost-corpus"
    shutil.copytree(good, lost)
    shutil.rmtree(lost / GOOD[0] / "calibration")
    out["lost"] = root / "lost"
    assert corpus_run(corpus_parts, lost, out["lost"], "--workers", "0") == 0
    return out


def test_identical_runs_pass_with_iou_one(runs, capsys, tmp_path):
    rc = main(["corpus", "compare", str(runs["a1"]), str(runs["a2"]), "--out",
               str(tmp_path / "report")])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("verdict: PASS  (3 recording(s) compared, mean IoU 1.0000, pixel "
                           "agreement 1.0000, 0 status change(s))")
    res = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert res["verdict"] == "PASS" and res["reasons"] == []
    for c in res["classes"].values():
        assert c["iou"] in (1.0, None) and c["sto2_shift_pp"] in (0.0, None)
        assert set(c["index_shift"].values()) <= {0.0, None}
    assert any(c["iou"] == 1.0 for c in res["classes"].values())
    for e in res["recordings"].values():
        assert (e["mean_iou"], e["pixel_agreement"], e["sto2_mae_pp"], e["sto2_max_pp"]) == \
            (1.0, 1.0, 0.0, 0.0)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<span class='PASS'>PASS</span>" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 4
    assert "http" not in html  # self-contained


def test_other_model_fails_with_the_iou_it_measured(runs, capsys):
    rc = main(["corpus", "compare", str(runs["a1"]), str(runs["b"])])
    assert rc == 1
    text = capsys.readouterr().out
    assert text.startswith("verdict: FAIL")
    res = json.loads((runs["b"] / "compare" / "comparison.json").read_text())
    # the pooled IoU of each class from the stored label maps, computed here independently
    inter, union = np.zeros(3), np.zeros(3)
    for rid in GOOD:
        with np.load(maps_path(runs["a1"], rid)) as za, np.load(maps_path(runs["b"], rid)) as zb:
            a, b = za["classes"], zb["classes"]
        for c in range(3):
            inter[c] += np.count_nonzero((a == c) & (b == c))
            union[c] += np.count_nonzero((a == c) | (b == c))
    for c in range(3):
        got = res["classes"][f"class{c}"]["iou"]
        if union[c]:
            assert got == pytest.approx(inter[c] / union[c], abs=1e-12)
            if union[c] >= 100 and got < 0.95:
                assert f"class class{c}: IoU {got:.4f} < 0.95" in text
    assert res["overall"]["mean_iou"] < 0.95
    # the chain is the same: StO2 maps agree pixel for pixel whatever the model says
    assert res["overall"]["sto2_mae_pp"] == 0.0
    assert (runs["b"] / "compare" / "report.html").is_file()


def test_new_failure_is_a_regression(runs, capsys):
    assert main(["corpus", "compare", str(runs["a1"]), str(runs["lost"])]) == 1
    text = capsys.readouterr().out
    assert f"1 recording(s) ok in A are failed in B (allowed 0): {GOOD[0]}" in text
    res = json.loads((runs["lost"] / "compare" / "comparison.json").read_text())
    assert res["status_changes"] == [
        {"id": GOOD[0], "from": "ok", "to": "failed",
         "error": res["recordings"][GOOD[0]]["error_b"]}]
    assert "calibration.record" in res["status_changes"][0]["error"]
    # the other two still compare equal
    assert res["overall"]["recordings"] == 2 and res["overall"]["mean_iou"] == 1.0


def test_thresholds_file_sets_the_verdict(runs, tmp_path, capsys):
    loose = tmp_path / "loose.yaml"
    loose.write_text(yaml.safe_dump({"min_class_iou": None, "min_recording_mean_iou": 0.0,
                                     "max_class_sto2_shift_pp": None, "max_index_shift": None}))
    assert main(["corpus", "compare", str(runs["a1"]), str(runs["b"]), "--thresholds",
                 str(loose), "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.startswith("verdict: PASS")
    res = compare_runs(runs["a1"], runs["b"])  # defaults
    assert res["verdict"] == "FAIL"


@pytest.mark.parametrize("doc, message", [
    ({"min_iou": 0.5}, r"min_iou: unknown threshold; allowed: min_class_iou, "),
    ({"max_sto2_mae_pp": -1}, r"max_sto2_mae_pp: expected a number >= 0 or null, got -1"),
    ([1, 2], r"expected a mapping of threshold names to numbers, got list"),
])
def test_bad_thresholds_are_one_line(runs, tmp_path, capsys, doc, message):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["corpus", "compare", str(runs["a1"]), str(runs["a2"]), "--thresholds",
                 str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_not_a_run_is_one_line(runs, tmp_path, capsys):
    assert main(["corpus", "compare", str(tmp_path), str(runs["a1"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hsi-edge corpus: error: A: {str(tmp_path)!r} holds no corpus run (no "
                   "records/*.json; make one with `hsi-edge corpus run`)")


def test_other_unmixing_basis_reports_the_sto2_it_moved(runs, capsys):
    assert main(["corpus", "compare", str(runs["a1"]), str(runs["basis"])]) == 1
    text = capsys.readouterr().out
    res = json.loads((runs["basis"] / "compare" / "comparison.json").read_text())
    # pixel-wise |ΔStO2| from the stored maps, computed here independently
    total = n = 0
    for rid in GOOD:
        with np.load(maps_path(runs["a1"], rid)) as za, np.load(maps_path(runs["basis"], rid)) as zb:
            a, b = za["sto2_q"].astype(np.int64), zb["sto2_q"].astype(np.int64)
        both = (a != 65535) & (b != 65535)
        d = np.abs(a[both] - b[both]) / 100.0  # 1e-4 steps -> percentage points
        assert res["recordings"][rid]["sto2_mae_pp"] == pytest.approx(d.mean(), rel=1e-9)
        total += d.sum()
        n += d.size
    assert res["overall"]["sto2_mae_pp"] == pytest.approx(total / n, rel=1e-9)
    assert res["overall"]["sto2_mae_pp"] > 1.0
    assert re.search(r"recording\(s\) with StO2 MAE > 1 pp \(worst ", text)
    shifts = [c["sto2_shift_pp"] for c in res["classes"].values() if c["sto2_shift_pp"]]
    assert shifts and res["indices"]["sto2"]["shift"] != 0
    # haemoglobin per class moves with the basis too (thb: a concentration, pooled mean)
    assert any(c["index_shift"].get("thb") for c in res["classes"].values())
