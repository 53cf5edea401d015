"""Parsing values out of serial device replies: every malformed value is a
:class:`~edge.errors.DeviceProtocolError` naming the reply (issue 15: ``INT`` without a value
escaped as an IndexError, ``MAXINT=lots`` as a ValueError, an empty ``CHMAP`` was accepted).

Shared by both serial protocols (:mod:`drivers.hsi_connection`, :mod:`drivers.lumencor`);
re-exported by :mod:`drivers.serial_link`.
"""

from __future__ import annotations

import math
from typing import Sequence

from edge.errors import DeviceProtocolError

__all__ = ["reply_int", "reply_float", "reply_flag", "reply_names"]


def _shown(cmd: str, values: Sequence[str]) -> str:
    return " ".join((cmd, *values))


def reply_int(cmd: str, values: Sequence[str], index: int = 0, *, lo: int = 0,
              hi: int = 2**32 - 1) -> int:
    """``values[index]`` of the reply to ``cmd`` as an integer in ``[lo, hi]``.

    Raises
    ------
    DeviceProtocolError
        If the value is missing, not a decimal integer or out of range (names the reply).
    """
    if index >= len(values):
        raise DeviceProtocolError(f"malformed reply {_shown(cmd, values)!r}: value "
                                  f"{index + 1} missing (expected an integer {lo}-{hi})")
    token = values[index]
    text = token[1:] if token.startswith("-") else token
    if not (text.isascii() and text.isdigit()) or not lo <= int(token) <= hi:
        raise DeviceProtocolError(f"malformed reply {_shown(cmd, values)!r}: value "
                                  f"{index + 1} is {token!r}, expected an integer {lo}-{hi}")
    return int(token)


def reply_float(cmd: str, values: Sequence[str], index: int = 0) -> float:
    """``values[index]`` of the reply to ``cmd`` as a finite float (DeviceProtocolError
    naming the reply otherwise)."""
    try:
        value = float(values[index])
        if not math.isfinite(value):
            raise ValueError
    except (IndexError, ValueError):
        got = repr(values[index]) if index < len(values) else "missing"
        raise DeviceProtocolError(f"malformed reply {_shown(cmd, values)!r}: value {index + 1} "
                                  f"is {got}, expected a number") from None
    return value


def reply_flag(cmd: str, values: Sequence[str], index: int = 0) -> bool:
    """``values[index]`` of the reply to ``cmd`` as ``0``/``1`` -> bool."""
    return bool(reply_int(cmd, values, index, lo=0, hi=1))


def reply_names(cmd: str, values: Sequence[str], *, count: int | None = None) -> tuple[str, ...]:
    """Channel names of a ``CHMAP`` reply: at least one, unique (case-insensitively), and
    ``count`` of them when the device said how many."""
    names = tuple(values)
    folded = [n.casefold() for n in names]
    if not names or len(set(folded)) != len(folded) or (count is not None
                                                         and len(names) != count):
        want = f"{count} unique channel names" if count is not None else \
            "at least one channel name, all different"
        raise DeviceProtocolError(f"malformed reply {_shown(cmd, values)!r}: expected {want}")
    return names
