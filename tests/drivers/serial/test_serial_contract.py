"""Contract tests: every illumination and trigger implementation (or --port hardware)."""

from __future__ import annotations

import pytest

import drivers
from drivers.sim.sensor import LED_CHANNELS
from drivers.sim import DEFAULT_CHANNELS
from edge.errors import DeviceError
from _serial_helpers import FAST


def _open(target):
    options = dict(FAST)
    if target.protocol == "lumencor":
        options["reply_timeout"] = 0.1 if target.server is None else 0.25
    return drivers.open_illumination(target.url, protocol=target.protocol, **options)


def test_all_off_after_open_and_names(illumination_target):
    with _open(illumination_target) as light:
        assert len(light.channels) >= 1 and len(set(light.channels)) == len(light.channels)
        assert all(not s["on"] for s in light.state().values())
        assert all(not s["on"] for s in light.state(refresh=True).values())
        truth = illumination_target.truth()
        assert truth is None or set(truth.values()) == {0.0}


def test_set_by_name_and_index(illumination_target):
    with _open(illumination_target) as light:
        name = light.channels[1]
        light.set_intensity(name, 0.25)
        light.set_on(1, True)
        light.set_intensity(0, 1.0)
        expected = {"on": True, "intensity": 0.25}
        assert light.state()[name] == expected
        assert light.state(refresh=True)[name] == expected
        assert light.state(refresh=True)[light.channels[0]] == {"on": False, "intensity": 1.0}
        truth = illumination_target.truth()
        if truth is not None:
            assert truth[name] == pytest.approx(0.25, abs=1e-9)
            assert truth[light.channels[0]] == 0.0
        light.set_on(name, False)
        assert light.state(refresh=True)[name]["on"] is False


def test_set_state_mapping(illumination_target):
    with _open(illumination_target) as light:
        a, b = light.channels[0], light.channels[-1]
        light.set_state({a: 0.5, b: 0.1})
        state = light.state(refresh=True)
        assert state[a] == {"on": True, "intensity": 0.5}
        assert state[b] == {"on": True, "intensity": 0.1}
        light.set_state({})
        assert not any(s["on"] for s in light.state(refresh=True).values())


def test_safe_and_close_switch_everything_off(illumination_target):
    light = _open(illumination_target)
    light.set_intensity(0, 0.5)
    light.set_on(0, True)
    light.safe()
    light.safe()  # idempotent
    assert not any(s["on"] for s in light.state(refresh=True).values())
    light.set_on(0, True)
    light.close()
    light.close()  # idempotent
    truth = illumination_target.truth()
    assert truth is None or set(truth.values()) == {0.0}


def test_status_keys(illumination_target):
    with _open(illumination_target) as light:
        status = light.status()
        assert status["flags"] == []
        assert 0 < status["temperature_c"] < 60
        assert status["serial"] == light.serial_number


def test_bad_arguments(illumination_target):
    with _open(illumination_target) as light:
        with pytest.raises(DeviceError, match="channel: unknown name 'nope'; channels are"):
            light.set_on("nope", True)
        with pytest.raises(DeviceError, match=r"channel: index 99 out of range 0-"):
            light.set_intensity(99, 0.5)
        with pytest.raises(DeviceError, match=r"fraction: expected a number in \[0, 1\], got 1.5"):
            light.set_intensity(0, 1.5)
        with pytest.raises(DeviceError, match="on: expected True or False, got 1"):
            light.set_on(0, 1)


def test_exclusive_open(illumination_target):
    if illumination_target.url.startswith("socket://"):
        pytest.skip("socket:// has no flock; the simulator serves one client at a time")
    with _open(illumination_target):
        with pytest.raises(DeviceError, match="in use by another program"):
            _open(illumination_target)


def test_controller_channels_match_simulated_camera():
    assert set(DEFAULT_CHANNELS) == set(LED_CHANNELS)


def test_unknown_protocol():
    with pytest.raises(DeviceError, match="protocol: expected 'hsi' or 'lumencor', got 'x'"):
        drivers.open_illumination("loop://", protocol="x")


# -- trigger -------------------------------------------------------------------------------
def test_trigger_software_fire_and_counter(trigger_target):
    with drivers.open_trigger(trigger_target.url, **FAST) as trig:
        trig.configure(source="software", period_us=1000, width_us=50, delay_us=0, count=0)
        trig.reset_counter()
        assert trig.counter == 0
        trig.arm()
        assert trig.is_armed
        assert [trig.trigger() for _ in range(3)] == [1, 2, 3]
        assert trig.counter == 3
        trig.disarm()
        assert not trig.is_armed
        with pytest.raises(DeviceError, match=r"trigger\(\): trigger is not armed"):
            trig.trigger()
        trig.configure(source="internal")
        # past the host check (which reads ARMED from the device): the device refuses too
        with pytest.raises(DeviceError, match="rejected DO FIRE.*E33"):
            trig.connection.fire()


def test_trigger_internal_count_stops(trigger_target):
    with drivers.open_trigger(trigger_target.url, **FAST) as trig:
        trig.reset_counter()
        trig.configure(source="internal", period_us=2000, count=5)
        trig.arm()
        from _serial_helpers import wait_until
        assert wait_until(lambda: trig.counter == 5, 2.0)
        assert trig.status()["flags"] == []  # disarmed itself after 5 pulses


def test_trigger_bad_configuration(trigger_target):
    with drivers.open_trigger(trigger_target.url, **FAST) as trig:
        with pytest.raises(DeviceError, match="source: expected one of internal, external, "
                                              "software, got 'laser'"):
            trig.configure(source="laser")
        with pytest.raises(DeviceError, match=r"period_us: expected an integer 100-10000000, "
                                              r"got 5"):
            trig.configure(period_us=5)
        trig.configure(source="software")
        trig.arm()
        with pytest.raises(DeviceError, match="configure\\(\\): trigger is armed"):
            trig.configure(count=3)
