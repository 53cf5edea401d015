"""Every fault kind against the hsi-edge controller driver: it survives, reports the right
error, never waits past its deadline and ends in a known state (LEDs off where needed)."""

from __future__ import annotations

import os
import time

import pytest

import drivers
from drivers.sim import FaultPlan, start_controller, start_lumencor
from edge.errors import DeviceError, DeviceFault, DeviceProtocolError, DeviceTimeout
from _serial_helpers import FAST, Timer, max_call_s, wait_until


def _light(server, **options):
    return drivers.open_illumination(server.url, **{**FAST, **options})


def _truth(server):
    with server.lock:
        return server.model.led_state(), list(server.model.intensity)


@pytest.mark.parametrize("kind", ["delay", "drop", "garble", "split", "merge", "noreply",
                                  "busy"])
def test_query_survives_fault(controller, kind):
    with _light(controller) as light:
        light.set_intensity(2, 0.3)
        controller.inject(kind)
        with Timer() as t:
            state = light.state(refresh=True)
        assert state[light.channels[2]] == {"on": False, "intensity": 0.3}
        assert t.elapsed < max_call_s()
        assert controller.faults.injected[kind] == 1


@pytest.mark.parametrize("kind", ["delay", "drop", "garble", "split", "merge", "noreply",
                                  "busy"])
def test_write_survives_fault(controller, kind):
    with _light(controller) as light:
        controller.inject(kind)
        with Timer() as t:
            light.set_intensity("green", 0.7)
            light.set_on("green", True)
        assert t.elapsed < 2 * max_call_s()
        assert light.state()["green"] == {"on": True, "intensity": 0.7}
        assert _truth(controller)[0]["green"] == pytest.approx(0.7)
        stats = light.connection.stats
        assert stats["retries"] + stats["busy"] + stats.get("recovered_writes", 0) >= 1 or \
            kind in ("split", "merge")


def test_busy_forever_reports_and_stays_bounded(controller):
    with _light(controller, busy_retries=2) as light:
        controller.inject("busy", 10)
        with Timer() as t, pytest.raises(DeviceError, match="busy.*gave up after 2 re-sends"):
            light.set_intensity(0, 0.5)
        assert t.elapsed < max_call_s()


def test_silent_device_times_out_within_deadline(controller):
    with _light(controller) as light:
        light.set_intensity(1, 0.5)
        light.set_on(1, True)
        controller.inject("noreply", 50)
        with Timer() as t, pytest.raises(DeviceTimeout, match="no complete reply"):
            light.state(refresh=True)
        assert t.elapsed < max_call_s()
        controller.faults.clear()
        # the device is reachable again: the driver re-reads the truth, SAFE switches off
        name = light.channels[1]
        assert light.state(refresh=True)[name]["on"] == (_truth(controller)[0][name] > 0)
        light.safe()
        assert set(_truth(controller)[0].values()) == {0.0}


def test_reset_resyncs_and_leaves_leds_off(controller):
    with _light(controller) as light:
        light.set_intensity("red", 0.4)
        light.set_on("red", True)
        boots = controller.model.boots
        controller.inject("reset")
        with Timer() as t:
            state = light.state(refresh=True)
        assert t.elapsed < max_call_s()
        assert controller.model.boots == boots + 1
        assert light.connection.stats["resyncs"] >= 2
        assert state["red"] == {"on": False, "intensity": 0.4}  # intensity re-applied, LED off
        light_truth, ints = _truth(controller)
        assert light_truth["red"] == 0.0 and ints[light.channels.index("red")] == 400
        assert controller.model.crc  # CRC switched on again


@pytest.mark.parametrize("new_path", [False, True])
def test_disconnect_and_reappear(tmp_path, sim_only, new_path):
    link = str(tmp_path / "usb-HSIEDGE_TIC-1_SN0001")
    decoy = start_controller(serial="SN9999", link=str(tmp_path / "usb-HSIEDGE_TIC-1_SN9999"))
    server = start_controller(link=link, faults=FaultPlan(disconnect_s=0.3, new_path=new_path))
    try:
        light = _light(server, search=[str(tmp_path / "usb-HSIEDGE*")])
        light.set_intensity("blue", 0.6)
        light.set_on("blue", True)
        server.inject("disconnect")
        with Timer() as t:
            state = light.state(refresh=True)
        assert t.elapsed < max_call_s(reconnect_timeout=FAST["reconnect_timeout"])
        assert server.generation == 2  # a new pty (the kernel may reuse the number)
        assert light.connection.port == server.url
        assert light.connection.stats["reconnects"] == 1
        assert state["blue"] == {"on": False, "intensity": 0.6}
        assert _truth(server)[1][light.channels.index("blue")] == 600
        assert _truth(decoy)[1] == [0] * len(light.channels)  # the decoy was never touched
        assert os.path.basename(light.connection.port).startswith("usb-HSIEDGE_TIC-1_SN0001")
        light.close()
    finally:
        server.stop()
        decoy.stop()


def test_disconnect_forever_reports_within_deadline(controller):
    with _light(controller, reconnect_timeout=0.5) as light:
        controller.disconnect(duration_s=30)
        with Timer() as t, pytest.raises(DeviceError, match="did not come back within "
                                                            "reconnect_timeout=0.5 s"):
            light.status()
        assert t.elapsed < max_call_s(reconnect_timeout=0.5)


@pytest.mark.parametrize("kind, match, flag", [
    ("overtemp", "over-temperature", "overtemp"), ("interlock", "interlock open", "interlock")])
def test_overtemp_and_interlock(controller, kind, match, flag):
    with _light(controller) as light:
        light.set_intensity(3, 0.5)
        light.set_on(3, True)
        controller.inject(kind)
        with pytest.raises(DeviceFault, match=match):
            light.set_on(4, True)
        assert set(_truth(controller)[0].values()) == {0.0}
        assert not any(s["on"] for s in light.state().values())
        assert flag in light.status()["flags"]
        assert any(e.cmd == "FAULT" and e.values[0] == kind.upper()
                   for e in light.connection.events)
        assert wait_until(lambda: flag not in light.status()["flags"], 2.0)
        light.set_on(4, True)
        assert _truth(controller)[0][light.channels[4]] == 0.0  # intensity 0 but on
        assert light.state(refresh=True)[light.channels[4]]["on"]


def test_watchdog_switches_leds_off_when_host_stops_talking(controller):
    with _light(controller, watchdog_s=0.3, heartbeat=False) as light:
        light.set_intensity(0, 1.0)
        light.set_on(0, True)
        t0 = time.monotonic()
        assert wait_until(lambda: _truth(controller)[0]["white"] == 0.0, 1.5)
        assert time.monotonic() - t0 < 0.3 + 0.2
        # the driver sees the ! FAULT WDT event (it arrives just after the LED goes off)
        assert wait_until(lambda: not light.state()["white"]["on"], 1.0)
        assert "watchdog_tripped" in light.status()["flags"]


def test_heartbeat_keeps_watchdog_fed(controller):
    with _light(controller, watchdog_s=0.3) as light:
        light.set_intensity(0, 1.0)
        light.set_on(0, True)
        time.sleep(0.9)
        assert _truth(controller)[0]["white"] == 1.0
        assert "watchdog_tripped" not in light.status()["flags"]


def test_max_on_time(controller):
    with _light(controller) as light:
        light.set_max_on("nir850", 0.2)
        light.set_intensity("nir850", 0.5)
        light.set_on("nir850", True)
        assert wait_until(lambda: _truth(controller)[0]["nir850"] == 0.0, 1.0)
        # the ! FAULT event reaches the driver asynchronously, just after the LED goes off
        assert wait_until(lambda: not light.state()["nir850"]["on"], 1.0)
        assert "maxon_tripped" in light.status()["flags"]


def test_wrong_device_and_silent_port(sim_only):
    lum = start_lumencor()
    try:
        with pytest.raises(DeviceProtocolError, match="is not an hsi-edge trigger controller"):
            drivers.open_illumination(lum.url, **FAST)
    finally:
        lum.stop()
    master, slave = os.openpty()  # a port where nothing answers
    try:
        with Timer() as t, pytest.raises(DeviceTimeout, match="no hsi-edge trigger controller "
                                                              "answered GET IDN"):
            drivers.open_trigger(os.ttyname(slave), **FAST)
        assert t.elapsed < 1.0
    finally:
        os.close(master)
        os.close(slave)


def test_protocol_version_mismatch(sim_only):
    server = start_controller(protocol_version="2.0")
    try:
        with pytest.raises(DeviceProtocolError, match="speaks protocol 2.0, this driver needs "
                                                      "major version 1"):
            drivers.open_trigger(server.url, **FAST)
    finally:
        server.stop()


def test_led_sequence_steps_with_trigger_edges(controller):
    seen = []
    controller.model.on_trigger = lambda ts: seen.append(controller.model.led_state())
    with drivers.open_trigger(controller.url, **FAST) as trig:
        illum = trig.connection
        for ch in range(len(illum.channels)):
            illum.set_int(ch, 1000)
        trig.configure(source="software")
        trig.set_sequence(["blue", ["green", "red"], []])
        trig.enable_sequence(True)
        trig.arm()
        for _ in range(4):
            trig.trigger()
    lit = [sorted(k for k, v in s.items() if v > 0) for s in seen]
    assert lit == [["blue"], ["green", "red"], [], ["blue"]]
