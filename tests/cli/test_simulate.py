"""``hsi-edge simulate`` (edge.cli.simulate)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from edge.cli import main


def test_simulate_writes_a_replayable_recording_with_calibration(tmp_path, capsys):
    from calibration.records import CalibrationRecord
    from drivers.replay import ReplayCamera

    out = tmp_path / "sim"
    rc = main(["simulate", "--frames", "2", "--out", str(out), "--preset", "snapshot25",
               "--rows", "16", "--cols", "20", "--seed", "5", "--calibration-frames", "4"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "wrote 2 frames" in stdout and "snapshot25 16x20x25" in stdout
    assert "ms/frame" in stdout and "frames/s" in stdout
    assert len(sorted(out.glob("frame_*.npz"))) == 2
    for png_path in sorted(out.glob("frame_*.png")):
        with Image.open(png_path) as png:
            assert png.size == (20, 16) and png.mode == "RGB"
    record = CalibrationRecord.load(out / "calibration")
    ff = record.flatfield()
    with ReplayCamera(out) as cam:
        assert cam.serial == "SIM-snapshot25-0005"
        # the bands' mosaic positions come back exactly as the live camera reports them
        from drivers.simulated import SimulatedCamera
        live = SimulatedCamera("snapshot25", rows=16, cols=20, seed=5).band_offsets
        assert live.shape == (25, 2)
        np.testing.assert_array_equal(cam.band_offsets, live)
        record.check_compatible(cam.serial, cam.shape, cam.exposure_us, cam.gain)
        cam.arm()
        for _ in range(2):
            frame = cam.grab(1.0)
            assert frame.cube.dtype == np.uint16 and frame.shape == (16, 20, 25)
            np.testing.assert_array_equal(frame.wavelengths, np.linspace(665, 960, 25))
            assert frame.meta.bit_depth == 10
            truth = frame.truth
            assert truth["classes"].shape == (16, 20) and truth["classes"].dtype == np.uint8
            assert "dark" not in truth and "white" not in truth
            # the files are consistent: calibrating the raw cube recovers the reflectance
            refl, flags = ff.apply(frame.cube, frame.meta.exposure_us)
            ok = flags == 0
            assert ok.mean() > 0.9
            err = np.abs(refl[ok] - truth["reflectance"][ok])
            assert np.median(err) < 0.03


def test_run_replays_the_simulated_recording(tmp_path):
    import json

    import yaml

    out = tmp_path / "sim"
    assert main(["simulate", "--frames", "2", "--out", str(out), "--rows", "16", "--cols", "20",
                 "--calibration-frames", "4", "--no-preview"]) == 0
    # tivita has no mosaic: recorded as null, replayed as None (every band at the centre)
    from drivers.replay import ReplayCamera
    assert json.loads((out / "recording.json").read_text())["camera"]["band_offsets"] is None
    assert ReplayCamera(out).band_offsets is None
    cfg = tmp_path / "replay.yaml"
    cfg.write_text(yaml.safe_dump({
        "camera": {"source": "replay", "replay_path": str(out), "fwhm_nm": 10.0},
        "calibration": {"record": str(out / "calibration")}, "model": {"card": "none"}}))
    res = tmp_path / "res"
    assert main(["run", "--config", str(cfg), "--frames", "5", "--out", str(res),
                 "--no-progress"]) == 0
    m = json.loads((res / "metrics.json").read_text())
    assert m["frames_processed"] == 2 and m["end_of_stream"]
    assert m["quality"]["sto2_mae_pp"] < 15


def test_simulate_bad_arguments_one_line_errors(tmp_path, capsys):
    rc = main(["simulate", "--frames", "0", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == "hsi-edge simulate: error: --frames: expected an integer >= 1, got 0"
    rc = main(["simulate", "--frames", "1", "--out", str(tmp_path / "y"), "--preset", "nope"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "preset: unknown camera preset 'nope'; allowed: tivita, snapshot16, snapshot25" in err
    f = tmp_path / "file"
    f.write_text("x")
    rc = main(["simulate", "--frames", "1", "--out", str(f), "--rows", "4", "--cols", "4"])
    assert rc == 2 and "exists and is not a directory" in capsys.readouterr().err


def test_overwrite_keeps_the_old_recording_when_the_new_one_fails(tmp_path, capsys):
    """--overwrite writes beside --out and swaps at the end (issue 15 item 5): a run that
    fails after the recorder opened leaves the old frames, previews and calibration."""
    out = tmp_path / "sim"
    assert main(["simulate", "--frames", "2", "--out", str(out), "--rows", "8", "--cols", "10",
                 "--calibration-frames", "2"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # the exposure is refused by the camera inside the run, after the recorder was created
    rc = main(["simulate", "--frames", "3", "--out", str(out), "--rows", "8", "--cols", "10",
               "--overwrite", "--exposure-us", "1e9"])
    assert rc == 2 and "exposure_us" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]   # no temporary left
    assert main(["simulate", "--frames", "1", "--out", str(out), "--rows", "8", "--cols", "10",
                 "--calibration-frames", "2", "--overwrite", "--seed", "3"]) == 0
    assert sorted(p.name for p in out.glob("frame_*")) == ["frame_000000.npz",
                                                           "frame_000000.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]


def test_snapshot25_recording_replays_without_preset_or_fwhm(tmp_path):
    """The recording names its preset and FWHM (issue 15 item 23, issue 14): a replay config
    with neither picks the snapshot25 demo model and the recorded 20 nm bands."""
    import json

    import yaml

    from drivers.replay import ReplayCamera

    out = tmp_path / "sim"
    assert main(["simulate", "--frames", "1", "--out", str(out), "--preset", "snapshot25",
                 "--calibration-frames", "1", "--no-preview"]) == 0
    manifest = json.loads((out / "recording.json").read_text())
    assert manifest["camera"]["preset"] == "snapshot25" and manifest["camera"]["fwhm_nm"] == 20.0
    assert manifest["complete"] is True and manifest["frames"] == 1
    assert ReplayCamera(out).fwhm_nm == 20.0
    cfg = tmp_path / "replay.yaml"
    cfg.write_text(yaml.safe_dump({
        "camera": {"source": "replay", "replay_path": str(out)},
        "calibration": {"record": str(out / "calibration")}, "sinks": {"png_every": 0,
                                                                       "npz_every": 0}}))
    res = tmp_path / "res"
    assert main(["run", "--config", str(cfg), "--frames", "1", "--out", str(res),
                 "--no-progress"]) == 0
    m = json.loads((res / "metrics.json").read_text())
    assert m["camera"]["preset"] == "snapshot25" and m["model"] == "demo-snapshot25"
    cfg.write_text(yaml.safe_dump({"camera": {"source": "replay", "replay_path": str(out),
                                              "preset": "tivita"}}))
    assert main(["run", "--config", str(cfg), "--frames", "1", "--out", str(tmp_path / "r2"),
                 "--no-progress"]) == 2
