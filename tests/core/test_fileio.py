"""Atomic writes: complete or absent, readable like a plainly written file."""

import os
import stat

import pytest

from edge.core.fileio import atomic_open, atomic_write_bytes, sha256_file


def test_atomic_write_has_plain_file_mode(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"data")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"data")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode)
    assert (tmp_path / "a.bin").read_bytes() == b"data"
    assert sha256_file(tmp_path / "a.bin") == (
        "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7")


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as fh:
            fh.write(b"new, partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bin"]
