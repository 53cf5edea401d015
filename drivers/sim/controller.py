"""Simulated hsi-edge trigger/illumination controller (the device side of PROTOCOL.md).

:class:`ControllerModel` is transport-free: :class:`drivers.sim.server.DeviceServer` feeds it
command lines and a clock and writes what it returns.  Callbacks couple it to a simulated
camera: ``on_trigger(timestamp_ns)`` per trigger pulse and ``on_led_change(state)`` with
``{channel_name: intensity 0..1}`` (0 when off) whenever the emitted light changes.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from drivers import protocol as P
from edge.errors import ConfigError, DeviceProtocolError

__all__ = ["ControllerModel", "DEFAULT_CHANNELS"]

log = logging.getLogger(__name__)

#: LED channel names; the same names as ``drivers.sim.light.LED_CHANNELS`` of the simulated
#: camera (white halogen-like, blue 470 nm, green 530, amber 595, red 660, NIR 740/850/940).
DEFAULT_CHANNELS: tuple[str, ...] = (
    "white", "blue", "green", "amber", "red", "nir740", "nir850", "nir940")
_SOURCES = ("INT", "EXT", "SW")
#: SET command -> (low, high) for the integer argument (channel commands: value argument).
_RANGES = {"INT": (0, 1000), "MAXON": (0, 3_600_000), "TPER": (100, 10_000_000),
           "TWID": (1, 1_000_000), "TDLY": (0, 1_000_000), "TCNT": (0, 2**32 - 1),
           "WDT": (0, 60_000), "CRC": (0, 1), "LED": (0, 1), "SEQEN": (0, 1), "TCTR": (0, 0)}
NOMINAL_TEMP_C = 35.0
OVERTEMP_C = 72.5


class _Err(Exception):
    def __init__(self, code: int, text: str = ""):
        super().__init__(text)
        self.code, self.text = code, text or P.ERROR_CODES[code]


class ControllerModel:
    """State machine of one controller.

    Parameters
    ----------
    serial : str
        Serial number reported by ``GET IDN`` (how the driver recognises it after a reconnect).
    channels : sequence of str
        LED channel names (``GET CHMAP``).
    on_trigger, on_led_change : callable, optional
        Hooks for a simulated camera (called from the server thread).
    """

    vendor, model, firmware = P.VENDOR, P.MODEL, "1.2.0"
    supported_faults = ("delay", "drop", "garble", "split", "merge", "noreply", "reset",
                        "disconnect", "overtemp", "interlock", "busy")

    def __init__(self, *, serial: str = "SN0001", channels: Sequence[str] = DEFAULT_CHANNELS,
                 on_trigger: Callable[[int], None] | None = None,
                 on_led_change: Callable[[dict], None] | None = None,
                 protocol_version: str = f"{P.PROTOCOL_VERSION}.0") -> None:
        for name, tokens in (("serial", [serial]), ("channels", list(channels)),
                             ("protocol_version", [protocol_version])):
            # each goes on the wire as one token of `A IDN ...` / `A CHMAP ...`
            for token in tokens:
                if not isinstance(token, str) or not token or not token.isascii() or any(
                        c in token for c in " *#") or not token.isprintable():
                    raise ConfigError(f"{name}: expected printable ASCII without spaces, '*' "
                                      f"or '#', got {token!r}")
        self.serial = serial
        self.channels = tuple(channels)
        self.protocol_version = protocol_version
        self.on_trigger = on_trigger
        self.on_led_change = on_led_change
        self.boots = 0
        self._last_emitted: dict | None = None
        self.reset(time.monotonic())

    # -- state --------------------------------------------------------------------------
    def reset(self, now: float) -> list[bytes]:
        """Power-on state; returns the ``! BOOT`` banner (always with a CRC)."""
        n = len(self.channels)
        self.crc = False
        self.led_on, self.intensity = [False] * n, [0] * n
        self.max_on_ms, self.on_since = [600_000] * n, [0.0] * n
        self.tsrc, self.tper, self.twid, self.tdly, self.tcnt = "SW", 10_000, 100, 0, 0
        self.armed, self.counter, self.pulses_this_arm, self.next_pulse = False, 0, 0, None
        self.seq: list[list[int]] = []
        self.seqen, self.seqpos, self.seq_lit = False, 0, None
        self.wdt_ms, self.last_valid, self.wdt_tripped = 0, now, False
        self.latched = 0
        self.fault_until = {"overtemp": 0.0, "interlock": 0.0}
        self.started = now
        self.boots += 1
        self._emit_led()
        return [P.encode_reply("!", "BOOT", self._idn(), crc=True)]

    def _idn(self) -> tuple:
        return (self.vendor, self.model, self.serial, self.firmware, self.protocol_version)

    def led_state(self) -> dict[str, float]:
        """Emitted light: ``{name: intensity 0..1}``, 0 for a channel that is off."""
        lit = self.seq_lit if self.seqen and self.seq_lit is not None else [
            i for i, on in enumerate(self.led_on) if on]
        return {name: (self.intensity[i] / 1000 if i in lit else 0.0)
                for i, name in enumerate(self.channels)}

    def _emit_led(self) -> None:
        state = self.led_state()
        if state != self._last_emitted:
            self._last_emitted = state
            if self.on_led_change is not None:
                self.on_led_change(dict(state))

    def _all_off(self) -> None:
        self.led_on = [False] * len(self.channels)
        self.armed, self.seqen, self.seq_lit, self.next_pulse = False, False, None, None
        self._emit_led()

    def temperature(self, now: float) -> float:
        if now < self.fault_until["overtemp"]:
            return OVERTEMP_C
        return NOMINAL_TEMP_C + 0.5 * sum(self.led_on)

    def flags(self, now: float) -> int:
        f = self.latched
        f |= 1 if now < self.fault_until["overtemp"] else 0
        f |= 2 if now < self.fault_until["interlock"] else 0
        return f | (16 if self.armed else 0) | (32 if self.seqen else 0)

    def _line(self, kind: str, cmd: str, values=(), seq=None) -> bytes:
        return P.encode_reply(kind, cmd, values, seq=seq, crc=self.crc)

    # -- faults injected by the server --------------------------------------------------
    def trip(self, kind: str, now: float, hold_s: float = 0.3) -> list[bytes]:
        """Over-temperature or interlock for ``hold_s`` seconds: all LEDs off, an event."""
        self.fault_until[kind] = now + hold_s
        self._all_off()
        value = (f"{OVERTEMP_C:.1f}",) if kind == "overtemp" else ()
        return [self._line("!", "FAULT", (kind.upper(),) + value)]

    def note_line(self, now: float) -> bytes:
        """An unsolicited ``! TEMP t`` status event (used by the "merge" fault)."""
        return self._line("!", "TEMP", (f"{self.temperature(now):.1f}",))

    def busy_reply(self, line: bytes) -> bytes | None:
        try:
            cmd = P.parse_command(line)
        except DeviceProtocolError:
            return None
        return self._line("E", cmd.cmd, (P.E_BUSY, "busy"), cmd.seq)

    def external_edge(self, now: float) -> None:
        """A pulse on the external trigger input (source EXT, armed)."""
        if self.armed and self.tsrc == "EXT":
            self._pulse(now)

    # -- time ---------------------------------------------------------------------------
    def next_due(self, now: float) -> float | None:
        """Earliest time :meth:`tick` has something to do (None: nothing scheduled)."""
        times = [t for t in self.fault_until.values() if t > now]
        if self.next_pulse is not None:
            times.append(self.next_pulse)
        if self.wdt_ms and not self.wdt_tripped:
            times.append(self.last_valid + self.wdt_ms / 1000)
        times += [self.on_since[i] + self.max_on_ms[i] / 1000
                  for i, on in enumerate(self.led_on) if on and self.max_on_ms[i]]
        return min(times) if times else None

    def tick(self, now: float) -> list[bytes]:
        out = []
        for kind, until in self.fault_until.items():
            if until and now >= until:
                self.fault_until[kind] = 0.0
                out.append(self._line("!", "CLEAR", (kind.upper(),)))
        if self.wdt_ms and not self.wdt_tripped and now - self.last_valid >= self.wdt_ms / 1000:
            self.wdt_tripped = True
            self.latched |= 4
            self._all_off()
            out.append(self._line("!", "FAULT", ("WDT",)))
        for i, on in enumerate(self.led_on):
            if on and self.max_on_ms[i] and now - self.on_since[i] >= self.max_on_ms[i] / 1000:
                self.led_on[i] = False
                self.latched |= 8
                self._emit_led()
                out.append(self._line("!", "FAULT", ("MAXON", i)))
        while self.next_pulse is not None and now >= self.next_pulse:
            due = self.next_pulse
            self.next_pulse = due + self.tper / 1e6
            self._pulse(due)
        return out

    def _pulse(self, when: float) -> None:
        self.counter = (self.counter + 1) & 0xFFFFFFFF
        self.pulses_this_arm += 1
        if self.seqen and self.seq:
            self.seq_lit = self.seq[self.seqpos % len(self.seq)]
            self.seqpos = (self.seqpos + 1) % len(self.seq)
            self._emit_led()
        if self.on_trigger is not None:
            self.on_trigger(time.monotonic_ns() + int((when - time.monotonic()) * 1e9))
        if self.tcnt and self.pulses_this_arm >= self.tcnt:
            self.armed, self.next_pulse = False, None

    # -- commands -----------------------------------------------------------------------
    def handle(self, line: bytes, now: float) -> list[bytes]:
        """Process one command line; returns the lines to send (events first, then reply)."""
        if not line.strip():
            return []
        try:
            cmd = P.parse_command(line)
        except DeviceProtocolError as exc:
            code = getattr(exc, "code", P.E_SYNTAX)
            return [self._line("E", "?", (code, P.ERROR_CODES[code]), getattr(exc, "seq", None))]
        if self.crc and not cmd.has_crc:
            return [self._line("E", cmd.cmd, (P.E_CRC_REQUIRED, "CRC required"), cmd.seq)]
        self.last_valid, self.wdt_tripped = now, False
        if cmd.verb == "DO" and cmd.cmd == "RST":
            reply = self._line("A", "RST", (), cmd.seq)
            return [reply] + self.reset(now)
        try:
            values = self._execute(cmd, now)
        except _Err as err:
            return [self._line("E", cmd.cmd, (err.code, err.text), cmd.seq)]
        self._emit_led()
        return [self._line("A", cmd.cmd, values, cmd.seq)]

    def _int(self, token: str, cmd: str) -> int:
        lo, hi = _RANGES.get(cmd, (0, 2**32 - 1))
        if not token.isdigit() or not lo <= int(token) <= hi:
            raise _Err(P.E_ARG, f"{cmd} expects {lo}-{hi}")
        return int(token)

    def _ch(self, args: tuple, need: int) -> int:
        if len(args) != need:
            raise _Err(P.E_SYNTAX, f"expected {need} argument(s)")
        if not args[0].isdigit() or int(args[0]) >= len(self.channels):
            raise _Err(P.E_CHANNEL, f"channels are 0-{len(self.channels) - 1}")
        return int(args[0])

    def _execute(self, c, now: float) -> tuple:
        verb, name, args = c.verb, c.cmd, c.args
        getter = {"IDN": self._idn, "CHMAP": lambda: self.channels,
                  "CAPS": lambda: (f"NCH={len(self.channels)}", "MAXINT=1000", "SEQMAX=64"),
                  "LEDS": lambda: (sum(1 << i for i, on in enumerate(self.led_on) if on),
                                   *self.intensity),
                  "STAT": lambda: (self.flags(now),), "TEMP": lambda: (
                      f"{self.temperature(now):.1f}",),
                  "TSRC": lambda: (self.tsrc,), "TPER": lambda: (self.tper,),
                  "TWID": lambda: (self.twid,), "TDLY": lambda: (self.tdly,),
                  "TCNT": lambda: (self.tcnt,), "TCTR": lambda: (self.counter,),
                  "ARMED": lambda: (int(self.armed),), "WDT": lambda: (self.wdt_ms,),
                  "CRC": lambda: (int(self.crc),), "SEQEN": lambda: (int(self.seqen),),
                  "SEQPOS": lambda: (self.seqpos,), "SEQ": lambda: tuple(
                      "+".join(map(str, s)) if s else "-" for s in self.seq) or ("OFF",)}
        per_channel = {"LED": self.led_on, "INT": self.intensity, "MAXON": self.max_on_ms}
        if verb == "GET":
            if name in per_channel:
                ch = self._ch(args, 1)
                return (ch, int(per_channel[name][ch]))
            if name in getter:
                return tuple(getter[name]())
        elif verb == "SET":
            return self._set(name, args, now)
        elif name in ("ARM", "DISARM", "FIRE", "SAFE", "HB", "CLR", "RST"):
            return self._do(name, now)
        if name in getter or name in per_channel or name in (
                "ARM", "DISARM", "FIRE", "SAFE", "HB", "CLR", "RST"):
            raise _Err(P.E_VERB)
        raise _Err(P.E_UNKNOWN, f"unknown command {name}")

    def _blocked(self, now: float) -> None:
        if now < self.fault_until["interlock"]:
            raise _Err(P.E_INTERLOCK)
        if now < self.fault_until["overtemp"]:
            raise _Err(P.E_OVERTEMP)

    def _set(self, name: str, args: tuple, now: float) -> tuple:
        if name in ("LED", "INT", "MAXON"):
            ch = self._ch(args, 2)
            value = self._int(args[1], name)
            if name == "LED":
                if value:
                    self._blocked(now)
                    if not self.led_on[ch]:
                        self.on_since[ch] = now
                self.led_on[ch] = bool(value)
            else:
                (self.intensity if name == "INT" else self.max_on_ms)[ch] = value
            return args
        if name == "SEQ":
            steps = [] if args in ((), ("OFF",)) else [self._step(s) for s in args]
            if len(steps) > 64:
                raise _Err(P.E_ARG, "at most 64 steps")
            self.seq, self.seqpos = steps, 0
            return args
        if len(args) != 1:
            raise _Err(P.E_SYNTAX, "expected 1 argument")
        if name == "TSRC":
            if args[0] not in _SOURCES:
                raise _Err(P.E_ARG, "TSRC expects INT, EXT or SW")
            self._idle_trigger()
            self.tsrc = args[0]
            return args
        if name not in _RANGES or name in ("LED", "INT", "MAXON"):
            raise _Err(P.E_UNKNOWN if name not in {"IDN", "CHMAP", "CAPS", "LEDS", "STAT",
                                                   "TEMP", "ARMED", "SEQPOS"} else P.E_VERB)
        value = self._int(args[0], name)
        if name in ("TPER", "TWID", "TDLY", "TCNT"):
            self._idle_trigger()
        if name == "CRC":
            self.crc = bool(value)
        elif name == "SEQEN":
            self.seqen, self.seqpos, self.seq_lit = bool(value), 0, None
        elif name == "TCTR":
            self.counter = 0
        else:
            setattr(self, name.lower() if name != "WDT" else "wdt_ms", value)
        return args

    def _idle_trigger(self) -> None:
        if self.armed:
            raise _Err(P.E_STATE, "disarm first")

    def _step(self, token: str) -> list[int]:
        if token == "-":
            return []
        try:
            chans = [int(t) for t in token.split("+")]
        except ValueError:
            raise _Err(P.E_ARG, f"bad step {token}") from None
        if any(not 0 <= c < len(self.channels) for c in chans):
            raise _Err(P.E_CHANNEL, f"channels are 0-{len(self.channels) - 1}")
        return chans

    def _do(self, name: str, now: float) -> tuple:
        if name == "ARM":
            if not self.armed:
                self.armed, self.pulses_this_arm = True, 0
                self.next_pulse = now + self.tdly / 1e6 if self.tsrc == "INT" else None
            return ()
        if name == "DISARM":
            self.armed, self.next_pulse = False, None
            return ()
        if name == "FIRE":
            if not (self.armed and self.tsrc == "SW"):
                raise _Err(P.E_STATE, "FIRE needs TSRC SW and ARM")
            self._pulse(now + self.tdly / 1e6)
            return (self.counter,)
        if name == "SAFE":
            self._all_off()
            return ()
        if name == "HB":
            return (int((now - self.started) * 1000),)
        if name == "CLR":
            self._blocked(now)
            self.latched = 0
            return (self.flags(now),)
        raise _Err(P.E_UNKNOWN, f"unknown command {name}")
