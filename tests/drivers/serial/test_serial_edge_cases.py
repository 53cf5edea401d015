"""Edge cases of the serial drivers found in review: stale replies during the identity check,
a reset whose banner was lost, overlong and partial lines, sequence-number wraparound, the
reconnect deadline, the heartbeat thread, close() from another thread, fd/thread leaks, the
Lumencor STAT quirk and bad ``sim-devices`` arguments.  Real pyserial over real ptys; the
device variants are small ControllerModel/LumencorModel subclasses served by DeviceServer."""

from __future__ import annotations

import logging
import os
import re
import threading
import time

import pytest
import serial

import drivers
from drivers.serial_link import SerialLink
from drivers.sim import (ControllerModel, DeviceServer, FaultPlan, LumencorModel,
                         start_controller, start_lumencor)
from drivers.sim.lumencor import _Err as _LumErr
from edge.cli import main
from edge.errors import ConfigError, DeviceError, DeviceProtocolError, DeviceTimeout
from _serial_helpers import FAST, Timer, max_call_s, wait_until


def _truth(server):
    with server.lock:
        m = server.model
        return m.led_state(), list(m.intensity), m.crc


class _SlowModel(ControllerModel):
    """A device that needs 30 ms for anything but GET IDN (a busy microcontroller)."""

    def handle(self, line, now):
        if line.strip() and b"IDN" not in line:
            time.sleep(0.03)
        return super().handle(line, now)


class _TamperModel(ControllerModel):
    """Replies can be altered once: CRC stripped (line noise ate the '*') or made overlong."""

    strip_crc = 0
    junk = 0
    seqs: list

    def handle(self, line, now):
        out = super().handle(line, now)
        if hasattr(self, "seqs") and line.strip():
            m = re.match(rb"#(\d+) ", line)
            self.seqs.append(int(m.group(1)) if m else None)
        if out and self.strip_crc:
            self.strip_crc -= 1
            out = out[:-1] + [re.sub(rb"\*[0-9A-F]{4}\n$", b"\n", out[-1])]
        if out and self.junk:
            out = [b"X" * self.junk + out[0]] + out[1:]
            self.junk = 0
        return out


def _serve(model, **kwargs):
    return DeviceServer(model, **kwargs).start()


# -- identity ------------------------------------------------------------------------------
def test_identify_skips_late_reply_to_a_half_line(sim_only):
    """The empty line sent on open completes a half-received line (e.g. from a program that
    was killed mid-write); a slow device answers it *before* GET IDN.  That stale reply used to
    fail the identity check with 'is not an hsi-edge trigger controller'."""
    server = _serve(_SlowModel())
    try:
        port = serial.serial_for_url(server.url, timeout=0.01)
        port.write(b"#9 GET TE")  # no terminator: the device keeps it in its line buffer
        time.sleep(0.05)
        port.close()
        with drivers.open_trigger(server.url, **FAST) as trig:
            assert trig.connection.serial_number == "SN0001"
    finally:
        server.stop()


def test_identify_timeout_names_what_was_ignored(sim_only):
    master, slave = os.openpty()

    def device():  # answers GET IDN with a stale reply only, then stays silent
        seen = b""
        deadline = time.monotonic() + 2
        while b"IDN" not in seen and time.monotonic() < deadline:
            seen += os.read(master, 100)
        os.write(master, b"A #5 TEMP 35.0\n")

    thread = threading.Thread(target=device, daemon=True)
    thread.start()
    try:
        with pytest.raises(DeviceTimeout, match=r"answered GET IDN .*ignored b'A #5 TEMP 35.0"):
            drivers.open_trigger(os.ttyname(slave), **FAST)
    finally:
        thread.join(timeout=3)
        os.close(master)
        os.close(slave)


# -- CRC mode and resets -------------------------------------------------------------------
def test_reset_with_lost_banner_is_detected_and_resynced(controller):
    """A reset whose '! BOOT' was lost leaves the device in CRC-off mode; every reply then
    lacked a CRC and the driver failed forever with 'CRC missing' (cached state never
    re-applied).  Now it asks GET CRC, sees 0 and resynchronises."""
    with drivers.open_illumination(controller.url, watchdog_s=0, **FAST) as light:
        light.set_intensity("white", 0.5)
        light.set_on("white", True)
        resyncs = light.connection.stats["resyncs"]
        with controller.lock:
            controller.model.reset(time.monotonic())  # banner discarded: never sent
        assert light.state(refresh=True)["white"] == {"on": False, "intensity": 0.5}
        assert light.connection.stats["resyncs"] == resyncs + 1
        _, ints, crc = _truth(controller)
        assert crc and ints[0] == 500


def test_reply_that_lost_its_crc_to_noise_does_not_resync(sim_only):
    server = _serve(_TamperModel())
    try:
        with drivers.open_illumination(server.url, watchdog_s=0, **FAST) as light:
            light.set_intensity(0, 0.3)
            light.set_on(0, True)
            resyncs = light.connection.stats["resyncs"]
            server.model.strip_crc = 1
            state = light.state(refresh=True)
            assert state[light.channels[0]] == {"on": True, "intensity": 0.3}  # LEDs stay on
            assert light.connection.stats["resyncs"] == resyncs
            assert light.connection.stats["protocol_errors"] >= 1
    finally:
        server.stop()


def test_heartbeat_thread_resyncs_after_reset_without_crc(controller):
    """Without CRC a lost reset is only visible through its banner; the heartbeat thread
    consumes it and must resynchronise (it must not reconnect, see below)."""
    with drivers.open_illumination(controller.url, crc=False, watchdog_s=0.3, **FAST) as light:
        light.set_intensity(2, 0.4)
        resyncs = light.connection.stats["resyncs"]
        controller.inject("reset")  # hits the next command: a heartbeat
        assert wait_until(lambda: light.connection.stats["resyncs"] > resyncs, 2.0)
        assert _truth(controller)[1][2] == 400


def test_heartbeat_does_not_reconnect(controller, caplog):
    """A heartbeat that reconnected held the lock for reconnect_timeout every interval, so
    the caller's next call waited that long before its own reconnect (twice its deadline)."""
    with drivers.open_illumination(controller.url, watchdog_s=0.15,
                                   **{**FAST, "reconnect_timeout": 0.5}) as light:
        controller.disconnect(duration_s=30)
        time.sleep(0.4)  # several heartbeats hit the vanished port
        with caplog.at_level(logging.WARNING, logger="drivers"):
            with Timer() as t, pytest.raises(DeviceError, match="did not come back within "
                                                                "reconnect_timeout=0.5 s"):
                light.status()
        assert sum("reconnecting" in r.getMessage() for r in caplog.records) == 1
        assert t.elapsed < max_call_s(reconnect_timeout=0.5)


def test_heartbeat_abandoned_by_close_is_not_revived_by_reopen(controller):
    """close() waits 2 s for the heartbeat thread; one still blocked after that (here on the
    transaction lock, which this thread holds: it is re-entrant) must end once unblocked, not
    beat on beside the thread of a reopen (they used to share one stop event, which the
    reopen cleared)."""
    light = drivers.open_illumination(controller.url, watchdog_s=0.15, **FAST)
    conn = light.connection
    old = conn._hb_thread
    with conn._lock:              # the next heartbeat blocks here
        time.sleep(0.2)
        conn.close()              # gives up joining it after 2 s
        assert old.is_alive()
        conn.open()               # re-entrant: reopens before the old thread can run
    try:
        assert wait_until(lambda: not old.is_alive(), 2.0), "abandoned heartbeat revived"
        beats = [t for t in threading.enumerate() if t.name.startswith("hsi-heartbeat-")]
        assert beats == [conn._hb_thread]
    finally:
        light.close()


# -- framing -------------------------------------------------------------------------------
def test_read_line_overlong_and_partial(sim_only):
    master, slave = os.openpty()
    link = SerialLink(os.ttyname(slave))
    try:
        os.write(master, b"X" * 300)
        with pytest.raises(DeviceProtocolError, match=r"300 bytes without line terminator .*"
                                                      r"max_line=256"):
            link.read_line(time.monotonic() + 0.5)
        os.write(master, b"YYYY\nA TEMP 1\n")  # the rest of the long line is dropped
        assert link.read_line(time.monotonic() + 0.5) == b"A TEMP 1\n"
        os.write(master, b"Z" * 299 + b"\nA TEMP 2\n")  # one chunk with its terminator
        with pytest.raises(DeviceProtocolError, match="line of 300 bytes .* exceeds max_line"):
            link.read_line(time.monotonic() + 0.5)
        assert link.read_line(time.monotonic() + 0.5) == b"A TEMP 2\n"
        os.write(master, b"A TEMP 3")  # pyserial returns this without raising: we must
        with pytest.raises(DeviceTimeout, match=r"partial data b'A TEMP 3', missing terminator"):
            link.read_line(time.monotonic() + 0.05)
    finally:
        link.close()
        os.close(master)
        os.close(slave)


def test_overlong_reply_is_retried(sim_only):
    server = _serve(_TamperModel())
    try:
        with drivers.open_illumination(server.url, watchdog_s=0, **FAST) as light:
            light.set_intensity(1, 0.25)
            server.model.junk = 400
            assert light.state(refresh=True)[light.channels[1]]["intensity"] == 0.25
            assert light.connection.stats["protocol_errors"] >= 1
    finally:
        server.stop()


def test_sequence_numbers_wrap_without_reusing_zero(sim_only):
    model = _TamperModel()
    model.seqs = []
    server = _serve(model)
    try:
        with drivers.open_trigger(server.url, watchdog_s=0, **FAST) as trig:
            trig.connection._seq = 65534
            model.seqs.clear()
            for _ in range(3):
                trig.status()["temperature_c"]  # two GETs each
        assert model.seqs[:6] == [65535, 1, 2, 3, 4, 5]  # 0 is reserved for GET IDN
    finally:
        server.stop()


def test_command_timeout_names_the_command(controller):
    with drivers.open_illumination(controller.url, **FAST) as light:
        controller.inject("noreply", 50)
        with pytest.raises(DeviceTimeout, match=r"GET LEDS: no complete reply from .* "
                                                r"\(0.25 s\)"):
            light.state(refresh=True)
        controller.faults.clear()


def test_failed_safe_does_not_claim_leds_off(controller):
    with drivers.open_illumination(controller.url, watchdog_s=0, **FAST) as light:
        light.set_intensity(0, 1.0)
        light.set_on(0, True)
        controller.inject("noreply", 50)
        with pytest.raises(DeviceTimeout, match="DO SAFE: no complete reply"):
            light.safe()
        assert light.connection.led_on[0] is True  # unknown: the last confirmed state
        controller.faults.clear()
        light.safe()
        assert light.state()["white"]["on"] is False


# -- reconnect -----------------------------------------------------------------------------
def test_reconnect_keeps_looking_until_its_deadline(tmp_path, sim_only):
    """The back-off loop gave up as soon as the next sleep would overshoot: with
    reconnect_timeout=0.6 it stopped looking after 0.3 s and missed a device back at 0.4 s."""
    server = start_controller(link=str(tmp_path / "usb-HSIEDGE_TIC-1_SN0001"))
    try:
        with drivers.open_illumination(server.url, watchdog_s=0,
                                       **{**FAST, "reconnect_timeout": 0.6}) as light:
            light.set_intensity(0, 0.2)
            server.disconnect(duration_s=0.4)
            assert wait_until(lambda: not server.connected, 1.0)
            assert light.state(refresh=True)["white"] == {"on": False, "intensity": 0.2}
            assert light.connection.stats["reconnects"] == 1
    finally:
        server.stop()


def test_lumencor_disconnect_reports_after_one_reconnect(lumencor, caplog):
    """The fail-safe after the error reconnected a second time (twice the deadline)."""
    with drivers.open_illumination(lumencor.url, protocol="lumencor", reply_timeout=0.15,
                                   reconnect_timeout=0.4) as light:
        lumencor.disconnect(duration_s=30)
        with caplog.at_level(logging.WARNING, logger="drivers"):
            with pytest.raises(DeviceError, match="did not come back within "
                                                  "reconnect_timeout=0.4 s"):
                light.set_on(0, True)
        assert sum("reconnecting" in r.getMessage() for r in caplog.records) == 1


# -- threads and resources -----------------------------------------------------------------
def test_close_from_another_thread_during_a_transaction(controller):
    light = drivers.open_illumination(controller.url, **FAST)
    light.set_intensity(0, 1.0)
    light.set_on(0, True)
    controller.inject("delay")  # first attempt times out, the retry answers
    result: dict = {}

    def call():
        try:
            result["value"] = light.state(refresh=True)
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            result["error"] = exc

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.05)
    with Timer() as t:
        light.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert t.elapsed < 2 * max_call_s()
    assert "value" in result or isinstance(result.get("error"), DeviceError), result
    assert set(_truth(controller)[0].values()) == {0.0}
    with pytest.raises(DeviceError, match="is closed"):
        light.set_on(0, True)


def test_no_fd_or_thread_leak_over_open_close_cycles(sim_only):
    ctl, lum = start_controller(), start_lumencor()
    try:
        fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
        for _ in range(15):
            with drivers.open_illumination(ctl.url, watchdog_s=0.3, **FAST) as light:
                light.set_on(0, True)
            with drivers.open_illumination(lum.url, protocol="lumencor",
                                           reply_timeout=0.25) as light:
                light.set_on(0, True)
        assert wait_until(lambda: threading.active_count() == threads, 2.0)
        assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        ctl.stop()
        lum.stop()


# -- Lumencor quirks -----------------------------------------------------------------------
class _NoStatModel(LumencorModel):
    """An engine that refuses GET STAT (not every model has it)."""

    def _get(self, cmd, args, now):
        if cmd == "STAT":
            raise _LumErr(52)
        return super()._get(cmd, args, now)


def test_lumencor_refused_stat_does_not_recurse(sim_only):
    """Every E reply is explained with GET STAT; a refused GET STAT explained itself forever
    (RecursionError instead of a DeviceError)."""
    server = _serve(_NoStatModel())
    try:
        with drivers.open_illumination(server.url, protocol="lumencor",
                                       reply_timeout=0.25) as light:
            with pytest.raises(DeviceProtocolError, match="refused 'GET STAT': error code 52"):
                light.status()
            with pytest.raises(DeviceError, match=r"invalid channel \(E 51\)"):
                light.connection.set_active(42, True)
    finally:
        server.stop()


# -- sim-devices arguments -----------------------------------------------------------------
# (checked on FaultPlan.parse / ControllerModel: an argument wrongly accepted would make an
# in-process `sim-devices` serve forever instead of failing the test)
@pytest.mark.parametrize("spec, message", [
    ("seed=nan", "faults.seed: expected a non-negative integer, got 'nan'"),
    ("seed=1e400", "faults.seed: expected a non-negative integer, got '1e400'"),
    ("seed=1.5", "faults.seed: expected a non-negative integer, got '1.5'"),
    ("new_path=2", "faults.new_path: expected 0 or 1, got '2'"),
])
def test_fault_spec_rejects_bad_seed_and_new_path(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FaultPlan.parse(spec)
    assert FaultPlan.parse("seed=3,new_path=1").seed == 3


def test_sim_devices_bad_fault_spec_is_one_line(capsys):
    # seed=nan used to escape as a ValueError traceback (int(float("nan")))
    assert main(["sim-devices", "--faults", "delay=0.1,seed=nan"]) == 2
    err = capsys.readouterr().err
    assert err == "hsi-edge sim-devices: error: faults.seed: expected a non-negative " \
                  "integer, got 'nan'\n"


def test_controller_model_rejects_tokens_that_break_framing():
    with pytest.raises(ConfigError, match="serial: expected printable ASCII without spaces, "
                                          "'\\*' or '#', got 'SN 1'"):
        ControllerModel(serial="SN 1")  # `hsi-edge sim-devices --serial "SN 1"`
    with pytest.raises(ConfigError, match="channels: expected printable ASCII .* got 'near ir'"):
        ControllerModel(channels=("white", "near ir"))


def test_armed_is_read_from_the_device_after_it_disarms_itself():
    """A finite pulse count ends with the device disarmed; the driver must not keep saying
    armed (configure() would refuse, fire() would fail)."""
    import time as _time

    from drivers.sim import start_controller
    from drivers.trigger import HsiConnection, TriggerController

    server = start_controller()
    try:
        with TriggerController(HsiConnection(server.url).open()) as trig:
            trig.configure(source="internal", period_us=1000, width_us=100, count=3)
            trig.arm()
            deadline = _time.monotonic() + 2.0
            while trig.is_armed and _time.monotonic() < deadline:
                _time.sleep(0.01)
            assert not trig.is_armed
            trig.configure(period_us=2000)  # allowed again: no stale "armed" refusal
    finally:
        server.stop()
