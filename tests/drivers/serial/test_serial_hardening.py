"""Issue 15, items 11-13: verified identity, typed errors for malformed device data, channel
names without case.  Real drivers over real ptys against the shipped simulators."""

from __future__ import annotations

import pytest

import drivers
from drivers.sim import ControllerModel, DeviceServer, FaultPlan, LumencorModel
from edge.errors import DeviceError, DeviceProtocolError
from _serial_helpers import FAST


class _BadController(ControllerModel):
    """Answers chosen GETs with CRC-valid but malformed values."""

    bad: dict = {}

    def _execute(self, c, now):
        if c.verb == "GET" and c.cmd in self.bad:
            return self.bad[c.cmd]
        return super()._execute(c, now)


class _BadLumencor(LumencorModel):
    bad: dict = {}

    def _get(self, cmd, args, now):
        if cmd in self.bad:
            return self.bad[cmd]
        return super()._get(cmd, args, now)


def _serve(model, **kwargs):
    return DeviceServer(model, **kwargs).start()


# -- 12: every parse of device data raises DeviceProtocolError naming the reply -------------
@pytest.mark.parametrize("bad, message", [
    ({"INT": ("0",)}, r"malformed reply 'INT 0': value 2 missing"),
    ({"CAPS": ("NCH=8", "MAXINT=lots")},
     r"malformed reply 'CAPS NCH=8 MAXINT=lots': MAXINT is 'lots', expected an integer"),
    ({"CHMAP": ()}, r"malformed reply 'CHMAP': expected 8 unique channel names"),
    ({"CAPS": ("MAXINT=1000",), "CHMAP": ()},
     r"malformed reply 'CHMAP': expected at least one channel name"),
    ({"CHMAP": ("a", "b", "A", "c", "d", "e", "f", "g")},
     r"malformed reply 'CHMAP a b A c d e f g': expected 8 unique channel names"),
    ({"TCTR": ("many",)}, r"malformed reply 'TCTR many': value 1 is 'many'"),
])
def test_controller_malformed_reply_on_open(sim_only, bad, message):
    server = _serve(type("M", (_BadController,), {"bad": bad})())
    try:
        with pytest.raises(DeviceProtocolError, match=message):
            drivers.open_trigger(server.url, **FAST)
    finally:
        server.stop()


@pytest.mark.parametrize("bad, call, message", [
    ({"STAT": ("lots",)}, lambda t: t.status(), r"malformed reply 'STAT lots'"),
    ({"TEMP": ("hot",)}, lambda t: t.status(), r"malformed reply 'TEMP hot': value 1 is 'hot', "
                                                r"expected a number"),
    ({"ARMED": ("2",)}, lambda t: t.is_armed, r"malformed reply 'ARMED 2': value 1 is '2', "
                                               r"expected an integer 0-1"),
    ({"ARMED": ()}, lambda t: t.is_armed, r"malformed reply 'ARMED': value 1 missing"),
    ({"TCTR": ("-1",)}, lambda t: t.counter, r"malformed reply 'TCTR -1'"),
    ({"LEDS": ("x", "0")}, lambda t: drivers.illumination.HsiIllumination(
        t.connection).state(refresh=True), r"malformed reply 'LEDS x 0': expected a mask and "
                                           r"8 intensities"),
])
def test_controller_malformed_reply_later(sim_only, bad, call, message):
    model = _BadController()
    server = _serve(model)
    try:
        with drivers.open_trigger(server.url, **FAST) as trig:
            model.bad = bad
            with pytest.raises(DeviceProtocolError, match=message):
                call(trig)
    finally:
        server.stop()


@pytest.mark.parametrize("bad, message", [
    ({"MAXINT": ("lots",)}, r"malformed reply 'MAXINT lots': value 1 is 'lots'"),
    ({"CHMAP": ()}, r"malformed reply 'CHMAP': expected at least one channel name"),
    ({"CHINT": ("0",)}, r"malformed reply 'CHINT 0': value 2 missing"),
])
def test_lumencor_malformed_reply_on_open(sim_only, bad, message):
    server = _serve(type("L", (_BadLumencor,), {"bad": bad})())
    try:
        with pytest.raises(DeviceProtocolError, match=message):
            drivers.open_illumination(server.url, protocol="lumencor", reply_timeout=0.25)
    finally:
        server.stop()


@pytest.mark.parametrize("bad, message", [
    ({"STAT": ("x",)}, r"malformed reply 'STAT x'"),
    ({"TEMP": ("hot",)}, r"malformed reply 'TEMP hot'"),
    ({"CHACT": ("0", "on")}, r"malformed reply 'CHACT 0 on'"),
])
def test_lumencor_malformed_reply_later(sim_only, bad, message):
    model = _BadLumencor()
    server = _serve(model)
    try:
        with drivers.open_illumination(server.url, protocol="lumencor",
                                       reply_timeout=0.25) as light:
            model.bad = bad
            with pytest.raises(DeviceProtocolError, match=message):
                light.status() if "CHACT" not in bad else light.state(refresh=True)
            model.bad = {}
            assert light.state(refresh=True)["GREEN"]["on"] is False  # still usable
    finally:
        server.stop()


# -- 13: channel names match case-insensitively everywhere ---------------------------------
def test_channel_names_without_case(illumination_target):
    with drivers.open_illumination(illumination_target.url, protocol=illumination_target.protocol,
                                   **FAST) as light:
        upper = light.channels[2].upper()
        lower = light.channels[2].lower()
        light.set_intensity(lower, 0.5)
        light.set_on(upper, True)
        assert light.channel_index(lower) == light.channel_index(upper) == 2
        light.set_state({lower.title(): 0.25})
        state = light.state(refresh=True)
        assert state[light.channels[2]]["on"] is True
        assert state[light.channels[2]]["intensity"] == pytest.approx(0.25, abs=1e-3)
        if illumination_target.server is not None:
            truth = illumination_target.truth()
            assert truth[light.channels[2]] == pytest.approx(0.25, abs=1e-3)
        with pytest.raises(DeviceError, match="channel: unknown name 'purple'"):
            light.set_on("purple", True)


def test_trigger_sequence_names_without_case(sim_only):
    server = _serve(ControllerModel())
    try:
        with drivers.open_trigger(server.url, **FAST) as trig:
            trig.set_sequence(["GREEN", ["Red", "nir850"], []])
            with server.lock:
                assert server.model.seq == [[2], [4, 6], []]
    finally:
        server.stop()


# -- 11: identity replies verified; opens succeed at the README's example fault rate --------
def _open_many(server, n: int) -> tuple[int, list[str]]:
    failed, serials = 0, []
    for _ in range(n):
        try:
            trig = drivers.open_trigger(server.url, **FAST, watchdog_s=0)
        except DeviceError:
            failed += 1
            continue
        serials.append(trig.connection.serial_number)
        trig.close()
    return failed, serials


def test_opens_succeed_at_the_readme_fault_rate(sim_only):
    """``delay=0.01,drop=0.01`` (README): 0 of 60 opens may fail, every serial is right."""
    plan = FaultPlan(rates={"delay": 0.01, "drop": 0.01}, seed=5)
    server = _serve(ControllerModel(), faults=plan)
    try:
        failed, serials = _open_many(server, 60)
    finally:
        server.stop()
    assert plan.injected["drop"] > 0 and plan.injected["delay"] > 0
    assert failed == 0
    assert set(serials) == {"SN0001"}


def test_damaged_identity_is_never_stored(sim_only):
    """At 20 % dropped bytes an open may fail (with a typed error), but it never stores a
    serial number that lost a byte (``SN001`` for ``SN0001``)."""
    plan = FaultPlan(rates={"drop": 0.2}, seed=1)
    server = _serve(ControllerModel(), faults=plan)
    try:
        failed, serials = _open_many(server, 60)
    finally:
        server.stop()
    assert serials and set(serials) == {"SN0001"}, sorted(set(serials))
