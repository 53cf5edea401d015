"""``hsi-edge latency ab --python-b``: arm B in a worker of another interpreter.  The protocol
runs for real against this venv's python (standing in for another build); workers that crash,
hang, print garbage or speak an older protocol give one line and exit status 2."""

from __future__ import annotations

import re
import stat
import sys

import pytest

from edge.cli import main
from edge.latency.store import load_result
from edge.latency.worker import PROTOCOL

SMALL = ["--preset", "snapshot25", "--rows", "12", "--cols", "16", "--model", "none",
         "--fps", "50", "--frames", "6", "--warmup", "2", "--rounds", "4", "--max-rounds", "4"]


def _script(tmp_path, body: str):
    path = tmp_path / "python-b"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [ln for ln in err if not ln.startswith("WARNING")]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_worker_of_another_interpreter_runs_arm_b_interleaved(tmp_path, capsys):
    out = tmp_path / "ab"
    rc = main(["latency", "ab", *SMALL, "--python-b", sys.executable, "--slow-b", "chain=1ms",
               "--out", str(out)])
    assert rc == 3                                    # 2 pairs: too few for a verdict
    doc = load_result(out)
    assert [r["arm"] for r in doc["rounds"]] == ["A", "B", "B", "A"]
    fb = doc["fingerprint_b"]
    for key in ("hsi_edge", "git_commit", "git_dirty", "numpy", "python", "hardware_key"):
        assert key in fb
    assert fb["run"]["slow"] == {"chain": {"fraction": 0.0, "fixed_ms": 1.0}}
    assert doc["software_differences"]["run.slow"][1] == {"chain": {"fraction": 0.0,
                                                                    "fixed_ms": 1.0}}
    # the same install on both sides: only B's slowdown differs (the commit and dirty flag
    # may move between the two readings while others commit in this checkout)
    assert "run.slow" in doc["software_differences"]
    assert set(doc["software_differences"]) <= {"run.slow", "git_commit", "git_dirty"}
    assert doc["summary"]["B"]["frames"] == 12 and doc["summary"]["A"]["frames"] == 12
    printed = capsys.readouterr().out
    assert "software differences (A -> B): " in printed and "run.slow" in printed


@pytest.mark.parametrize("body, extra, expected", [
    # a worker that crashes
    ("echo 'ImportError: broken install' >&2\nexit 3", [],
     r"the worker ended \(exit status 3\) before answering the start: ImportError: broken install"),
    # a worker that hangs
    ("exec sleep 120", ["--worker-timeout", "0.5"],
     r"no answer to the start within 0.5 s \(--worker-timeout\); the worker was stopped"),
    # a worker that prints garbage
    ("echo 'Hello from a shell'\nexec sleep 120", [],
     r"its answer to the start is not a JSON object of the worker protocol: "
     r"'Hello from a shell'"),
], ids=["crashes", "hangs", "prints-garbage"])
def test_worker_that_fails_at_the_start(tmp_path, capsys, body, extra, expected):
    py = _script(tmp_path, body)
    assert main(["latency", "ab", *SMALL, "--python-b", py, *extra,
                 "--out", str(tmp_path / "o")]) == 2
    assert re.fullmatch(rf"hsi-edge latency: error: --python-b {re.escape(py)}: " + expected,
                        _one_line(capsys))


def test_worker_of_an_older_protocol(tmp_path, capsys):
    py = _script(tmp_path, "echo '{\"protocol\": \"hsi-edge-latency-worker/0\"}'\n"
                           "exec cat > /dev/null")
    assert main(["latency", "ab", *SMALL, "--python-b", py, "--out", str(tmp_path / "o")]) == 2
    line = _one_line(capsys)
    assert re.fullmatch(rf"hsi-edge latency: error: --python-b {re.escape(py)}: its latency worker speaks protocol "
                        rf"'hsi-edge-latency-worker/0', this build '{PROTOCOL}'; install builds "
                        rf"with the same worker protocol .*", line)


def test_worker_that_dies_after_the_start(tmp_path, capsys):
    hello = '{"protocol": "%s", "hsi_edge": "x"}' % PROTOCOL
    py = _script(tmp_path, f"echo '{hello}'\nread line\necho 'Segmentation fault' >&2\nexit 139")
    assert main(["latency", "ab", *SMALL, "--python-b", py, "--out", str(tmp_path / "o")]) == 2
    assert re.fullmatch(rf"hsi-edge latency: error: --python-b {re.escape(py)}: the worker ended \(exit status "
                        rf"139\) before answering open: Segmentation fault", _one_line(capsys))


def test_worker_error_is_one_line(tmp_path, capsys):
    rc = main(["latency", "ab", *SMALL, "--python-b", sys.executable, "--config-b",
               str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    assert rc == 2
    line = _one_line(capsys)
    assert line.startswith(f"hsi-edge latency: error: arm B (--python-b {sys.executable}): ")
    assert "missing.yaml" in line


def test_python_b_that_does_not_exist(tmp_path, capsys):
    py = str(tmp_path / "nope" / "python")
    assert main(["latency", "ab", *SMALL, "--python-b", py, "--out", str(tmp_path / "o")]) == 2
    assert re.fullmatch(rf"hsi-edge latency: error: --python-b {re.escape(py)}: cannot start it \(.*\); give the "
                        rf"python of another hsi-edge install", _one_line(capsys))


def test_worker_whose_open_answer_lacks_the_frame_rate(tmp_path, capsys):
    hello = '{"protocol": "%s", "hsi_edge": "x"}' % PROTOCOL
    py = _script(tmp_path, f"echo '{hello}'\nread line\necho '{{\"ok\": true, \"info\": {{}}}}'\n"
                           "exec cat > /dev/null")
    assert main(["latency", "ab", *SMALL, "--python-b", py, "--out", str(tmp_path / "o")]) == 2
    assert re.fullmatch(rf"hsi-edge latency: error: --python-b {re.escape(py)}: its answer to "
                        rf"open gives no frame rate \(fps None\)", _one_line(capsys))


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e10"])
def test_worker_timeout_out_of_range_is_one_line(tmp_path, capsys, value):
    assert main(["latency", "ab", *SMALL, "--python-b", sys.executable, "--worker-timeout",
                 value, "--out", str(tmp_path / "o")]) == 2
    assert re.fullmatch(r"hsi-edge latency: error: --worker-timeout: expected seconds > 0 and "
                        r"at most 86400 \(a day\), got .*", _one_line(capsys))
