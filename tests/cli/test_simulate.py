"""``hsi-edge simulate`` (edge.cli.simulate)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from edge.cli import main


def test_simulate_writes_frames_and_reports_throughput(tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(["simulate", "--frames", "2", "--out", str(out), "--preset", "snapshot25",
               "--rows", "16", "--cols", "20", "--seed", "5"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "wrote 2 frames" in stdout and "snapshot25 16x20x25" in stdout
    assert "ms/frame" in stdout and "frames/s" in stdout
    for i in range(2):
        with np.load(out / f"frame_{i:06d}.npz") as z:
            assert z["raw"].shape == (16, 20, 25) and z["raw"].dtype == np.uint16
            np.testing.assert_array_equal(z["wavelengths"], np.linspace(665, 960, 25))
            meta = json.loads(str(z["meta"]))
            assert meta["frame_id"] == i and meta["bit_depth"] == 10
            assert meta["serials"] == {"camera": "SIM-snapshot25-0005"}
            assert z["classes"].shape == (16, 20) and z["classes"].dtype == np.uint8
            assert z["reflectance"].shape == (16, 20, 25)
            assert z["sto2"].dtype == np.float32
            raw = z["raw"].astype(np.float64)
            refl = z["reflectance"].astype(np.float64)
        with Image.open(out / f"frame_{i:06d}.png") as png:
            assert png.size == (20, 16) and png.mode == "RGB"
    with np.load(out / "references.npz") as ref:
        dark, white = ref["dark"].astype(np.float64), ref["white"].astype(np.float64)
        assert "malperfused" in list(ref["class_names"])
    # the files are consistent: calibrating the raw cube recovers the reflectance
    est = (raw - dark) / (white - dark) * 0.99
    ok = raw < 1023
    assert np.median(np.abs(est - refl)[ok]) < 0.03


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
