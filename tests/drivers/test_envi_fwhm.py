"""ENVI ``fwhm`` header key: reader, writer, recorder and replay camera.

The ENVI header spec gives ``fwhm = {...}`` one band width per band, in the units of
``wavelength`` (https://www.nv5geospatialsoftware.com/docs/ENVIHeaderFiles.html).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from drivers.formats.envi import envi_header_file, read_envi, read_envi_header, write_envi
from drivers.recorder import Recorder
from drivers.replay import ReplayCamera, single_fwhm_nm
from edge.core.frame import Frame, FrameMeta
from edge.errors import DataFormatError

WL = np.array([500.0, 600.0, 700.0, 800.0])
HEAD = ("ENVI\nsamples = 3\nlines = 2\nbands = 4\nheader offset = 0\ndata type = 12\n"
        "interleave = bsq\nbyte order = 0\nwavelength = {500, 600, 700, 800}\n")


def _hdr(tmp_path, extra, head=HEAD):
    (tmp_path / "h.hdr").write_text(head + extra)
    (tmp_path / "h.img").write_bytes(b"\0" * (2 * 3 * 4 * 2))
    return tmp_path / "h.hdr"


# -- reader -------------------------------------------------------------------------------------
def test_hand_written_per_band_fwhm(tmp_path):
    path = _hdr(tmp_path, "fwhm = {\n 10.5, 11,\n 12.25, 9.75}\n")
    hdr = read_envi_header(path)
    assert hdr["fwhm"].dtype == np.float64
    np.testing.assert_array_equal(hdr["fwhm"], [10.5, 11.0, 12.25, 9.75])
    # the pair returned by read_envi is unchanged for its callers
    cube, wl = read_envi(tmp_path / "h.img")
    assert cube.shape == (2, 3, 4)
    np.testing.assert_array_equal(wl, WL)
    assert envi_header_file(tmp_path / "h.img") == path


def test_fwhm_in_micrometres_is_converted(tmp_path):
    head = HEAD.replace("wavelength = {500, 600, 700, 800}",
                        "wavelength units = Micrometers\nwavelength = {0.5, 0.6, 0.7, 0.8}")
    hdr = read_envi_header(_hdr(tmp_path, "FWHM = {0.01, 0.01, 0.012, 0.01}\n", head))
    np.testing.assert_allclose(hdr["fwhm"], [10.0, 10.0, 12.0, 10.0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(hdr["wavelength"], WL, rtol=1e-12, atol=0)


def test_header_without_fwhm(tmp_path):
    assert read_envi_header(_hdr(tmp_path, ""))["fwhm"] is None


@pytest.mark.parametrize("extra, match", [
    ("fwhm = {10, 10, 10}\n",
     r"h\.hdr: ENVI key 'fwhm': expected 4 values \(one per band\), got 3"),
    ("fwhm = {10, 10, 10, 10, 10}\n", r"h\.hdr: ENVI key 'fwhm': expected 4 values .*got 5"),
    ("fwhm = {10, ten, 10, 10}\n",
     r"h\.hdr: ENVI key 'fwhm': expected comma-separated numbers, got \{10, ten, 10, 10\}"),
    ("fwhm = {10, 10, 0, 10}\n",
     r"h\.hdr: ENVI key 'fwhm': expected finite band widths > 0, got 0 nm for band 2"),
    ("fwhm = {10, -3, 10, -1}\n",
     r"h\.hdr: ENVI key 'fwhm': expected finite band widths > 0, got -3 nm for band 1 "
     r"\(2 bad value\(s\)\)"),
    ("fwhm = {10, 10, nan, 10}\n", r"'fwhm': expected finite band widths > 0, got nan nm"),
    ("fwhm = {10, 10, 10, inf}\n", r"'fwhm': expected finite band widths > 0, got inf nm"),
    ("fwhm = {10, 10,\n", r"'fwhm'.*without closing"),
    ("fwhm = {10, 10, 10, 10}\nfwhm = {9, 9, 9, 9}\n", r"'fwhm' appears twice"),
])
def test_bad_fwhm_is_refused(tmp_path, extra, match):
    path = _hdr(tmp_path, extra)
    with pytest.raises(DataFormatError, match=match):
        read_envi_header(path)
    with pytest.raises(DataFormatError, match=match):
        ReplayCamera(path)


def test_fwhm_with_unknown_units_is_refused(tmp_path):
    head = HEAD.replace("wavelength = {500, 600, 700, 800}\n", "wavelength units = Index\n")
    with pytest.raises(DataFormatError, match=r"'wavelength units': expected Nanometers or "
                                              r"Micrometers, got 'Index'"):
        read_envi_header(_hdr(tmp_path, "fwhm = {1, 1, 1, 1}\n", head))


# -- writer -------------------------------------------------------------------------------------
def test_writer_round_trip_scalar_and_per_band(tmp_path):
    cube = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    write_envi(tmp_path / "s.hdr", cube, WL, fwhm=12.5)
    np.testing.assert_array_equal(read_envi_header(tmp_path / "s.hdr")["fwhm"], [12.5] * 4)
    per_band = np.array([10.0, 10.123456789012345, 11.0, 12.0])
    write_envi(tmp_path / "p.hdr", cube, None, fwhm=per_band)  # fwhm without wavelengths
    hdr = read_envi_header(tmp_path / "p.hdr")
    np.testing.assert_array_equal(hdr["fwhm"], per_band)  # repr() round-trips exactly
    assert hdr["wavelength"] is None and hdr["wavelength units"] == "Nanometers"
    back, _ = read_envi(tmp_path / "p.hdr")
    np.testing.assert_array_equal(back, cube)


@pytest.mark.parametrize("fwhm, match", [
    ([10.0, 10.0], r"fwhm: expected one value or 4 values \(one per band\), got shape \(2,\)"),
    (0.0, r"fwhm: expected finite band widths > 0 nm, got min 0"),
    ([10.0, np.nan, 10.0, 10.0], r"fwhm: expected finite band widths > 0 nm, got min nan"),
    ("wide", r"fwhm: expected band widths in nm, got 'wide'"),
])
def test_writer_rejects_bad_fwhm(tmp_path, fwhm, match):
    with pytest.raises(DataFormatError, match=match):
        write_envi(tmp_path / "b.hdr", np.zeros((2, 3, 4), np.uint16), WL, fwhm=fwhm)
    assert not (tmp_path / "b.hdr").exists() and not (tmp_path / "b.img").exists()


# -- replay camera ------------------------------------------------------------------------------
def test_replay_uses_equal_widths_mean(tmp_path, caplog):
    # 10.0..10.09: spread 0.9 % of the mean, within 1 %: one width, their mean
    path = _hdr(tmp_path, "fwhm = {10.0, 10.09, 10.03, 10.04}\n")
    with caplog.at_level(logging.WARNING, logger="drivers.replay"):
        cam = ReplayCamera(path)
    assert cam.fwhm_nm == pytest.approx(10.04, rel=1e-12)
    assert not [r for r in caplog.records if "fwhm" in r.getMessage()]


def test_replay_uses_median_of_unequal_widths_and_warns_once(tmp_path, caplog):
    path = _hdr(tmp_path, "fwhm = {8, 10, 12, 20}\n")
    with caplog.at_level(logging.WARNING, logger="drivers.replay"):
        cam = ReplayCamera(path)
        cam.arm()
        cam.grab()
    assert cam.fwhm_nm == pytest.approx(11.0, rel=1e-12)  # median, not the mean 12.5
    warnings = [r.getMessage() for r in caplog.records if "fwhm" in r.getMessage()]
    assert len(warnings) == 1
    assert "8-20 nm (spread 109.1 % of the median)" in warnings[0]
    assert "taking the median 11 nm" in warnings[0] and "h.hdr" in warnings[0]


def test_single_fwhm_boundary():
    assert single_fwhm_nm(np.array([10.0, 10.1])) == pytest.approx(10.05, rel=1e-12)
    assert single_fwhm_nm(np.array([10.0, 10.2, 10.2])) == pytest.approx(10.2, rel=1e-12)


def test_explicit_fwhm_wins_and_absent_stays_unknown(tmp_path):
    path = _hdr(tmp_path, "fwhm = {8, 10, 12, 20}\n")
    assert ReplayCamera(path, fwhm_nm=7.5).fwhm_nm == 7.5
    (tmp_path / "n").mkdir()
    assert ReplayCamera(_hdr(tmp_path / "n", "")).fwhm_nm is None


def test_replay_refuses_an_implausible_width(tmp_path):
    with pytest.raises(DataFormatError,
                       match=r"h\.hdr: ENVI key 'fwhm': expected band widths below 500 nm, "
                             r"got 600 nm"):
        ReplayCamera(_hdr(tmp_path, "fwhm = {600, 600, 600, 600}\n"))


# -- recorder -> replay -------------------------------------------------------------------------
def _frames(n=2):
    rng = np.random.default_rng(3)
    return [Frame(rng.integers(0, 1024, (2, 3, 4)).astype(np.uint16), WL,
                  FrameMeta(frame_id=i, timestamp_ns=1000 + i, exposure_us=5000.0, gain=1.0,
                            illumination={"white": 1.0}, serials={"camera": "SIM-1"},
                            bit_depth=10))
            for i in range(n)]


@pytest.mark.parametrize("interleave", ["bsq", "bip"])
def test_record_then_replay_gives_the_same_fwhm(tmp_path, interleave):
    frames = _frames()
    with Recorder(tmp_path / "rec", format="envi", envi_interleave=interleave,
                  fwhm_nm=13.7) as rec:
        for f in frames:
            rec.write(f)
    hdr = read_envi_header(tmp_path / "rec" / "frame_000000.hdr")
    np.testing.assert_array_equal(hdr["fwhm"], [13.7] * 4)
    cam = ReplayCamera(tmp_path / "rec")
    assert cam.fwhm_nm == 13.7  # mean of equal values, exact
    cam.arm()
    for f in frames:
        np.testing.assert_array_equal(cam.grab().cube, f.cube)
    # a recording made without a width replays with the width unknown
    with Recorder(tmp_path / "rec2", format="envi") as rec:
        rec.write(frames[0])
    assert "fwhm" not in (tmp_path / "rec2" / "frame_000000.hdr").read_text()
    assert ReplayCamera(tmp_path / "rec2").fwhm_nm is None


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "10", True])
def test_recorder_rejects_bad_fwhm(tmp_path, bad):
    with pytest.raises(DataFormatError, match=r"fwhm_nm: expected a band width in nm > 0 or "
                                              r"None, got "):
        Recorder(tmp_path / "r", format="envi", fwhm_nm=bad)
