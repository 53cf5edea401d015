"""``hsi-edge latency`` end to end on the simulated camera (small frames), the hardware-key
refusal, baselines and the self-contained report.  No assertion depends on how fast this
machine is: only on counts, files, verdict classes and exit codes."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys

import numpy as np
import pytest

from edge.cli import main
from edge.latency.gate import INCONCLUSIVE
from edge.latency.store import load_records, load_result

SMALL = ["--preset", "snapshot25", "--rows", "12", "--cols", "16", "--model", "none",
         "--fps", "50"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("lat") / "run"
    report = out.parent / "run.html"
    rc = main(["latency", "run", *SMALL, "--frames", "12", "--warmup", "3", "--rounds", "2",
               "--out", str(out), "--report", str(report)])
    assert rc == 0
    return out, report


def test_run_stores_records_summary_and_fingerprint(result):
    out, _ = result
    doc = load_result(out)
    rec = load_records(out)
    assert len(rec) == 30 and len(doc["rounds"]) == 2          # 2 x (3 warm-up + 12)
    s = doc["summary"]
    assert s["frames"] == 24 and s["warmup_excluded"] == 6
    assert doc["settings"]["period_ms"] == 20.0 and doc["settings"]["deadline_ms"] == 20.0
    assert set(s["stages"]) >= {"acquire", "queue", "chain", "sink", "to_overlay"}
    dl = s["end_to_end"]["deadline"]
    assert dl["slots"] == 24 + dl["not_shown"] and 0 <= dl["ci"][0] <= dl["rate"] <= dl["ci"][1]
    fp = doc["fingerprint"]
    for key in ("cpu_model", "cpu_cores", "python", "numpy", "onnxruntime", "hsi_edge",
                "git_commit", "git_dirty", "hardware_key"):
        assert key in fp
    assert fp["run"]["frame_shape"] == [12, 16, 25] and fp["run"]["fps"] == 50.0
    assert fp["run"]["backend"] == "numpy" and fp["run"]["model"] is None


def test_report_is_self_contained_with_images(result):
    _, report = result
    text = report.read_text()
    assert "<html" in text and "Fingerprint" in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) >= 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    rest = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", text)
    assert "://" not in rest and "href=" not in rest and "url(" not in rest    # nothing fetched
    assert "<script" not in rest and "<link" not in rest


def test_out_dir_with_a_result_is_refused(result, capsys):
    out, _ = result
    rc = main(["latency", "run", *SMALL, "--frames", "5", "--out", str(out)])
    assert rc == 2
    assert re.search(r"--out: '.*run' already holds a latency result; choose another folder "
                     r"or add --overwrite", capsys.readouterr().err)


def test_compare_with_itself_is_never_a_regression(result, capsys):
    out, _ = result
    rc = main(["latency", "compare", str(out), str(out)])
    assert rc == 3                                     # 2 pairs: too few for a pass
    assert "verdict: INCONCLUSIVE" in capsys.readouterr().out


def _other_unit(src, dest):
    shutil.copytree(src, dest)
    doc = json.loads((dest / "latency.json").read_text())
    doc["fingerprint"]["cpu_model"] = "Cortex-A78AE"
    doc["fingerprint"]["hardware_key"] = "aarch64-Cortex_A78AE-12c-Orin-00000000"
    (dest / "latency.json").write_text(json.dumps(doc))
    return dest


def test_compare_refuses_different_hardware(result, tmp_path, capsys):
    out, _ = result
    other = _other_unit(out, tmp_path / "orin")
    rc = main(["latency", "compare", str(out), str(other)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert re.search(r"hardware keys differ \(.* vs aarch64-Cortex_A78AE-12c-Orin-00000000: "
                     r"cpu_model: '.*' vs 'Cortex-A78AE'\); results from different units are "
                     r"not compared \(--allow-different-hardware to compare anyway\)", err)
    html = tmp_path / "cmp.html"
    rc = main(["latency", "compare", str(out), str(other), "--allow-different-hardware",
               "--report", str(html), "--json", str(tmp_path / "cmp.json")])
    assert rc == 3
    assert "warning: DIFFERENT HARDWARE compared on request" in capsys.readouterr().err
    assert "DIFFERENT HARDWARE compared on request" in html.read_text()
    assert json.loads((tmp_path / "cmp.json").read_text())["hardware_warning"].startswith(
        "DIFFERENT HARDWARE")


def test_baselines_per_hardware_key(result, tmp_path, capsys):
    out, _ = result
    store = tmp_path / "store"
    assert main(["latency", "baseline", "check", str(out), "--store", str(store)]) == 2
    assert "no baseline for hardware key" in capsys.readouterr().err
    assert main(["latency", "baseline", "add", str(out), "--store", str(store)]) == 0
    assert main(["latency", "baseline", "add", str(out), "--store", str(store)]) == 0
    key = load_result(out)["fingerprint"]["hardware_key"]
    assert len(list((store / key).iterdir())) == 2
    capsys.readouterr()
    assert main(["latency", "baseline", "check", str(out), "--store", str(store)]) == 3
    plot = tmp_path / "history.png"
    assert main(["latency", "baseline", "history", "--store", str(store), "--plot",
                 str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.count("p50") == 2


def test_ab_with_too_few_rounds_is_inconclusive(tmp_path, capsys):
    out = tmp_path / "ab"
    rc = main(["latency", "ab", *SMALL, "--frames", "6", "--warmup", "2", "--rounds", "4",
               "--max-rounds", "4", "--slow-b", "chain=1ms", "--out", str(out)])
    assert rc == 3
    doc = load_result(out)
    assert doc["gate"]["verdict"] == INCONCLUSIVE and doc["gate"]["pairs"] == 2
    assert [r["arm"] for r in doc["rounds"]] == ["A", "B", "B", "A"]
    assert doc["fingerprint_b"]["run"]["slow"] == {"chain": {"fraction": 0.0, "fixed_ms": 1.0}}
    assert "run.slow" in doc["software_differences"]
    rec = load_records(out)
    b = np.isin(rec.fields["round"], [1, 2])
    assert np.all(rec.stage_ns("chain")[b] >= 1_000_000)      # the slowdown is in arm B
    assert "verdict: INCONCLUSIVE" in capsys.readouterr().out


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    rc = main(["latency", "run", *SMALL, "--frames", "0", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--frames: expected an integer >= 1, got 0" in capsys.readouterr().err
    rc = main(["latency", "run", *SMALL, "--slow", "chain", "--out", str(tmp_path / "y")])
    assert rc == 2 and "--slow: expected STAGE=AMOUNT" in capsys.readouterr().err
    rc = main(["latency", "compare", str(tmp_path), str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "latency.json: no latency result here" in err


def test_report_without_matplotlib_names_the_extra(monkeypatch):
    from edge.errors import BackendUnavailable
    from edge.latency.report import pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # as if not installed
    with pytest.raises(BackendUnavailable, match=r"latency report: matplotlib is not "
                                                 r"installed \(report plots\); "
                                                 r"pip install 'hsi-edge\[report\]'"):
        pyplot()
