"""CalibrationRecord: save/load with checksums, backups, compatibility, FlatField, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from bench_camera import BenchCamera
from calibration.records import CalibrationRecord
from calibration.references import capture_dark, capture_white
from edge.backends.base import FLAG_BAD_PIXEL, FLAG_SATURATED
from edge.cli import main
from edge.errors import CalibrationError
from edge.processing.flatfield import FlatField


@pytest.fixture(scope="module")
def refs():
    cam = BenchCamera()
    dark = capture_dark(cam, 6)
    cam.target = "white"
    white = capture_white(cam, 4, dark=dark)
    return dark, white


@pytest.fixture
def record(refs):
    return CalibrationRecord.from_references(*refs, temperature_c=31.5)


def test_save_load_round_trip(tmp_path, record):
    path = record.save(tmp_path / "cal")
    assert sorted(p.name for p in path.iterdir()) == ["dark.npz", "masks.npz", "record.yaml",
                                                      "white.npz"]
    meta = yaml.safe_load((path / "record.yaml").read_text())
    assert meta["camera_serial"] == "BENCH-1" and meta["shape"] == [8, 9, 5]
    assert meta["temperature_c"] == 31.5 and meta["n_dark"] == 6 and meta["n_white"] == 4
    assert set(meta["files"]) == {"dark.npz", "white.npz", "masks.npz"}
    assert all(len(v) == 64 for v in meta["files"].values())
    back = CalibrationRecord.load(path)
    for name in ("dark", "dark_std", "white", "white_std"):
        assert getattr(back, name).tobytes() == getattr(record, name).tobytes()
    for k, m in record.masks.items():
        np.testing.assert_array_equal(back.masks[k], m)
    assert back.wavelengths.tobytes() == record.wavelengths.tobytes()
    assert back.metadata() == record.metadata()
    assert back.mask_counts() == {"hot": 1, "dead": 1, "overexposed": 1, "underexposed": 2}
    assert not list(tmp_path.glob(".cal.tmp-*"))  # no temporary directory left


def test_refuses_overwrite_and_keeps_backup(tmp_path, record, refs):
    path = record.save(tmp_path / "cal")
    before = (path / "dark.npz").read_bytes()
    with pytest.raises(CalibrationError, match=r"already holds a calibration record.*overwrite=True"):
        record.save(path)
    assert (path / "dark.npz").read_bytes() == before
    newer = CalibrationRecord.from_references(*refs, rho_ref=0.95)
    newer.save(path, overwrite=True)
    assert CalibrationRecord.load(path).rho_ref == 0.95
    backups = list(tmp_path.glob("cal.backup-*"))
    assert len(backups) == 1
    assert CalibrationRecord.load(backups[0]).rho_ref == 0.99
    other = tmp_path / "busy"
    other.mkdir()
    (other / "x.txt").write_text("")
    with pytest.raises(CalibrationError, match="already holds other files"):
        record.save(other)


def test_white_dark_record(tmp_path, refs):
    dark, white = refs
    cam = BenchCamera()
    dark2 = capture_dark(cam, 3, exposure_us=2000.0)
    cam.target = "white"
    white2 = capture_white(cam, 3, dark=dark2)
    rec = CalibrationRecord.from_references(dark, white2, white_dark=dark2)
    back = CalibrationRecord.load(rec.save(tmp_path / "wd"))
    assert back.white_exposure_us == 2000.0 and back.exposure_us == 1000.0
    assert back.white_dark.tobytes() == dark2.mean.tobytes()
    with pytest.raises(CalibrationError, match=r"white captured at 2000 µs but its dark at 1000 µs"):
        CalibrationRecord.from_references(dark, white2)


def _corrupt(path, offset, new=b"\x00\x01"):
    data = bytearray(path.read_bytes())
    data[offset:offset + len(new)] = bytes(b ^ 0xFF for b in data[offset:offset + len(new)])
    path.write_bytes(bytes(data))


def test_corruption_detected(tmp_path, record):
    path = record.save(tmp_path / "cal")
    _corrupt(path / "white.npz", 200)
    with pytest.raises(CalibrationError, match=r"white\.npz: checksum mismatch .*corrupt"):
        CalibrationRecord.load(path)


def test_truncation_and_missing_files(tmp_path, record):
    path = record.save(tmp_path / "cal")
    data = (path / "dark.npz").read_bytes()
    (path / "dark.npz").write_bytes(data[:100])
    with pytest.raises(CalibrationError, match=r"dark\.npz: checksum mismatch"):
        CalibrationRecord.load(path)
    (path / "dark.npz").unlink()
    with pytest.raises(CalibrationError, match=r"dark\.npz: calibration file missing"):
        CalibrationRecord.load(path)
    with pytest.raises(CalibrationError, match=r"not a calibration record \(record\.yaml missing\)"):
        CalibrationRecord.load(tmp_path / "nothing")
    (path / "record.yaml").write_text("camera_serial: [unclosed\n")
    with pytest.raises(CalibrationError, match="record.yaml: cannot read record metadata"):
        CalibrationRecord.load(path)
    (path / "record.yaml").write_text("camera_serial: X\n")
    with pytest.raises(CalibrationError, match=r"missing key\(s\) exposure_us, white_exposure_us"):
        CalibrationRecord.load(path)


def test_check_compatible(record):
    record.check_compatible("BENCH-1", (8, 9, 5), 1000.0, 1.0)
    with pytest.raises(CalibrationError, match=r"camera serial 'CAM-2' \(record 'BENCH-1'\); "
                                               r"exposure 2000 µs \(record 1000 µs\); gain 2 "
                                               r"\(record 1\)"):
        record.check_compatible("CAM-2", (8, 9, 5), 2000.0, 2.0)
    with pytest.raises(CalibrationError, match=r"shape \(8, 9, 6\) \(record \(8, 9, 5\)\)"):
        record.check_compatible("BENCH-1", (8, 9, 6), 1000.0, 1.0)


def test_from_references_rejects_mixed_cameras(refs):
    dark, white = refs
    foreign = capture_dark(BenchCamera(serial="OTHER"), 2)
    with pytest.raises(CalibrationError, match="white: recorded on camera 'BENCH-1', dark on 'OTHER'"):
        CalibrationRecord.from_references(foreign, white)


def test_flatfield_from_record(record, refs):
    dark, white = refs
    ff = record.flatfield()
    ref = FlatField.from_references(dark.mean, white.mean, exposure_us=1000.0,
                                    white_exposure_us=1000.0, rho_ref=0.99)
    np.testing.assert_array_equal(ff.dark, ref.dark)
    assert ff.static_flags[2, 3] & FLAG_BAD_PIXEL and ff.static_flags[5, 5] & FLAG_BAD_PIXEL
    assert ff.static_flags[1, 1] & FLAG_SATURATED
    ok = ff.static_flags == 0
    np.testing.assert_array_equal(ff.scale[ok], ref.scale[ok])
    # The white itself calibrates to rho_ref where the pixel is valid.
    refl, flags = ff.apply(np.rint(white.mean).astype(np.uint16), 1000.0)
    np.testing.assert_allclose(refl[flags == 0], 0.99, rtol=2e-3)


def test_cli_info(tmp_path, record, capsys):
    path = record.save(tmp_path / "cal")
    assert main(["calibrate", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "camera_serial: BENCH-1" in out and "mask hot: 1 pixel(s)" in out
    assert "wavelengths: 5 bands, 500-900 nm" in out
    _corrupt(path / "masks.npz", 150)
    assert main(["calibrate", "info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masks.npz: checksum mismatch" in err[0]


def test_cli_capture(tmp_path, capsys):
    pytest.importorskip("drivers.simulated", reason="drivers.simulated.SimulatedCamera not available")
    out = tmp_path / "cal"
    args = ["calibrate", "capture", "--out", str(out), "--preset", "snapshot16", "--frames", "3",
            "--rows", "8", "--cols", "8"]
    assert main(args) == 0
    rec = CalibrationRecord.load(out)
    assert rec.shape == (8, 8, 16) and rec.n_dark == 3 and rec.n_white == 3
    assert "saved calibration record" in capsys.readouterr().out
    assert main(args) == 2
    assert "already holds a calibration record" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert len(list(tmp_path.glob("cal.backup-*"))) == 1


def test_wavelengths_must_match_the_camera(record):
    wl = record.wavelengths
    record.check_compatible("BENCH-1", (8, 9, 5), 1000.0, 1.0, wavelengths=wl + 0.001)
    with pytest.raises(CalibrationError, match=r"wavelengths 510-910 nm \(record 500-900 nm; "
                                               r"band 0: 510 vs 500 nm\)"):
        record.check_compatible("BENCH-1", (8, 9, 5), 1000.0, 1.0, wavelengths=wl + 10)
    with pytest.raises(CalibrationError, match=r"4 wavelengths \(record 5\)"):
        record.check_compatible("BENCH-1", (8, 9, 5), 1000.0, 1.0, wavelengths=wl[:4])


@pytest.mark.parametrize("rho", [0.0, 1.5, float("nan"), [0.9, 0.9]])
def test_bad_rho_ref_is_refused_before_saving(refs, rho):
    with pytest.raises(CalibrationError, match=r"rho_ref: expected the white tile's "
                                               r"reflectance in \(0, 1\], one value or one per "
                                               r"band \(5\)"):
        CalibrationRecord.from_references(*refs, rho_ref=rho)


def test_unwritable_target_is_a_calibration_error(tmp_path, record):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CalibrationError, match=r"file/cal: cannot write calibration record"):
        record.save(tmp_path / "file" / "cal")
    assert (tmp_path / "file").read_text() == "x"


def test_record_files_must_stay_inside_the_record(tmp_path, record):
    path = record.save(tmp_path / "cal")
    meta = yaml.safe_load((path / "record.yaml").read_text())
    meta["files"]["../elsewhere.npz"] = "0" * 64
    (path / "record.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(CalibrationError, match=r"'files': '../elsewhere.npz' is not a file name"):
        CalibrationRecord.load(path)


def test_unknown_camera_serial_is_checked_for_everything_else(tmp_path, caplog):
    """A raw recording that does not name its camera can use a record (with a warning)."""
    import logging

    import numpy as np

    from calibration.records import CalibrationRecord
    from calibration.references import DarkReference, WhiteReference
    from edge.errors import CalibrationError

    shape, wl = (2, 3, 4), np.linspace(500, 800, 4)
    z = np.zeros(shape[:2], bool)
    dark = DarkReference(np.full(shape, 40, np.float32), np.ones(shape, np.float32), z,
                         1000.0, 1.0, 4, "CAM-1", 10, wl)
    white = WhiteReference(np.full(shape, 800, np.float32), np.ones(shape, np.float32), z, z,
                           z, 1000.0, 1.0, 4, "CAM-1", 10, wl)
    rec = CalibrationRecord.from_references(dark, white)
    with caplog.at_level(logging.WARNING):
        rec.check_compatible(None, shape, 1000.0, 1.0, wavelengths=wl)
    assert "camera serial is unknown" in caplog.text and "'CAM-1'" in caplog.text
    with pytest.raises(CalibrationError, match=r"exposure 2000 µs \(record 1000 µs\)"):
        rec.check_compatible(None, shape, 2000.0, 1.0)
