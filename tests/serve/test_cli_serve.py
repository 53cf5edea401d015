"""``hsi-edge serve`` and ``hsi-edge run --serve``: address, token, one-line errors, the hook."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
import yaml

from edge.cli import main
from edge.errors import BackendUnavailable, ConfigError
from edge.serve import require_serve
from edge.serve.server import is_loopback, parse_addr, resolve_token

URL_RE = re.compile(r"service page: (http://\S+)")


@pytest.mark.parametrize("addr, want", [
    (None, ("127.0.0.1", 8765)), ("", ("127.0.0.1", 8765)), ("9000", ("127.0.0.1", 9000)),
    (":0", ("127.0.0.1", 0)), ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:81", ("::1", 81)),
    ("10.0.0.5", ("10.0.0.5", 8765)),
])
def test_parse_addr(addr, want):
    assert parse_addr(addr) == want


@pytest.mark.parametrize("addr, msg", [
    ("127.0.0.1:99999", r"--serve: port must be an integer in 0-65535, got '99999'"),
    ("::1", r"--serve: an IPv6 address goes in brackets \(\[::1\]:PORT\)"),
    ("h:x", r"--serve: port must be an integer in 0-65535, got 'x'"),
])
def test_parse_addr_errors(addr, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_addr(addr)


def test_token_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert resolve_token("127.0.0.1", None) == (None, False)
    tok, generated = resolve_token("0.0.0.0", None)
    assert generated and len(tok) >= 32
    assert resolve_token("0.0.0.0", None)[0] != tok          # fresh each time
    assert resolve_token("127.0.0.1", "a" * 16) == ("a" * 16, False)   # given: enforced
    with pytest.raises(ConfigError, match=r"--token: expected at least 16 characters .* "
                                          r"got 5 characters"):
        resolve_token("0.0.0.0", "short")
    with pytest.raises(ConfigError, match=r"--token: .* got 20 characters with others"):
        resolve_token("0.0.0.0", "abcdefghijklmnop&x=1")


def test_missing_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)   # as if not installed
    with pytest.raises(BackendUnavailable, match=r"needs uvicorn, which is not installed: "
                                                 r"pip install 'hsi-edge\[serve\]'"):
        require_serve()
    assert main(["serve", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hsi-edge serve: error: the service page needs uvicorn, which is not "
                   "installed: pip install 'hsi-edge[serve]'"]


def test_bad_options_are_one_line(capsys):
    assert main(["serve", "127.0.0.1:70000"]) == 2
    assert capsys.readouterr().err.strip() == (
        "hsi-edge serve: error: ADDR: port must be an integer in 0-65535, got '70000' "
        "(in '127.0.0.1:70000')")
    assert main(["serve", "--max-clients", "0"]) == 2
    assert "--max-clients: expected an integer >= 1, got 0" in capsys.readouterr().err
    # a documentation address (TEST-NET-2) that this machine does not have
    foreign = "198.51.100.77"
    with socket.socket() as probe:
        try:
            probe.bind((foreign, 0))
            pytest.skip(f"{foreign} is an address of this machine")
        except OSError:
            pass
    assert main(["serve", f"{foreign}:0", "--token", "x" * 20]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"hsi-edge serve: error: ADDR: cannot serve on {foreign}:0: ")   # + the OS's reason


def _spawn(args, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "edge", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _url(proc) -> str:
    """The URL printed on stderr (read in a thread so a hang fails instead of blocking)."""
    found: list[str] = []

    def read():
        for line in proc.stderr:
            m = URL_RE.search(line)
            if m:
                found.append(m.group(1))
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout=60)
    assert found, "no 'service page:' line on stderr"
    return found[0]


def test_serve_subcommand_status_only(tmp_path):
    proc = _spawn(["serve", "127.0.0.1:0"], tmp_path)
    try:
        url = _url(proc)
        assert "token" not in url           # loopback: none needed
        st = httpx.get(url + "api/status", timeout=10).json()
        assert st["run"] is None and st["live"]["encoded"] == 0
        r = httpx.get(url + "snapshot.jpg", timeout=10)
        assert r.status_code == 503 and "no frame yet" in r.json()["error"]
        assert httpx.get(url + "api/latency", timeout=10).json() == {
            "error": "latency: no live run"}
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0


def test_run_serve_streams_the_runs_frames(tmp_path):
    cfg = {"camera": {"rows": 24, "cols": 32, "seed": 3, "fps": 8},
           "calibration": {"frames": 2}, "model": {"card": "none"},
           "sinks": {"png_every": 0, "npz_every": 0}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    proc = _spawn(["run", "--config", "run.yaml", "--out", "out", "--serve", "127.0.0.1:0",
                   "--serve-fps", "8"], tmp_path)
    try:
        url = _url(proc)
        c = httpx.Client(base_url=url, timeout=10)

        def frames_seen():
            lat = c.get("/api/latency").json()
            return lat.get("frames", 0) >= 3 and c.get("/snapshot.jpg").status_code == 200
        from serve_scene import wait_for
        wait_for(frames_seen, timeout_s=60, what="the run's frames on the page")
        lat = c.get("/api/latency").json()
        assert {"chain", "sink", "end_to_end"} <= set(lat["stages"])
        spec = c.get("/api/spectrum", params={"x": 5, "y": 5}).json()
        assert len(spec["reflectance"]) == len(spec["wavelengths_nm"]) > 10
        assert spec["fit"] is not None and spec["sto2"] is None or 0 <= spec["sto2"] <= 1
        st = c.get("/api/status").json()
        assert st["run"]["camera"] == "simulated" and st["live"]["encoded"] >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    # without --frames a served run lasts until Ctrl-C/SIGTERM, then reports as usual
    assert proc.returncode == 130 and "processed" in out
