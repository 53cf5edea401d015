"""TIVITA, ENVI and NPZ/NPY readers and writers (drivers.formats)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.formats import (
    read_envi, read_envi_header, read_npy_stack, read_npz_frame, read_tivita_cube, write_envi,
    write_npz_frame, write_tivita_cube,
)
from drivers.formats._io import atomic_open
from edge.errors import DataFormatError


def _cube(shape=(6, 5, 4), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(0.5, 0.3, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 5000), shape).astype(dtype)


# -- TIVITA -------------------------------------------------------------------------------------
def test_tivita_byte_exact_orientation(tmp_path):
    """cube[r, c, b] == stored[c, rows-1-r, b] at the byte level (FACTS.md)."""
    rows, cols, bands = 7, 9, 5
    cube = _cube((rows, cols, bands))
    path = tmp_path / "x_SpecCube.dat"
    write_tivita_cube(path, cube)
    raw = path.read_bytes()
    assert len(raw) == 12 + rows * cols * bands * 4
    assert np.frombuffer(raw[:12], ">i4").tolist() == [cols, rows, bands]
    for r, c, b in [(0, 0, 0), (rows - 1, 0, 2), (0, cols - 1, bands - 1), (3, 4, 1),
                    (rows - 1, cols - 1, bands - 1)]:
        # Stored C order over (cols, rows, bands): element (c, rows-1-r, b).
        offset = 12 + 4 * ((c * rows + (rows - 1 - r)) * bands + b)
        value = np.frombuffer(raw[offset:offset + 4], ">f4")[0]
        assert value == cube[r, c, b], (r, c, b)
    back, wl = read_tivita_cube(path)
    assert back.dtype == np.float32 and back.flags.c_contiguous
    np.testing.assert_array_equal(back, cube)
    np.testing.assert_allclose(wl, np.linspace(500, 1000, bands), rtol=0, atol=0)


def test_tivita_full_size_wavelengths(tmp_path):
    """A header of (640, 480, 100) gives (480, 640, 100) and the 5.0505 nm grid."""
    path = tmp_path / "full.dat"
    header = np.array([640, 480, 100], ">i4").tobytes()
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(122_880_012)  # zeros, sparse: no 120 MB write
    cube, wl = read_tivita_cube(path)
    assert cube.shape == (480, 640, 100)
    assert wl[1] - wl[0] == pytest.approx(500 / 99, rel=1e-12)


def test_tivita_keeps_nonfinite(tmp_path):
    cube = _cube()
    cube[1, 2, 3] = np.nan
    cube[0, 0, 0] = np.inf
    write_tivita_cube(tmp_path / "a.dat", cube)
    back, _ = read_tivita_cube(tmp_path / "a.dat")
    np.testing.assert_array_equal(back, cube)  # NaN positions compare equal


def test_tivita_truncated(tmp_path):
    path = tmp_path / "t.dat"
    write_tivita_cube(path, _cube())
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(DataFormatError, match=rf"t\.dat: truncated TIVITA cube.*needs "
                       rf"{len(data)} bytes, file has {len(data) - 5} bytes"):
        read_tivita_cube(path)


def test_tivita_oversized(tmp_path):
    path = tmp_path / "o.dat"
    write_tivita_cube(path, _cube())
    with open(path, "ab") as fh:
        fh.write(b"\0" * 4)
    with pytest.raises(DataFormatError, match="oversized TIVITA cube"):
        read_tivita_cube(path)


def test_tivita_bad_header(tmp_path):
    path = tmp_path / "h.dat"
    path.write_bytes(np.array([640, 0, 100], ">i4").tobytes())
    with pytest.raises(DataFormatError, match=r"bad TIVITA header.*\(640, 0, 100\)"):
        read_tivita_cube(path)
    # Little-endian header (a common mistake) gives absurd dims -> size mismatch.
    path.write_bytes(np.array([5, 6, 4], "<i4").tobytes() + b"\0" * (5 * 6 * 4 * 4))
    with pytest.raises(DataFormatError, match=r"h\.dat: (bad TIVITA header|oversized|truncated)"):
        read_tivita_cube(path)
    path.write_bytes(b"\0\0\0")
    with pytest.raises(DataFormatError, match="expected a 12-byte header.*file has 3 bytes"):
        read_tivita_cube(path)


def test_tivita_writer_rejects_non_float32(tmp_path):
    with pytest.raises(DataFormatError, match="TIVITA files hold float32"):
        write_tivita_cube(tmp_path / "u.dat", _cube(dtype=np.uint16))
    assert not list(tmp_path.iterdir())


# -- ENVI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("byte_order", [0, 1])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64,
                                   np.uint16])
def test_envi_round_trip(tmp_path, interleave, byte_order, dtype):
    cube = _cube((4, 7, 3), dtype)
    wl = np.array([500.25, 612.5, 987.123456789])
    write_envi(tmp_path / "c.hdr", cube, wl, interleave=interleave, byte_order=byte_order,
               header_offset=16)
    back, wl_back = read_envi(tmp_path / "c.hdr")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, cube)
    np.testing.assert_array_equal(wl_back, wl)
    # The data file path also works.
    back2, _ = read_envi(tmp_path / "c.img")
    np.testing.assert_array_equal(back2, cube)


def test_envi_interleave_layout(tmp_path):
    """BIL stores line-by-line, band-by-band: element (r, c, b) at ((r*bands)+b)*cols + c."""
    cube = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    write_envi(tmp_path / "l.hdr", cube, interleave="bil")
    raw = np.fromfile(tmp_path / "l.img", "<u2")
    r, c, b = 1, 2, 3
    assert raw[(r * 4 + b) * 3 + c] == cube[r, c, b]


def _hdr(tmp_path, text, data_bytes=2 * 3 * 4 * 2):
    (tmp_path / "m.hdr").write_text(text)
    (tmp_path / "m.img").write_bytes(b"\0" * data_bytes)
    return tmp_path / "m.hdr"


GOOD = ("ENVI\nsamples = 3\nlines = 2\nbands = 4\nheader offset = 0\ndata type = 12\n"
        "interleave = bsq\nbyte order = 0\n")


def test_envi_micrometers_and_multiline(tmp_path):
    path = _hdr(tmp_path, GOOD + "wavelength units = Micrometers\nwavelength = {\n 0.5, 0.6,\n"
                "0.7, 0.8}\ndescription = {a = b\n c}\n")
    cube, wl = read_envi(path)
    np.testing.assert_allclose(wl, [500, 600, 700, 800], rtol=1e-15)
    assert cube.shape == (2, 3, 4)
    assert read_envi_header(path)["description"] == "a = b\n c"


def test_envi_without_wavelengths(tmp_path):
    _, wl = read_envi(_hdr(tmp_path, GOOD))
    assert wl is None


@pytest.mark.parametrize("change, match", [
    (("samples = 3\n", ""), "missing required key 'samples'"),
    (("data type = 12", "data type = 7"), r"'data type': expected one of \[1, 2, 3, 4, 5, 12\], got 7"),
    (("interleave = bsq", "interleave = xyz"), "'interleave': expected one of bsq, bil, bip, got 'xyz'"),
    (("byte order = 0", "byte order = 2"), "'byte order': expected 0 .* got 2"),
    (("lines = 2", "lines = two"), "'lines': expected an integer, got 'two'"),
    (("bands = 4", "bands = 0"), "'bands': expected >= 1, got 0"),
    (("ENVI\n", "NOTENVI\n"), "not an ENVI header"),
])
def test_envi_malformed_header(tmp_path, change, match):
    path = _hdr(tmp_path, GOOD.replace(*change))
    with pytest.raises(DataFormatError, match=match):
        read_envi(path)


@pytest.mark.parametrize("extra, match", [
    ("wavelength = {500, 600}\n", "'wavelength': expected 4 values .*got 2"),
    ("wavelength = {500, 600, x, 700}\n", "'wavelength': expected comma-separated numbers"),
    ("wavelength units = Furlongs\nwavelength = {1,2,3,4}\n", "'wavelength units'.*'Furlongs'"),
    ("wavelength = {500, 600,\n", "'wavelength'.*without closing"),
])
def test_envi_malformed_wavelengths(tmp_path, extra, match):
    with pytest.raises(DataFormatError, match=match):
        read_envi(_hdr(tmp_path, GOOD + extra))


def test_envi_size_mismatch_and_missing_data(tmp_path):
    path = _hdr(tmp_path, GOOD, data_bytes=47)
    with pytest.raises(DataFormatError, match=r"truncated ENVI data file.*needs 48 bytes, file has 47"):
        read_envi(path)
    (tmp_path / "m.img").unlink()
    with pytest.raises(DataFormatError, match="no ENVI data file next to the header"):
        read_envi(path)
    with pytest.raises(DataFormatError, match="no ENVI header found"):
        read_envi(tmp_path / "nothing.img")


def test_envi_writer_rejects_bad_input(tmp_path):
    with pytest.raises(DataFormatError, match="ENVI data types are"):
        write_envi(tmp_path / "b.hdr", np.zeros((2, 2, 2), np.complex64))
    with pytest.raises(DataFormatError, match="interleave: expected one of bsq, bil, bip"):
        write_envi(tmp_path / "b.hdr", np.zeros((2, 2, 2), np.uint16), interleave="bxx")
    with pytest.raises(DataFormatError, match="wavelengths: expected 2 values"):
        write_envi(tmp_path / "b.hdr", np.zeros((2, 2, 2), np.uint16), [500.0])


# -- NPZ / NPY ----------------------------------------------------------------------------------
def test_npz_frame_round_trip(tmp_path):
    cube = _cube(dtype=np.uint16)
    meta = {"frame_id": 3, "exposure_us": 1234.5, "serials": {"camera": "X"}}
    truth = {"classes": np.arange(30, dtype=np.uint8).reshape(6, 5)}
    write_npz_frame(tmp_path / "f.npz", cube, [500, 600, 700, 800], meta, truth)
    c, wl, m, t = read_npz_frame(tmp_path / "f.npz")
    np.testing.assert_array_equal(c, cube)
    assert c.dtype == np.uint16 and wl.dtype == np.float64
    assert m == meta
    np.testing.assert_array_equal(t["classes"], truth["classes"])


def test_npz_frame_errors(tmp_path):
    np.savez(tmp_path / "nocube.npz", wavelengths=np.arange(3.0))
    with pytest.raises(DataFormatError, match="no 'cube' array"):
        read_npz_frame(tmp_path / "nocube.npz")
    np.savez(tmp_path / "badmeta.npz", cube=np.zeros((1, 1, 1), np.float32), meta=np.array("{x"))
    with pytest.raises(DataFormatError, match="'meta': expected a JSON object"):
        read_npz_frame(tmp_path / "badmeta.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="junk.npz: cannot read NPZ frame"):
        read_npz_frame(tmp_path / "junk.npz")


def test_npy_stack_and_sidecars(tmp_path):
    stack = _cube((3, 2, 2, 4), np.uint16)
    np.save(tmp_path / "seq.npy", stack)
    with pytest.raises(DataFormatError, match="no wavelengths: put them in seq.wavelengths.npy"):
        read_npy_stack(tmp_path / "seq.npy")
    np.savetxt(tmp_path / "seq.wavelengths.txt", [500, 600, 700, 800])
    s, wl = read_npy_stack(tmp_path / "seq.npy")
    np.testing.assert_array_equal(s, stack)
    np.testing.assert_array_equal(wl, [500, 600, 700, 800])
    np.save(tmp_path / "bad.npy", np.zeros((2, 2)))
    with pytest.raises(DataFormatError, match=r"expected shape \(n, rows, cols, bands\)"):
        read_npy_stack(tmp_path / "bad.npy", wavelengths=[500.0])


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_open(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write(b"new but partial")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"


def test_envi_header_with_byte_order_mark(tmp_path):
    (tmp_path / "m.hdr").write_text("\ufeff" + GOOD, encoding="utf-8")
    (tmp_path / "m.img").write_bytes(b"\0" * 48)
    cube, _ = read_envi(tmp_path / "m.hdr")
    assert cube.shape == (2, 3, 4)


def test_envi_duplicate_core_key_is_refused(tmp_path):
    with pytest.raises(DataFormatError, match=r"ENVI key 'byte order' appears twice with "
                                              r"different values \('0' and '1'\)"):
        read_envi(_hdr(tmp_path, GOOD + "byte order = 1\n"))
    # a repeated harmless key, or the same value twice, is accepted
    cube, _ = read_envi(_hdr(tmp_path, GOOD + "bands = 4\ndescription = {x}\n"
                             "description = {y}\n"))
    assert cube.shape == (2, 3, 4)
