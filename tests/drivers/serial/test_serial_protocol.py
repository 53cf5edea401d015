"""Framing and CRC of the controller protocol (drivers/protocol.py, PROTOCOL.md)."""

from __future__ import annotations

import pytest

from drivers import protocol as P
from edge.errors import DeviceProtocolError


def test_crc_check_value():
    # CRC-16/CCITT-FALSE catalogue check value (reveng.sourceforge.io/crc-catalogue).
    assert P.crc16_ccitt_false(b"123456789") == 0x29B1
    assert P.crc16_ccitt_false(b"") == 0xFFFF


def test_encode_command_without_and_with_crc():
    assert P.encode_command("SET", "LED", (2, 1), seq=7) == b"#7 SET LED 2 1\n"
    line = P.encode_command("GET", "TEMP", crc=True)
    assert line == b"GET TEMP*%04X\n" % P.crc16_ccitt_false(b"GET TEMP")


def test_reply_round_trip_with_crc():
    line = P.encode_reply("A", "INT", (3, 500), seq=12, crc=True)
    r = P.parse_line(line, require_crc=True)
    assert (r.kind, r.seq, r.cmd, r.values, r.has_crc) == ("A", 12, "INT", ("3", "500"), True)


def test_error_reply_code_and_text():
    r = P.parse_line(b"E #4 LED 31 interlock open\r\n")
    assert (r.code, r.text, r.seq) == (31, "interlock open", 4)


def test_event_has_no_seq():
    r = P.parse_line(P.encode_reply("!", "FAULT", ("WDT",), seq=9))
    assert (r.kind, r.seq, r.cmd, r.values) == ("!", None, "FAULT", ("WDT",))


def test_bad_crc_is_rejected():
    line = bytearray(P.encode_reply("A", "INT", (3, 500), crc=True))
    line[8] ^= 0x01  # "500" -> "510"-like corruption
    with pytest.raises(DeviceProtocolError, match="CRC mismatch"):
        P.parse_line(bytes(line))


def test_missing_crc_when_required():
    with pytest.raises(DeviceProtocolError, match="CRC missing"):
        P.parse_line(b"A TEMP 35.0\n", require_crc=True)


@pytest.mark.parametrize("line, match", [
    (b"X TEMP 1\n", "starting with A, E or !"),
    (b"A\n", "no command name"),
    (b"E LED oops\n", "numeric code"),
    (b"A TEMP \xff\n", "non-ASCII"),
    (b"A #x TEMP\n", "sequence number"),
    (b"A TEMP*12\n", "malformed CRC"),
])
def test_malformed_lines(line, match):
    with pytest.raises(DeviceProtocolError, match=match):
        P.parse_line(line)


def test_encode_rejects_bad_tokens():
    with pytest.raises(DeviceProtocolError, match="verb: expected one of GET, SET, DO"):
        P.encode_command("PUT", "LED")
    with pytest.raises(DeviceProtocolError, match="argument: expected a printable ASCII token"):
        P.encode_command("SET", "LED", ("1 2",))


def test_parse_command_reports_device_error_codes():
    assert P.parse_command(b"#3 SET INT 1 20\n").args == ("1", "20")
    with pytest.raises(DeviceProtocolError) as info:
        P.parse_command(b"GET TEMP*0000\n")
    assert info.value.code == P.E_CRC
    with pytest.raises(DeviceProtocolError) as info:
        P.parse_command(b"#5 FROB\n")
    assert (info.value.code, info.value.seq) == (P.E_SYNTAX, 5)
