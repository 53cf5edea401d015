"""Line framing and CRC of the hsi-edge trigger/illumination controller protocol.

The protocol is specified for firmware authors in ``drivers/PROTOCOL.md``; this module is its
single implementation of framing, shared by the driver (:mod:`drivers.trigger`) and the
simulator (:mod:`drivers.sim.controller`)::

    command   [#seq ]VERB CMD[ args][*CRC16]\\n        VERB in GET, SET, DO
    reply     A[ #seq] CMD[ values][*CRC16]\\n
    error     E[ #seq] CMD code text[*CRC16]\\n
    event     ! KIND[ values][*CRC16]\\n

CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0; check value of
``b"123456789"`` is 0x29B1) over every byte before the ``*``, written as 4 upper-case hex
digits.  The CRC is optional and switched on per connection with ``SET CRC 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import DeviceProtocolError

__all__ = [
    "crc16_ccitt_false", "encode_command", "encode_reply", "parse_line", "parse_command",
    "Command", "Reply", "ERROR_CODES", "E_UNKNOWN", "E_SYNTAX", "E_ARG", "E_CHANNEL",
    "E_VERB", "E_CRC", "E_CRC_REQUIRED", "E_BUSY", "E_INTERLOCK", "E_OVERTEMP", "E_STATE",
    "STATUS_FLAGS", "MAX_LINE", "PROTOCOL_VERSION", "VENDOR", "MODEL",
]

#: Identity the driver expects in ``A IDN <vendor> <model> <serial> <firmware> <protocol>``.
VENDOR = "HSIEDGE"
MODEL = "TIC-1"
#: Major protocol version; the driver refuses a device with another major version.
PROTOCOL_VERSION = 1
#: Longest line (bytes, terminator included) either side may send.
MAX_LINE = 256

E_UNKNOWN, E_SYNTAX, E_ARG, E_CHANNEL, E_VERB = 10, 11, 12, 13, 14
E_CRC, E_CRC_REQUIRED = 20, 21
E_BUSY, E_INTERLOCK, E_OVERTEMP, E_STATE = 30, 31, 32, 33
#: Error codes of ``E`` replies and their meaning (PROTOCOL.md, "Errors").
ERROR_CODES: dict[int, str] = {
    E_UNKNOWN: "unknown command", E_SYNTAX: "syntax error", E_ARG: "bad argument",
    E_CHANNEL: "bad channel", E_VERB: "verb not allowed for this command",
    E_CRC: "CRC mismatch", E_CRC_REQUIRED: "CRC required",
    E_BUSY: "busy", E_INTERLOCK: "interlock open", E_OVERTEMP: "over-temperature",
    E_STATE: "not allowed in the current state",
}
#: Bits of ``A STAT <flags>``.
STATUS_FLAGS: dict[int, str] = {
    1: "overtemp", 2: "interlock", 4: "watchdog_tripped", 8: "maxon_tripped",
    16: "armed", 32: "sequence",
}

_VERBS = ("GET", "SET", "DO")


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _make_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (poly 0x1021, init 0xFFFF, no reflection, xorout 0)."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _frame(body: str, crc: bool) -> bytes:
    raw = body.encode("ascii")
    if crc:
        raw += b"*%04X" % crc16_ccitt_false(raw)
    return raw + b"\n"


def _check_token(name: str, token: object) -> str:
    text = str(token)
    if not text or any(c in text for c in " *#\r\n") or not text.isascii():
        raise DeviceProtocolError(
            f"{name}: expected a printable ASCII token without spaces, '*' or '#', got {text!r}")
    return text


def encode_command(verb: str, cmd: str, args: tuple | list = (), *, seq: int | None = None,
                   crc: bool = False) -> bytes:
    """Frame one command line, e.g. ``encode_command("SET", "LED", (2, 1), seq=7)``.

    Returns ``b"#7 SET LED 2 1\\n"`` (with ``*XXXX`` before the newline when ``crc``).
    """
    if verb not in _VERBS:
        raise DeviceProtocolError(f"verb: expected one of {', '.join(_VERBS)}, got {verb!r}")
    parts = [] if seq is None else [f"#{int(seq)}"]
    parts += [verb, _check_token("cmd", cmd)] + [_check_token("argument", a) for a in args]
    return _frame(" ".join(parts), crc)


def encode_reply(kind: str, cmd: str, values: tuple | list = (), *, seq: int | None = None,
                 crc: bool = False) -> bytes:
    """Frame a reply (``kind`` ``"A"`` or ``"E"``) or an event (``kind`` ``"!"``)."""
    parts = [kind] + ([] if seq is None or kind == "!" else [f"#{int(seq)}"])
    parts += [cmd] + [str(v) for v in values]
    return _frame(" ".join(parts), crc)


@dataclass(frozen=True)
class Reply:
    """One received line: ``kind`` is ``"A"`` (ok), ``"E"`` (error) or ``"!"`` (event)."""

    kind: str
    seq: int | None
    cmd: str
    values: tuple[str, ...]
    has_crc: bool
    raw: bytes

    @property
    def code(self) -> int | None:
        """The error code of an ``E`` reply (None for others or a malformed code)."""
        if self.kind != "E" or not self.values or not self.values[0].isdigit():
            return None
        return int(self.values[0])

    @property
    def text(self) -> str:
        return " ".join(self.values[1:] if self.kind == "E" else self.values)


@dataclass(frozen=True)
class Command:
    """One received command line (simulator side)."""

    seq: int | None
    verb: str
    cmd: str
    args: tuple[str, ...]
    has_crc: bool


def _split_crc(line: bytes, require_crc: bool) -> tuple[bytes, bool]:
    """Strip the terminator and verify an optional ``*XXXX`` CRC; returns (body, had_crc)."""
    body = line[:-1] if line.endswith(b"\n") else line
    if body.endswith(b"\r"):
        body = body[:-1]
    star = body.rfind(b"*")
    if star < 0:
        if require_crc:
            raise DeviceProtocolError(f"CRC missing on line {line!r}")
        return body, False
    digits = body[star + 1:]
    body = body[:star]
    try:
        if len(digits) != 4:
            raise ValueError
        got = int(digits, 16)
    except ValueError:
        raise DeviceProtocolError(f"malformed CRC field {digits!r} on line {line!r}") from None
    want = crc16_ccitt_false(body)
    if got != want:
        raise DeviceProtocolError(
            f"CRC mismatch on line {line!r}: got {got:04X}, computed {want:04X}")
    return body, True


def _ascii(body: bytes, line: bytes) -> str:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise DeviceProtocolError(f"non-ASCII bytes in line {line!r}") from None
    if any(not c.isprintable() for c in text):
        raise DeviceProtocolError(f"control characters in line {line!r}")
    return text


def _take_seq(tokens: list[str], line: bytes) -> int | None:
    if tokens and tokens[0].startswith("#"):
        digits = tokens.pop(0)[1:]
        if not digits.isdigit() or int(digits) > 0xFFFF:
            raise DeviceProtocolError(f"bad sequence number in line {line!r}")
        return int(digits)
    return None


def parse_line(line: bytes, *, require_crc: bool = False) -> Reply:
    """Parse one device line (reply or event).

    Raises
    ------
    DeviceProtocolError
        On a bad CRC (or a missing one with ``require_crc``), non-ASCII bytes, or a line that
        is not ``A``/``E``/``!`` followed by a command name.
    """
    body, had_crc = _split_crc(line, require_crc)
    tokens = _ascii(body, line).split()
    if not tokens or tokens[0] not in ("A", "E", "!"):
        raise DeviceProtocolError(f"expected a line starting with A, E or !, got {line!r}")
    kind = tokens.pop(0)
    seq = _take_seq(tokens, line) if kind != "!" else None
    if not tokens:
        raise DeviceProtocolError(f"no command name in line {line!r}")
    cmd = tokens.pop(0)
    if kind == "E" and (not tokens or not tokens[0].isdigit()):
        raise DeviceProtocolError(f"error reply without a numeric code: {line!r}")
    return Reply(kind, seq, cmd, tuple(tokens), had_crc, bytes(line))


def parse_command(line: bytes) -> Command:
    """Parse one host command line (simulator side); the CRC, when present, is verified.

    Raises
    ------
    DeviceProtocolError
        With ``.code`` set to the error code the device should answer (E_CRC, E_SYNTAX).
    """
    try:
        body, had_crc = _split_crc(line, False)
        tokens = _ascii(body, line).split()
        seq = _take_seq(tokens, line)
    except DeviceProtocolError as exc:
        exc.code = E_CRC if "CRC" in str(exc) else E_SYNTAX  # type: ignore[attr-defined]
        raise
    if len(tokens) < 2 or tokens[0] not in _VERBS:
        exc = DeviceProtocolError(f"expected [#seq] GET|SET|DO CMD [args], got {line!r}")
        exc.code = E_SYNTAX  # type: ignore[attr-defined]
        exc.seq = seq  # type: ignore[attr-defined]
        raise exc
    return Command(seq, tokens[0], tokens[1].upper(), tuple(tokens[2:]), had_crc)
