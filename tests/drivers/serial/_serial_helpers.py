"""Helpers shared by the serial driver tests."""

from __future__ import annotations

import time
from typing import Callable

#: Driver timeouts used against the simulators: short, so fault tests stay fast, yet with
#: margin for a loaded 2-core CI machine.
FAST = {"reply_timeout": 0.25, "retries": 2, "reconnect_timeout": 2.0}


def max_call_s(reply_timeout: float = FAST["reply_timeout"], retries: int = FAST["retries"],
               reconnect_timeout: float = 0.0) -> float:
    """Upper bound of one driver call: every attempt times out, a write is verified and
    re-sent, the fail-safe runs once, plus slack for a loaded machine."""
    attempts = (retries + 1) * 2 + 2
    return attempts * reply_timeout + reconnect_timeout + 1.0


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds (bounded waits in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Timer:
    """``with Timer() as t: ...; t.elapsed``: monotonic seconds."""

    def __enter__(self) -> "Timer":
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.start
