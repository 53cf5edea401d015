"""Lumencor driver against its simulator: faults, error mapping, reconnect."""

from __future__ import annotations

import pytest

import drivers
from edge.errors import DeviceError, DeviceFault, DeviceTimeout
from _serial_helpers import Timer, max_call_s, wait_until

OPTS = {"reply_timeout": 0.15, "retries": 2, "reconnect_timeout": 2.0}


def _open(server, **options):
    return drivers.open_illumination(server.url, protocol="lumencor", **{**OPTS, **options})


def _truth(server):
    with server.lock:
        return server.model.led_state()


@pytest.mark.parametrize("kind", ["delay", "drop", "split", "noreply"])
def test_lumencor_survives(lumencor, kind):
    with _open(lumencor) as light:
        lumencor.inject(kind)
        with Timer() as t:
            light.set_intensity("RED", 0.5)
            light.set_on("RED", True)
        assert t.elapsed < 2 * max_call_s(OPTS["reply_timeout"])
        assert _truth(lumencor)["RED"] == pytest.approx(0.5)
        lumencor.inject(kind)
        assert light.state(refresh=True)["RED"] == {"on": True, "intensity": 0.5}


def test_lumencor_garble_never_hangs(lumencor):
    with _open(lumencor) as light:
        for _ in range(5):
            lumencor.inject("garble")
            with Timer() as t:
                try:
                    light.state(refresh=True)
                except DeviceError:
                    pass  # no checksum in this protocol: either detected or a wrong digit
            assert t.elapsed < 16 * max_call_s(OPTS["reply_timeout"])


@pytest.mark.parametrize("kind, match", [("overtemp", "status 2 high_temperature"),
                                         ("interlock", "status 4 safety_lock")])
def test_lumencor_faults_are_reported(lumencor, kind, match):
    with _open(lumencor) as light:
        light.set_on(0, True)
        lumencor.inject(kind)
        with pytest.raises(DeviceFault, match=match):
            light.set_on(1, True)
        assert set(_truth(lumencor).values()) == {0.0}
        assert light.status()["flags"] == [match.split()[-1]]
        assert wait_until(lambda: light.status()["flags"] == [], 2.0)


def test_lumencor_disconnect_reconnects_with_leds_off(lumencor):
    with _open(lumencor) as light:
        light.set_intensity(2, 0.3)
        light.set_on(2, True)
        lumencor.inject("disconnect")
        state = light.state(refresh=True)
        assert state[light.channels[2]] == {"on": False, "intensity": 0.3}
        assert light.connection.stats["reconnects"] == 1


def test_lumencor_silent_reports_timeout(lumencor):
    with _open(lumencor) as light:
        lumencor.inject("noreply", 40)
        with Timer() as t, pytest.raises(DeviceTimeout, match="no reply to 'GET STAT' within "
                                                              "150 ms"):
            light.status()
        assert t.elapsed < max_call_s(OPTS["reply_timeout"])


def test_lumencor_bad_channel_from_device(lumencor):
    with _open(lumencor) as light:
        with pytest.raises(DeviceError, match="invalid channel \\(E 51\\)"):
            light.connection.set_active(42, True)
