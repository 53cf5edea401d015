"""Fixtures for the serial driver tests: simulators on a real pty or socket, or real hardware.

``pytest tests/drivers/serial --port /dev/serial/by-id/...`` runs the contract tests against
real hardware instead of the simulators (set ``HSI_EDGE_PORT_PROTOCOL=lumencor`` for a Lumencor
engine; default ``hsi``); tests that need simulator internals are skipped then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from drivers.sim import FaultPlan, start_controller, start_lumencor

@dataclass
class Target:
    """What a contract test talks to: a URL, its protocol and (simulators only) the server."""

    url: str
    protocol: str
    server: object | None = None

    def truth(self) -> dict | None:
        """Emitted light according to the simulator ({name: intensity, 0 = off})."""
        if self.server is None:
            return None
        with self.server.lock:
            return self.server.model.led_state()


def _hardware(config) -> str | None:
    return config.getoption("--port")


@pytest.fixture
def hardware_port(request) -> str | None:
    return _hardware(request.config)


@pytest.fixture
def sim_only(request):
    if _hardware(request.config):
        pytest.skip("needs simulator internals; not run against --port hardware")


@pytest.fixture(params=["hsi-pty", "hsi-socket", "lumencor-pty", "lumencor-socket"])
def illumination_target(request):
    """Every illumination implementation (or the --port hardware once)."""
    port = _hardware(request.config)
    if port:
        if request.param != "hsi-pty":
            pytest.skip("hardware runs once (--port)")
        yield Target(port, os.environ.get("HSI_EDGE_PORT_PROTOCOL", "hsi"))
        return
    protocol, transport = request.param.split("-")
    start = start_controller if protocol == "hsi" else start_lumencor
    server = start(transport=transport)
    try:
        yield Target(server.url, protocol, server)
    finally:
        server.stop()


@pytest.fixture(params=["pty", "socket"])
def trigger_target(request):
    port = _hardware(request.config)
    if port:
        if request.param != "pty":
            pytest.skip("hardware runs once (--port)")
        yield Target(port, "hsi")
        return
    server = start_controller(transport=request.param)
    try:
        yield Target(server.url, "hsi", server)
    finally:
        server.stop()


@pytest.fixture
def controller(sim_only, tmp_path):
    """A simulated controller on a pty (fault tests), opened through a by-id style link: a
    test that disconnects it must never reconnect to a bare /dev/pts/N that the kernel may have
    given to another program meanwhile."""
    server = start_controller(faults=FaultPlan(delay_s=0.4, disconnect_s=0.2, hold_s=0.3),
                              link=str(tmp_path / "usb-HSIEDGE_TIC-1_SN0001"))
    yield server
    server.stop()


@pytest.fixture
def lumencor(sim_only, tmp_path):
    server = start_lumencor(faults=FaultPlan(delay_s=0.25, disconnect_s=0.2, hold_s=0.3),
                            link=str(tmp_path / "usb-Lumencor_LUM0001"))
    yield server
    server.stop()
