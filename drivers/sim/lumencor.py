"""Simulated Lumencor light engine (SPECTRA III / CELESTA text protocol, FACTS.md).

``GET|SET <CMD> [args]\\n`` -> ``A <CMD> [values]\\r\\n`` or ``E <CMD> <code>\\r\\n``.
Commands: ``GET VER|MODEL|SN|NUMCH|CHMAP|MAXINT|TEMP|STAT``, ``SET CH <ch> 0|1``,
``GET CHACT <ch>``, ``SET CHINT <ch> <0..MAXINT>``, ``GET CHINT <ch>``,
``SET TTLENABLE 0|1``, ``SET TTLPOL POS|NEG``.  STAT codes: 0 ok, 1 fan, 2 high temperature,
4 safety lock (interlock), 6 standby, 7 warming up.  Error codes 51 invalid channel, 52 syntax
(third-party lists).  Simulator assumptions, not verified on hardware: replies to ``SET`` echo
the arguments, channels are numbered 0..NUMCH-1, and a channel switched on during a fault is
refused with ``E CH 50``.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

__all__ = ["LumencorModel", "LUMENCOR_CHANNELS"]

LUMENCOR_CHANNELS = ("VIOLET", "BLUE", "CYAN", "TEAL", "GREEN", "YELLOW", "RED", "NIR")
STAT_OK, STAT_HIGH_TEMP, STAT_SAFETY_LOCK = 0, 2, 4


class LumencorModel:
    """State machine of one Lumencor-style light engine (see module docstring)."""

    supported_faults = ("delay", "drop", "garble", "split", "noreply", "disconnect",
                        "overtemp", "interlock")
    terminator = b"\r\n"

    def __init__(self, *, serial: str = "LUM0001", model: str = "SPECTRA-III",
                 channels: Sequence[str] = LUMENCOR_CHANNELS, max_intensity: int = 1000,
                 on_led_change: Callable[[dict], None] | None = None) -> None:
        self.serial, self.model, self.channels = serial, model, tuple(channels)
        self.max_intensity = max_intensity
        self.on_led_change = on_led_change
        self.boots = 0
        self.reset(time.monotonic())

    def reset(self, now: float) -> list[bytes]:
        n = len(self.channels)
        self.active, self.intensity = [False] * n, [self.max_intensity] * n
        self.ttl_enable, self.ttl_pol = 0, "POS"
        self.fault_until = {"overtemp": 0.0, "interlock": 0.0}
        self.first_command = True  # the first command after power-up may fail (FACTS.md)
        self.boots += 1
        return []

    def led_state(self) -> dict[str, float]:
        return {name: (self.intensity[i] / self.max_intensity if self.active[i] else 0.0)
                for i, name in enumerate(self.channels)}

    def stat(self, now: float) -> int:
        if now < self.fault_until["interlock"]:
            return STAT_SAFETY_LOCK
        return STAT_HIGH_TEMP if now < self.fault_until["overtemp"] else STAT_OK

    def trip(self, kind: str, now: float, hold_s: float = 0.3) -> list[bytes]:
        self.fault_until[kind] = now + hold_s
        self.active = [False] * len(self.channels)
        self._notify()
        return []

    def _notify(self) -> None:
        if self.on_led_change is not None:
            self.on_led_change(self.led_state())

    def next_due(self, now: float) -> float | None:
        return None

    def tick(self, now: float) -> list[bytes]:
        return []

    def handle(self, line: bytes, now: float) -> list[bytes]:
        tokens = line.decode("ascii", "replace").split()
        if not tokens:
            self.first_command = False  # an empty line absorbs the power-up glitch
            return []
        if self.first_command:
            self.first_command = False
            return [b"E " + tokens[-1].encode("ascii", "replace") + b" 52\r\n"]
        verb, args = tokens[0], tokens[1:]
        if verb not in ("GET", "SET") or not args:
            return [f"E {tokens[0]} 52\r\n".encode("ascii", "replace")]
        cmd, args = args[0], args[1:]
        try:
            values = self._get(cmd, args, now) if verb == "GET" else self._set(cmd, args, now)
        except _Err as err:
            return [f"E {cmd} {err.code}\r\n".encode("ascii", "replace")]
        return [(" ".join(["A", cmd] + [str(v) for v in values]) + "\r\n").encode()]

    def _ch(self, args: list, need: int) -> int:
        if len(args) != need:
            raise _Err(52)
        if not args[0].isdigit() or int(args[0]) >= len(self.channels):
            raise _Err(51)
        return int(args[0])

    def _get(self, cmd: str, args: list, now: float) -> tuple:
        simple = {"VER": ("1.0.0-sim",), "MODEL": (self.model,), "SN": (self.serial,),
                  "NUMCH": (len(self.channels),), "CHMAP": self.channels,
                  "MAXINT": (self.max_intensity,), "STAT": (self.stat(now),),
                  "TEMP": ("65.0" if now < self.fault_until["overtemp"] else "31.5",),
                  "TTLENABLE": (self.ttl_enable,), "TTLPOL": (self.ttl_pol,)}
        if cmd in simple and not args:
            return simple[cmd]
        if cmd == "CHACT":
            ch = self._ch(args, 1)
            return (ch, int(self.active[ch]))
        if cmd == "CHINT":
            ch = self._ch(args, 1)
            return (ch, self.intensity[ch])
        raise _Err(52)

    def _set(self, cmd: str, args: list, now: float) -> tuple:
        if cmd == "CH":
            ch = self._ch(args, 2)
            if args[1] not in ("0", "1"):
                raise _Err(52)
            if args[1] == "1" and self.stat(now) in (STAT_HIGH_TEMP, STAT_SAFETY_LOCK):
                raise _Err(50)
            self.active[ch] = args[1] == "1"
        elif cmd == "CHINT":
            ch = self._ch(args, 2)
            if not args[1].isdigit() or int(args[1]) > self.max_intensity:
                raise _Err(52)
            self.intensity[ch] = int(args[1])
        elif cmd == "TTLENABLE" and args in (["0"], ["1"]):
            self.ttl_enable = int(args[0])
        elif cmd == "TTLPOL" and args in (["POS"], ["NEG"]):
            self.ttl_pol = args[0]
        else:
            raise _Err(52)
        self._notify()
        return tuple(args)


class _Err(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code
