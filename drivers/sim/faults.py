"""Fault injection for the device simulators.

A :class:`FaultPlan` decides, for each command a simulator receives, whether a fault hits it:
at random with per-kind probabilities (``rates``) and/or one-shot faults queued with
:meth:`FaultPlan.inject`.  The kinds:

==============  ===============================================================================
``delay``       the reply is sent ``delay_s`` seconds late (past the driver's reply timeout)
``drop``        1-3 random bytes of the reply are lost
``garble``      one random bit of one reply byte is flipped
``split``       the reply arrives in two pieces ``split_gap_s`` apart
``merge``       an unsolicited event line arrives glued to the reply in one chunk
``noreply``     the command is swallowed: not executed, no reply
``reset``       the device resets (power-on state, ``! BOOT`` banner); the command is lost
``disconnect``  the port disappears for ``disconnect_s`` seconds, then the device reappears
                (power-on state; under a new path when ``new_path``)
``overtemp``    over-temperature for ``hold_s`` seconds: LEDs off, LED-on refused, an event
``interlock``   interlock open for ``hold_s`` seconds: LEDs off, LED-on refused, an event
``busy``        the device answers ``busy`` without executing the command
==============  ===============================================================================

Spec strings (``hsi-edge sim-devices --faults``): comma-separated ``kind=probability`` and
``delay_s=``, ``disconnect_s=``, ``hold_s=``, ``split_gap_s=``, ``seed=``, ``new_path=0|1``,
e.g. ``"delay=0.01,drop=0.01,garble=0.01,seed=7"``.
"""

from __future__ import annotations

import collections
import random
import threading
from dataclasses import dataclass, field

from edge.errors import ConfigError

__all__ = ["FAULT_KINDS", "FaultPlan"]

FAULT_KINDS: tuple[str, ...] = ("delay", "drop", "garble", "split", "merge", "noreply", "reset",
                                "disconnect", "overtemp", "interlock", "busy")
_PARAMS = {"delay_s": (0.0, 30.0), "disconnect_s": (0.0, 30.0), "hold_s": (0.0, 60.0),
           "split_gap_s": (0.0, 5.0)}


@dataclass
class FaultPlan:
    """Which faults to inject and their parameters (see module docstring).

    Attributes
    ----------
    injected : collections.Counter
        Faults actually applied, by kind.
    """

    rates: dict[str, float] = field(default_factory=dict)
    delay_s: float = 0.4
    disconnect_s: float = 0.2
    hold_s: float = 0.2
    split_gap_s: float = 0.02
    new_path: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if kind not in FAULT_KINDS:
                raise ConfigError(f"faults: unknown kind {kind!r}; kinds are "
                                  f"{', '.join(FAULT_KINDS)}")
            if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                raise ConfigError(f"faults.{kind}: expected a probability in [0, 1], got {rate!r}")
        if sum(self.rates.values()) > 1.0:
            raise ConfigError(f"faults: probabilities add up to {sum(self.rates.values()):g} > 1")
        for name, (lo, hi) in _PARAMS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ConfigError(f"faults.{name}: expected seconds in [{lo:g}, {hi:g}], "
                                  f"got {value!r}")
        self._rng = random.Random(self.seed)
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self.injected: collections.Counter = collections.Counter()

    @classmethod
    def parse(cls, spec: str) -> "FaultPlan":
        """Build a plan from ``"kind=p,...,delay_s=0.3,seed=1"``.

        Raises
        ------
        ConfigError
            For an unknown key, a value that is not a number, or an out-of-range value.
        """
        rates: dict[str, float] = {}
        params: dict[str, object] = {}
        for item in filter(None, (s.strip() for s in (spec or "").split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"faults: expected key=value, got {item!r}")
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"faults.{key}: expected a number, got {value!r}") from None
            if key in FAULT_KINDS:
                rates[key] = number
            elif key in _PARAMS:
                params[key] = number
            elif key == "seed":
                if not (number.is_integer() and 0 <= number < 2**63):
                    raise ConfigError(f"faults.seed: expected a non-negative integer, "
                                      f"got {value!r}")
                params[key] = int(number)
            elif key == "new_path":
                if number not in (0.0, 1.0):
                    raise ConfigError(f"faults.new_path: expected 0 or 1, got {value!r}")
                params[key] = bool(number)
            else:
                raise ConfigError(f"faults: unknown key {key!r}; expected a fault kind "
                                  f"({', '.join(FAULT_KINDS)}) or one of "
                                  f"{', '.join(list(_PARAMS) + ['seed', 'new_path'])}")
        return cls(rates=rates, **params)  # type: ignore[arg-type]

    def inject(self, kind: str, count: int = 1) -> None:
        """Queue ``count`` one-shot faults of ``kind`` for the next commands."""
        if kind not in FAULT_KINDS:
            raise ConfigError(f"fault kind: expected one of {', '.join(FAULT_KINDS)}, "
                              f"got {kind!r}")
        with self._lock:
            self._queue.extend([kind] * count)

    def clear(self) -> None:
        """Drop queued one-shot faults."""
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def draw(self, supported: tuple[str, ...]) -> str | None:
        """The fault for the next command (None for none); unsupported kinds are skipped."""
        with self._lock:
            while self._queue:
                kind = self._queue.popleft()
                if kind in supported:
                    self.injected[kind] += 1
                    return kind
            if not self.rates:
                # no draw: the byte-level choices of injected faults (which byte is dropped)
                # must not depend on how many commands came before
                return None
            x = self._rng.random()
            for kind, rate in self.rates.items():
                if x < rate:
                    if kind not in supported:
                        return None
                    self.injected[kind] += 1
                    return kind
                x -= rate
            return None

    def rng(self) -> random.Random:
        return self._rng
