"""ENVI cubes: a text header ``NAME.hdr`` plus a raw binary file.

Supported header keys (case-insensitive; values in ``{...}`` may span lines):
``samples`` (cols), ``lines`` (rows), ``bands``, ``data type`` (1 uint8, 2 int16, 3 int32,
4 float32, 5 float64, 12 uint16), ``interleave`` (bsq: bands x lines x samples, bil: lines x
bands x samples, bip: lines x samples x bands), ``byte order`` (0 little-, 1 big-endian;
default 0), ``header offset`` (bytes before the data; default 0), ``wavelength = {...}``,
``fwhm = {...}`` (band full width at half maximum, one per band, same units as ``wavelength``)
and ``wavelength units`` (Nanometers by default; Micrometers are converted to nm).  Other keys
are kept as strings.  Header keys follow the ENVI header specification
(https://www.nv5geospatialsoftware.com/docs/ENVIHeaderFiles.html).  The binary file is found
next to the header as ``NAME``, ``NAME.img``, ``NAME.raw``, ``NAME.dat`` or ``NAME.<interleave>``.

The reader returns ``(rows, cols, bands)`` in the stored data type and native byte order.

Spectral Python (SPy, ``spectral.io``) does the binary layout (its BSQ/BIL/BIP memory maps
read the cube, ``interleave_transpose`` lays it out for writing) and formats the header
(``write_envi_header``).  hsi-edge keeps its own header parser, because SPy's reads a header
with a byte-order mark as "not ENVI", silently takes the last of two different values of a
key, requires ``byte order`` and raises errors that do not name the key; and it adds the checks
on top: exact file size before reading, at most ``checks.MAX_BANDS`` bands, finite
wavelengths and FWHM, atomic writes (data first, header last) and a header offset on writing.
ENVI files carry no checksum: a flipped bit in the data cannot be detected.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from drivers.formats._io import atomic_open
from drivers.formats.checks import check_band_count
from edge.errors import DataFormatError

__all__ = ["read_envi", "read_envi_header", "write_envi", "envi_data_file", "envi_header_file",
           "ENVI_DTYPES"]

#: ENVI ``data type`` code -> numpy dtype (native-endian base type).
ENVI_DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.int16), 3: np.dtype(np.int32),
               4: np.dtype(np.float32), 5: np.dtype(np.float64), 12: np.dtype(np.uint16)}
_CODE_OF = {v: k for k, v in ENVI_DTYPES.items()}
_INTERLEAVES = ("bsq", "bil", "bip")
_DATA_SUFFIXES = ("", ".img", ".raw", ".dat", ".bsq", ".bil", ".bip")
# Keys that decide how the bytes are read: a duplicate with another value is an error
_CORE_KEYS = {"samples", "lines", "bands", "header offset", "byte order", "data type",
              "interleave", "wavelength", "wavelength units", "fwhm"}
_UM_UNITS = {"micrometers", "micrometer", "microns", "micron", "um", "µm"}
_NM_UNITS = {"nanometers", "nanometer", "nm"}


def read_envi_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse an ENVI header into a dict with validated, typed core keys.

    Returns
    -------
    dict
        ``samples``, ``lines``, ``bands``, ``header offset``, ``byte order`` (int),
        ``data type`` (int), ``interleave`` (str), ``wavelength`` (ndarray of shape (bands,),
        float64 nm, or None), ``fwhm`` (ndarray of shape (bands,), float64 nm, each finite and
        > 0, or None) and any other key as its raw string (brace lists without the braces).

    Raises
    ------
    DataFormatError
        If the first line is not ``ENVI``, a required key is missing or a value is invalid;
        the message names the file and the key.
    """
    path = Path(path)
    try:
        # utf-8-sig: headers saved by Windows editors start with a byte-order mark
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read ENVI header: {exc.strerror}") from exc
    if not text.lstrip().startswith("ENVI"):
        raise DataFormatError(f"{path}: not an ENVI header: first line must be 'ENVI'")
    raw: dict[str, str] = {}
    body = text.lstrip()[4:]
    # key = value, where a value starting with '{' runs to the matching '}' across lines.
    for m in re.finditer(r"^[ \t]*([^=\n]+?)[ \t]*=[ \t]*(\{[^}]*\}|[^\n]*)", body, re.M):
        key, value = m.group(1).strip().lower(), m.group(2).strip()
        if value.startswith("{"):
            if not value.endswith("}"):
                raise DataFormatError(f"{path}: ENVI key {key!r}: '{{' without closing '}}'")
            value = value[1:-1].strip()
        if key in _CORE_KEYS and key in raw and raw[key] != value:
            # which one a reader uses differs between tools: refuse rather than guess
            raise DataFormatError(f"{path}: ENVI key {key!r} appears twice with different "
                                  f"values ({raw[key]!r} and {value!r})"[:300])
        raw[key] = value
    if "{" in re.sub(r"\{[^}]*\}", "", body):
        raise DataFormatError(f"{path}: ENVI header has a '{{' without closing '}}'")

    def integer(key: str, default: int | None = None, lo: int = 0) -> int:
        if key not in raw:
            if default is None:
                raise DataFormatError(f"{path}: ENVI header is missing required key {key!r}")
            return default
        try:
            value = int(raw[key])
        except ValueError:
            raise DataFormatError(
                f"{path}: ENVI key {key!r}: expected an integer, got {raw[key]!r}") from None
        if value < lo:
            raise DataFormatError(f"{path}: ENVI key {key!r}: expected >= {lo}, got {value}")
        return value

    hdr: dict[str, Any] = dict(raw)
    for key in ("samples", "lines", "bands"):
        hdr[key] = integer(key, lo=1)
    hdr["header offset"] = integer("header offset", 0)
    hdr["byte order"] = integer("byte order", 0)
    if hdr["byte order"] not in (0, 1):
        raise DataFormatError(
            f"{path}: ENVI key 'byte order': expected 0 (little) or 1 (big), got {hdr['byte order']}")
    hdr["data type"] = integer("data type")
    if hdr["data type"] not in ENVI_DTYPES:
        raise DataFormatError(
            f"{path}: ENVI key 'data type': expected one of {sorted(ENVI_DTYPES)}, got "
            f"{hdr['data type']}")
    interleave = raw.get("interleave", "").lower()
    if interleave not in _INTERLEAVES:
        raise DataFormatError(
            f"{path}: ENVI key 'interleave': expected one of bsq, bil, bip, got {interleave!r}")
    hdr["interleave"] = interleave
    check_band_count(hdr["bands"], str(path), "ENVI key 'bands'")
    hdr["wavelength"] = _parse_band_list(path, raw, "wavelength", hdr["bands"])
    if hdr["wavelength"] is not None and not np.all(np.isfinite(hdr["wavelength"])):
        i = int(np.flatnonzero(~np.isfinite(hdr["wavelength"]))[0])
        raise DataFormatError(f"{path}: ENVI key 'wavelength': expected finite band centres, "
                              f"got {hdr['wavelength'][i]:g} for band {i}")
    hdr["fwhm"] = _parse_band_list(path, raw, "fwhm", hdr["bands"])
    if hdr["fwhm"] is not None:
        bad = np.flatnonzero(~(np.isfinite(hdr["fwhm"]) & (hdr["fwhm"] > 0)))
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                f"{path}: ENVI key 'fwhm': expected finite band widths > 0, got "
                f"{hdr['fwhm'][i]:g} nm for band {i} ({bad.size} bad value(s))")
    return hdr


def _parse_band_list(path: Path, raw: dict[str, str], key: str,
                     bands: int) -> np.ndarray | None:
    """A ``{...}`` list with one number per band, in nm (``wavelength`` and ``fwhm``)."""
    if key not in raw:
        return None
    text = raw[key].replace("\n", " ")
    try:
        values = np.array([float(v) for v in text.split(",") if v.strip()], dtype=np.float64)
    except ValueError:
        raise DataFormatError(
            f"{path}: ENVI key {key!r}: expected comma-separated numbers, got "
            f"{{{text.strip()[:80]}}}") from None
    if values.size != bands:
        raise DataFormatError(
            f"{path}: ENVI key {key!r}: expected {bands} values (one per band), got {values.size}")
    # The spec gives fwhm "in the same units as wavelength": one unit conversion for both.
    units = raw.get("wavelength units", "nanometers").strip().lower()
    if units in _UM_UNITS:
        values = values * 1000.0
    elif units not in _NM_UNITS:
        raise DataFormatError(
            f"{path}: ENVI key 'wavelength units': expected Nanometers or Micrometers, got "
            f"{raw['wavelength units']!r}")
    return values


def envi_data_file(header_path: str | os.PathLike) -> Path:
    """Find the binary file that belongs to ``header_path`` (see module docstring)."""
    header_path = Path(header_path)
    stem = header_path.with_suffix("")
    for suffix in _DATA_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file() and candidate != header_path:
            return candidate
    raise DataFormatError(
        f"{header_path}: no ENVI data file next to the header (looked for "
        f"{', '.join(stem.name + s for s in _DATA_SUFFIXES)})")


def envi_header_file(path: str | os.PathLike) -> Path:
    """The ``.hdr`` file of an ENVI cube given its header or its data file.

    Raises
    ------
    DataFormatError
        If neither ``NAME.hdr`` nor ``<path>.hdr`` exists.
    """
    return _header_of(Path(path))


def _header_of(path: Path) -> Path:
    if path.suffix.lower() == ".hdr":
        return path
    for candidate in (path.with_name(path.name + ".hdr"), path.with_suffix(".hdr")):
        if candidate.is_file():
            return candidate
    raise DataFormatError(f"{path}: no ENVI header found (looked for {path.name}.hdr and "
                          f"{path.with_suffix('.hdr').name})")


def read_envi(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an ENVI cube.

    Parameters
    ----------
    path : path-like
        The ``.hdr`` file or the binary data file next to it.

    Returns
    -------
    cube : ndarray of shape (rows, cols, bands), stored data type, native byte order
    wavelengths : ndarray of shape (bands,), float64 nm, or None if the header has none

    The header's ``fwhm`` (band widths) is not returned here, to keep this pair stable for its
    callers; read it with ``read_envi_header(envi_header_file(path))["fwhm"]``.

    Raises
    ------
    DataFormatError
        Malformed header (names the key), missing data file, or a data file whose size does not
        equal ``header offset + lines*samples*bands*itemsize`` (expected and actual bytes).
    """
    path = Path(path)
    header_path = _header_of(path)
    hdr = read_envi_header(header_path)
    data_path = path if path != header_path else envi_data_file(header_path)
    rows, cols, bands = hdr["lines"], hdr["samples"], hdr["bands"]
    base = ENVI_DTYPES[hdr["data type"]]
    dtype = base.newbyteorder(">" if hdr["byte order"] == 1 else "<")
    expected = hdr["header offset"] + rows * cols * bands * dtype.itemsize
    size = data_path.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "oversized"
        raise DataFormatError(
            f"{data_path}: {what} ENVI data file: header {header_path.name} ({rows} lines x "
            f"{cols} samples x {bands} bands, {base}, offset {hdr['header offset']}) needs "
            f"{expected} bytes, file has {size} bytes")
    from spectral.io.bilfile import BilFile
    from spectral.io.bipfile import BipFile
    from spectral.io.bsqfile import BsqFile

    params = _SpyParams(rows, cols, bands, hdr["header offset"], hdr["byte order"], dtype.str,
                        str(data_path))
    spy = {"bsq": BsqFile, "bil": BilFile, "bip": BipFile}[hdr["interleave"]](params, {})
    try:
        view = spy.open_memmap(interleave="bip")            # (rows, cols, bands)
        if view is None:
            raise DataFormatError(f"{data_path}: cannot map the ENVI data file")
        cube = np.array(view, dtype=base, order="C")        # a copy: the file may change
    finally:
        spy.fid.close()
    return cube, hdr["wavelength"]


class _SpyParams:
    """The ``params`` object SPy's BSQ/BIL/BIP file classes take (fields of ``gen_params``)."""

    def __init__(self, rows: int, cols: int, bands: int, offset: int, byte_order: int,
                 dtype: str, filename: str) -> None:
        self.nrows, self.ncols, self.nbands = rows, cols, bands
        self.offset, self.byte_order, self.dtype, self.filename = (offset, byte_order, dtype,
                                                                    filename)


def write_envi(path: str | os.PathLike, cube: np.ndarray, wavelengths: Any = None, *,
               fwhm: Any = None, interleave: str = "bsq", byte_order: int = 0,
               header_offset: int = 0, description: str = "written by hsi-edge") -> Path:
    """Write ``cube`` as ENVI header + binary; the exact inverse of :func:`read_envi`.

    Parameters
    ----------
    path : path-like
        The header path ``NAME.hdr``; the data goes to ``NAME.img``.  Both files are written
        atomically, data first, so a header never points at missing data.
    cube : ndarray of shape (rows, cols, bands)
        uint8, int16, int32, float32, float64 or uint16.
    wavelengths : array_like of shape (bands,), optional
        Band centres in nm.
    fwhm : float or array_like of shape (bands,), optional
        Band full width at half maximum in nm (a scalar is written for every band), each
        finite and > 0.
    interleave : {"bsq", "bil", "bip"}
    byte_order : {0, 1}
        0 little-endian, 1 big-endian.
    header_offset : int
        Zero bytes written before the data (tests the reader's offset handling).

    Returns
    -------
    Path of the data file.
    """
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise DataFormatError(f"cube: expected shape (rows, cols, bands), got {cube.shape}")
    base = cube.dtype.newbyteorder("=")
    if base not in _CODE_OF:
        raise DataFormatError(
            f"cube: ENVI data types are uint8, int16, int32, float32, float64, uint16; got {cube.dtype}")
    if interleave not in _INTERLEAVES:
        raise DataFormatError(f"interleave: expected one of bsq, bil, bip, got {interleave!r}")
    if byte_order not in (0, 1):
        raise DataFormatError(f"byte_order: expected 0 or 1, got {byte_order!r}")
    header_path = Path(path)
    if header_path.suffix.lower() != ".hdr":
        raise DataFormatError(f"path: expected a '.hdr' file name, got {str(path)!r}")
    data_path = header_path.with_suffix(".img")
    from spectral.io.envi import write_envi_header
    from spectral.io.spyfile import interleave_transpose

    rows, cols, bands = cube.shape
    check_band_count(bands, "cube", "bands")
    # SPy's own writer transposes only between different interleaves ((1, 1, 1) otherwise)
    laid = cube if interleave == "bip" else cube.transpose(interleave_transpose("bip", interleave))
    stored = laid.astype(base.newbyteorder(">" if byte_order else "<"), order="C")
    header: dict[str, Any] = {
        "description": description, "samples": cols, "lines": rows, "bands": bands,
        "header offset": header_offset, "file type": "ENVI Standard",
        "data type": _CODE_OF[base], "interleave": interleave, "byte order": byte_order}
    if wavelengths is not None or fwhm is not None:
        # fwhm shares the wavelength unit (ENVI spec), so write the unit for either key.
        header["wavelength units"] = "Nanometers"
    if wavelengths is not None:
        wl = np.asarray(wavelengths, dtype=np.float64)
        if wl.shape != (bands,):
            raise DataFormatError(
                f"wavelengths: expected {bands} values (one per band), got shape {wl.shape}")
        # str() of a Python float is its repr: it round-trips exactly.
        header["wavelength"] = [float(v) for v in wl]
    if fwhm is not None:
        header["fwhm"] = [float(v) for v in _writer_fwhm(fwhm, bands)]
    with tempfile.TemporaryDirectory() as tmp:
        write_envi_header(os.path.join(tmp, "h.hdr"), header)
        text = Path(tmp, "h.hdr").read_bytes()
    with atomic_open(data_path) as fh:
        fh.write(b"\0" * header_offset)
        fh.write(stored.tobytes())
    with atomic_open(header_path) as fh:
        fh.write(text)
    return data_path


def _writer_fwhm(fwhm: Any, bands: int) -> np.ndarray:
    try:
        fw = np.asarray(fwhm, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataFormatError(f"fwhm: expected band widths in nm, got {fwhm!r}") from None
    if fw.ndim == 0:
        fw = np.full(bands, float(fw))
    if fw.shape != (bands,):
        raise DataFormatError(
            f"fwhm: expected one value or {bands} values (one per band), got shape {fw.shape}")
    if not np.all(np.isfinite(fw) & (fw > 0)):
        raise DataFormatError(f"fwhm: expected finite band widths > 0 nm, got min {fw.min():g}")
    return fw
