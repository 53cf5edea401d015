"""Golden self-test fixtures: a small raw frame with its expected maps and model outputs.

Made at release build time with the NumPy reference backend and ONNX Runtime
(:func:`make_golden`), checked on the unit by the self-test (:func:`check_chain`,
:func:`check_model`).  Files in ``golden/``::

    calibration/     a calibration record of the simulated camera (dark/white, masks)
    golden.npz       raw (rows, cols, bands) uint16, wavelengths (bands,), exposure_us,
                     fwhm_nm, flags (rows, cols) uint8, map_<name> (rows, cols) float32,
                     input (1, C, rows, cols) packed network input,
                     model_output (1, K, H/s, W/s): the model's output on ``model_input``
                     sampled every ``stride`` pixels
    golden.json      preset, shape, seed, stride, card name, tolerances

The model takes full frames (the card's height x width) while the golden frame is small: the
model input is the golden packed input tiled to the card's size (:func:`model_input`), so
the stored input fully determines it.

Tolerances: chain maps within rtol 1e-4, atol 1e-5 and identical NaN positions and flags
(the native backend matches NumPy within rtol 1e-5 / atol 1e-6,
``tests/native/test_native_chain.py``; a different BLAS on the unit adds rounding of the same
order); model outputs with the engine-check tolerances of
:mod:`edge.inference.parity` for the release's precision.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from edge.errors import BackendUnavailable, BundleError

__all__ = ["make_golden", "check_chain", "check_model", "model_input", "CHAIN_RTOL",
           "CHAIN_ATOL"]

log = logging.getLogger(__name__)

CHAIN_RTOL = 1e-4
CHAIN_ATOL = 1e-5
#: Output sampling stride: a 480x640 output of 19 classes is 23 MB; every 8th pixel keeps
#: 1/64 of it and still covers the whole frame.
STRIDE = 8


def model_input(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """The golden packed input (1, C, r, c) tiled to (1, C, height, width)."""
    _, _, r, c = packed.shape
    reps = (1, 1, -(-height // r), -(-width // c))
    return np.ascontiguousarray(np.tile(packed, reps)[:, :, :height, :width])


def _backend(name: str, wavelengths: np.ndarray, fwhm_nm: float | None, flatfield, pack, cfg):
    from edge.pipeline.backend_factory import make_backend
    # what make_backend reads of a camera (the Camera contract: no sensor noise model here)
    camera = SimpleNamespace(wavelengths=wavelengths, fwhm_nm=fwhm_nm, sensor_noise=None)
    return make_backend(name, camera, flatfield, pack, cfg)


def make_golden(out_dir: str | Path, card_path: str | Path | None, cfg, *, preset: str,
                rows: int, cols: int, seed: int, precision: str = "fp32") -> dict[str, Any]:
    """Render, calibrate and process a small simulated frame; store what it must give.

    Parameters
    ----------
    out_dir : folder to create (``golden/`` of the release tree)
    card_path : model card of the release (None: no model)
    cfg : edge.pipeline.config.AppConfig
        The unit config (unmixing basis).
    preset, rows, cols, seed : the simulated camera of the golden frame

    Returns
    -------
    dict
        The contents of ``golden.json``.
    """
    from calibration.records import CalibrationRecord
    from calibration.references import capture_dark, capture_white
    from drivers.simulated import SimulatedCamera

    out = Path(out_dir)
    out.mkdir(parents=True)
    cam = SimulatedCamera(preset, rows=rows, cols=cols, seed=seed)
    with cam:
        cam.configure(exposure_us=cfg.camera.exposure_us, gain=cfg.camera.gain,
                      trigger_mode="software")
        cam.target = "dark"
        dark = capture_dark(cam, 4)
        cam.target = "white"
        white = capture_white(cam, 4, dark=dark)
        cam.target = "scene"
        if not cam.is_armed:
            cam.arm()
        frame = cam.grab(timeout=30.0)
        wavelengths, fwhm = cam.wavelengths, cam.fwhm_nm
    record = CalibrationRecord.from_references(dark, white, rho_ref=cfg.calibration.rho_ref)
    record.save(out / "calibration")
    card = pack = None
    if card_path is not None:
        from edge.inference import load_model_card
        card = load_model_card(card_path)
        pack = card.pack_spec(wavelengths)
    be = _backend("numpy", wavelengths, fwhm, record.flatfield(), pack, cfg)
    with be:
        res = be.run(frame.cube, exposure_us=frame.meta.exposure_us)
    arrays: dict[str, np.ndarray] = {
        "raw": frame.cube, "wavelengths": wavelengths,
        "exposure_us": np.float64(frame.meta.exposure_us),
        "fwhm_nm": np.float64(np.nan if fwhm is None else fwhm), "flags": res.flags}
    arrays.update({f"map_{k}": v for k, v in res.maps.items()})
    meta: dict[str, Any] = {"preset": preset, "shape": list(frame.cube.shape), "seed": seed,
                            "stride": STRIDE, "chain_rtol": CHAIN_RTOL,
                            "chain_atol": CHAIN_ATOL, "model": None, "precision": precision}
    if card is not None:
        from edge.inference import open_runtime
        arrays["input"] = res.input
        x = model_input(res.input, card.input.height, card.input.width)
        with open_runtime("onnxruntime", card) as rt:
            rt.load()
            y = rt.run(x)
        arrays["model_output"] = np.ascontiguousarray(y[:, :, ::STRIDE, ::STRIDE])
        meta["model"] = card.name
        meta["output_name"] = card.output.name
    np.savez_compressed(out / "golden.npz", **arrays)
    (out / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("golden fixtures: %dx%d %s frame, %d maps%s", rows, cols, preset, len(res.maps),
             f", model {card.name}" if card else "")
    return meta


def _load(golden_dir: Path) -> tuple[dict[str, Any], Any]:
    try:
        meta = json.loads((golden_dir / "golden.json").read_text())
        data = np.load(golden_dir / "golden.npz")
    except (OSError, ValueError) as exc:
        raise BundleError(f"{golden_dir}: golden fixtures unreadable: {exc}") from None
    return meta, data


def check_chain(golden_dir: str | Path, backend: str, cfg) -> tuple[bool | None, str]:
    """Run ``backend`` on the golden frame; compare flags, maps and packed input.

    Returns
    -------
    (passed, reason)
        ``passed`` None: the backend cannot run this config here (skipped, with the reason;
        numpy always runs).
    """
    from calibration.records import CalibrationRecord
    golden_dir = Path(golden_dir)
    meta, g = _load(golden_dir)
    record = CalibrationRecord.load(golden_dir / "calibration")
    pack = None
    if meta.get("model"):
        from edge.inference import load_model_card
        card_path = golden_dir.parent / "model" / f"{meta['model']}.yaml"
        pack = load_model_card(card_path).pack_spec(g["wavelengths"])
    fwhm = float(g["fwhm_nm"])
    try:
        be = _backend(backend, g["wavelengths"], None if np.isnan(fwhm) else fwhm,
                      record.flatfield(), pack, cfg)
    except BackendUnavailable as exc:
        if backend == "numpy":
            raise
        return None, f"{backend} backend unavailable for this config: {exc}"
    with be:
        res = be.run(g["raw"], exposure_us=float(g["exposure_us"]))
    rtol, atol = meta["chain_rtol"], meta["chain_atol"]
    if not np.array_equal(res.flags, g["flags"]):
        n = int(np.count_nonzero(res.flags != g["flags"]))
        return False, f"{n} pixel flags differ from the golden frame's"
    for key in g.files:
        if not key.startswith("map_"):
            continue
        name, want = key[4:], g[key]
        got = res.maps.get(name)
        if got is None:
            return False, f"map {name!r} missing"
        if not np.array_equal(np.isnan(got), np.isnan(want)):
            return False, f"map {name!r}: NaN positions differ"
        ok = ~np.isnan(want)
        err = np.abs(got[ok].astype(np.float64) - want[ok])
        bound = atol + rtol * np.abs(want[ok].astype(np.float64))
        if np.any(err > bound):
            return False, (f"map {name!r}: {int(np.count_nonzero(err > bound))} values outside "
                           f"rtol {rtol:g} atol {atol:g} (max |err| {err.max():.3g})")
    if "input" in g.files:
        if res.input is None or not np.allclose(res.input, g["input"], rtol=rtol, atol=atol):
            return False, f"packed input differs beyond rtol {rtol:g} atol {atol:g}"
    return True, f"{len(res.maps)} maps, flags and input match ({meta['shape'][0]}x" \
                 f"{meta['shape'][1]} golden frame)"


def check_model(golden_dir: str | Path, card_path: str | Path, runtime: str, **options
                ) -> tuple[bool, str]:
    """Run the model with ``runtime`` on the golden input; judge with the parity gate."""
    from edge.inference import load_model_card, open_runtime
    from edge.inference.parity import ParityConfig, compare_outputs
    golden_dir = Path(golden_dir)
    meta, g = _load(golden_dir)
    card = load_model_card(card_path)
    x = model_input(g["input"], card.input.height, card.input.width)
    with open_runtime(runtime, card, **options) as rt:
        rt.load()
        y = rt.run(x)
    s = int(meta["stride"])
    got = np.ascontiguousarray(y[:, :, ::s, ::s])
    result = compare_outputs([({card.output.name: g["model_output"]},
                               {card.output.name: got})],
                             ParityConfig.for_precision(meta.get("precision", "fp32")))
    if not result.passed:
        return False, "; ".join(result.reasons)
    o = result.outputs[card.output.name]
    return True, (f"{runtime}: max |err| {o.max_abs_err:.3g} within atol {o.atol:g} rtol "
                  f"{o.rtol:g}, argmax agreement {100 * (o.argmax_agreement or 1):.2f} %")
