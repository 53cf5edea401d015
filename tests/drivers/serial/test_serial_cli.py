"""``hsi-edge sim-devices`` as a subprocess: prints ports, serves the drivers, exits on SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

import drivers
from edge.cli import main
from _serial_helpers import FAST


def _start(*args):
    proc = subprocess.Popen([sys.executable, "-m", "edge", "sim-devices", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(drivers.__path__[0]))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    ports, deadline = {}, time.monotonic() + 20
    while len(ports) < 2 and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        name, _, url = line.strip().partition(": ")
        ports[name] = url
    return proc, ports


def _stop(proc) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    return time.monotonic() - t0


@pytest.mark.parametrize("flags", [[], ["--socket"]])
def test_sim_devices_serves_both_and_stops_on_sigterm(sim_only, flags):
    proc, ports = _start(*flags)
    try:
        assert set(ports) == {"controller", "lumencor"}, proc.stderr.read() if not ports else ports
        with drivers.open_illumination(ports["controller"], **FAST) as light:
            light.set_on("white", True)
            assert light.state(refresh=True)["white"]["on"]
        with drivers.open_illumination(ports["lumencor"], protocol="lumencor",
                                       reply_timeout=0.25) as light:
            assert light.channels[0] == "VIOLET"
    finally:
        elapsed = _stop(proc)
    assert proc.returncode == 0
    assert elapsed < 3.0


def test_sim_devices_bad_fault_spec(capsys):
    assert main(["sim-devices", "--faults", "smoke=0.1"]) == 2
    assert "faults: unknown key 'smoke'" in capsys.readouterr().err
    assert main(["sim-devices", "--faults", "delay=2"]) == 2
    assert "faults.delay: expected a probability in [0, 1], got 2.0" in capsys.readouterr().err
