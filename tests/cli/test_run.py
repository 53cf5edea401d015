"""``hsi-edge run`` end to end on the simulated camera with real ONNX models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from edge.cli import main
from edge.core.chain import FLAG_MAPS_ONLY
from onnx_models import write_pixel_classifier

ROWS, COLS = 24, 32
STAGE_KEYS = {"mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"}


def _config(tmp_path, **sections):
    cfg = {"camera": {"rows": ROWS, "cols": COLS, "seed": 3},
           "calibration": {"frames": 2},
           "model": {"card": "none"},
           "sinks": {"png_every": 2, "npz_every": 1}}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_maps_only_writes_metrics_pngs_and_maps(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["run", "--config", str(_config(tmp_path)), "--frames", "3", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_processed"] == 3 and m["frames_dropped"] == 0
    assert m["backend"] == "numpy" and m["runtime"] is None and m["model"] is None
    for stage in ("acquire", "chain", "calibrate", "unmix", "indices", "pack", "sink"):
        assert set(m["stages"][stage]) == STAGE_KEYS, stage
    assert set(m["end_to_end"]) == STAGE_KEYS and m["fps"] > 0
    # StO2 against the simulator's ground truth: within 15 points on this small noisy scene
    assert 0 <= m["quality"]["sto2_mae_pp"] < 15
    maps = sorted(out.glob("maps_*.npz"))
    assert len(maps) == 3 and len(sorted(out.glob("sto2_*.png"))) == 2
    with np.load(maps[0]) as z:
        assert z["sto2"].shape == (ROWS, COLS) and z["flags"].dtype == np.uint8
        valid = z["flags"] == 0
        assert np.all(np.isnan(z["sto2"][~valid]))
        assert np.nanmin(z["sto2"]) >= 0 and np.nanmax(z["sto2"]) <= 1
    text = capsys.readouterr().out
    assert "processed 3 frames" in text and "end_to_end" in text


def test_run_with_model_matches_numpy_reference(tmp_path):
    # a per-pixel linear classifier on the StO2 and THI maps: its class map is known exactly
    card, w, b = write_pixel_classifier(tmp_path / "model", maps=("sto2", "nir"), classes=3,
                                        height=ROWS, width=COLS)
    out = tmp_path / "out"
    rc = main(["run", "--config", str(_config(tmp_path, model={"card": str(card)})),
               "--frames", "2", "--out", str(out), "--no-progress", "--runtime", "onnxruntime"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["runtime"] == "onnxruntime" and m["model"] == "test-pixel-classifier"
    assert set(m["stages"]["infer"]) == STAGE_KEYS and "post" in m["stages"]
    assert len(sorted(out.glob("overlay_*.png"))) == 1
    with np.load(sorted(out.glob("maps_*.npz"))[-1]) as z:
        classes, flags, sto2, nir = z["classes"], z["flags"], z["sto2"], z["nir"]
    x = np.stack([np.nan_to_num(sto2), np.nan_to_num(nir)])          # (2, rows, cols)
    expected = np.argmax(np.einsum("kc,chw->khw", w, x) + b[:, None, None], axis=0)
    valid = flags == 0
    assert valid.mean() > 0.5
    np.testing.assert_array_equal(classes[valid], expected[valid])
    # withheld where the input is unusable; kept where only the unmixing found no blood or
    # only the StO2 validity bits are set (low blood, uncertain, specular: FLAG_MAPS_ONLY)
    unusable = (flags & ~FLAG_MAPS_ONLY) != 0
    assert np.all(classes[unusable] == 255)
    no_blood = flags == 16
    assert no_blood.any()  # the drape around the scene: the check above is not vacuous
    assert np.all(classes[no_blood] < 3)


def test_run_with_spectral_model(tmp_path):
    wl = np.linspace(500, 1000, 100)[::10]
    card, _, _ = write_pixel_classifier(tmp_path / "model", wavelengths=wl,
                                        maps=("sto2", "thi"), height=ROWS, width=COLS)
    out = tmp_path / "out"
    assert main(["run", "--config", str(_config(tmp_path, model={"card": str(card)})),
                 "--frames", "1", "--out", str(out), "--no-progress"]) == 0
    with np.load(sorted(out.glob("maps_*.npz"))[-1]) as z:
        assert set(np.unique(z["classes"][z["flags"] == 0])) <= {0, 1, 2}
        assert np.all(z["classes"][(z["flags"] & ~FLAG_MAPS_ONLY) != 0] == 255)


def test_run_flags_frames_when_model_outputs_nan(tmp_path):
    card, _, _ = write_pixel_classifier(tmp_path / "model", maps=("sto2",), height=ROWS,
                                        width=COLS, nan_output=True)
    out = tmp_path / "out"
    rc = main(["run", "--config", str(_config(tmp_path, model={"card": str(card)})),
               "--frames", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_flagged"] == 2
    with np.load(sorted(out.glob("maps_*.npz"))[0]) as z:
        assert np.all(z["classes"] == 255)


@pytest.mark.parametrize("sections, message", [
    ({"camera": {"preset": "nope"}}, r"camera.preset: expected one of 'tivita'"),
    ({"camera": {"source": "replay"}}, r"camera.replay_path: required when camera.source is 'replay'"),
    ({"camera": {"source": "replay", "replay_path": "/nonexistent.dat"}}, r"nonexistent"),
    ({"calibration": {"record": "/nonexistent-record"}}, r"nonexistent-record"),
    ({"model": {"card": "/nonexistent/card.yaml"}}, r"card.yaml: model card not found"),
])
def test_run_bad_input_is_one_line_error(tmp_path, capsys, sections, message):
    rc = main(["run", "--config", str(_config(tmp_path, **sections)), "--frames", "1",
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("hsi-edge run: error: ") and len(err.splitlines()) == 1
    assert pytest.importorskip("re").search(message, err), err


def test_model_that_does_not_fit_the_camera(tmp_path, capsys):
    card, _, _ = write_pixel_classifier(tmp_path / "m1", maps=("sto2",), height=48, width=64)
    rc = main(["run", "--config", str(_config(tmp_path, model={"card": str(card)})),
               "--frames", "1", "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2
    assert "takes 48x64 frames but the camera delivers 24x32" in capsys.readouterr().err
    card, _, _ = write_pixel_classifier(tmp_path / "m2", wavelengths=[400.0, 450.0],
                                        height=ROWS, width=COLS)
    rc = main(["run", "--config", str(_config(tmp_path, model={"card": str(card)})),
               "--frames", "1", "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2
    assert "input channel at 400.0 nm has no camera band" in capsys.readouterr().err


def test_run_replays_a_recording(tmp_path):
    from drivers.recorder import Recorder
    from drivers.simulated import SimulatedCamera

    rec_dir = tmp_path / "rec"
    with SimulatedCamera("tivita", rows=ROWS, cols=COLS, seed=1) as cam, \
            Recorder(rec_dir) as rec:
        cam.arm()
        for _ in range(3):
            f = cam.grab(2.0)
            refl = f.truth["reflectance"].astype(np.float32)
            rec.write(f.replace(cube=refl))  # a calibrated (float32 reflectance) recording
    out = tmp_path / "out"
    cfg = _config(tmp_path, camera={"source": "replay", "replay_path": str(rec_dir),
                                           "fwhm_nm": 10.0})
    rc = main(["run", "--config", str(cfg), "--frames", "10", "--out", str(out), "--no-progress"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_processed"] == 3 and m["end_of_stream"]
    # noise-free reflectance: the calibrated StO2 estimate is close to the truth
    assert m["quality"]["sto2_mae_pp"] < 6


def test_missing_gpu_parts_are_one_line_errors(tmp_path, capsys):
    pytest.importorskip("re")
    from edge.pipeline.app import cuda_available
    if cuda_available() is None:
        pytest.skip("a usable GPU is present: the cuda backend would run")
    rc = main(["run", "--config", str(_config(tmp_path)), "--frames", "1", "--out",
               str(tmp_path / "out"), "--no-progress", "--backend", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "cuda backend: PyCUDA is not installed" in err
    assert "pip install 'hsi-edge[cuda]'" in err and len(err.strip().splitlines()) == 1
    card, _, _ = write_pixel_classifier(tmp_path / "m", maps=("sto2",), height=ROWS, width=COLS)
    rc = main(["run", "--config", str(_config(tmp_path, model={"card": str(card)})),
               "--frames", "1", "--out", str(tmp_path / "out"), "--no-progress",
               "--runtime", "tensorrt"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs the 'tensorrt' Python package" in err and "JetPack" in err


def test_auto_picks_numpy_and_onnxruntime_without_gpu(tmp_path):
    from edge.pipeline.app import cuda_available
    if cuda_available() is None:
        pytest.skip("a usable GPU is present")
    card, _, _ = write_pixel_classifier(tmp_path / "m", maps=("sto2",), height=ROWS, width=COLS)
    out = tmp_path / "out"
    assert main(["run", "--config", str(_config(tmp_path, model={"card": str(card)})),
                 "--frames", "1", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["backend"], m["runtime"]) == ("numpy", "onnxruntime")


def test_run_on_the_simulated_bench(tmp_path):
    """Camera fired by the simulated trigger controller through the real serial drivers."""
    out = tmp_path / "out"
    cfg = _config(tmp_path, camera={"source": "bench", "fps": 20.0})
    assert main(["run", "--config", str(cfg), "--frames", "4", "--out", str(out),
                 "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_processed"] == 4 and m["drop_policy"] == "newest"
    assert m["camera"]["source"] == "bench"
    # frames were lit (not dark): the StO2 estimate exists and is close to the truth
    assert m["quality"]["sto2_mae_pp"] < 15


def test_bad_frame_count_fails_before_any_device_moves(capsys):
    assert main(["run", "--frames", "0", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        "hsi-edge run: error: --frames: expected an integer >= 1, got 0")


def test_mid_run_failure_writes_metrics_of_frames_before_it(tmp_path, capsys):
    from drivers.recorder import Recorder
    from drivers.simulated import SimulatedCamera

    rec_dir = tmp_path / "rec"
    with SimulatedCamera("tivita", rows=ROWS, cols=COLS, seed=1) as cam, \
            Recorder(rec_dir) as rec:
        cam.arm()
        for _ in range(3):
            f = cam.grab(2.0)
            rec.write(f.replace(cube=f.truth["reflectance"].astype(np.float32)))
    last = sorted(rec_dir.glob("frame_*.npz"))[-1]
    last.write_bytes(last.read_bytes()[:100])  # the third frame is corrupt
    out = tmp_path / "out"
    cfg = _config(tmp_path, camera={"source": "replay", "replay_path": str(rec_dir)})
    rc = main(["run", "--config", str(cfg), "--frames", "3", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and last.name in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_processed"] == 2 and last.name in m["error"]
