"""Scenes and the comparison of the CUDA quality step against the NumPy reference, shared by
the emulated check (test_cuda_quality_emulation.py) and the GPU check
(tests/gpu/test_gpu_quality.py): noisy frames from a preset's own sensor model (crosstalk
included) with a brightness edge, a highlight and a low-blood corner."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge.core.chain import MAP_NAMES, QUALITY_MAP_NAMES

from hsi_cuda_scenes import rel_err

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "processing"))
from test_quality import EXPOSURE, _camera, _tissue  # noqa: E402,F401

__all__ = ["EXPOSURE", "scene", "compare", "ILL", "TOL"]


def scene(preset, rows, cols, seed):
    """(preset, flat field, noise model, raw uint16 frame) of a noisy (rows, cols) scene."""
    p, sensor, ff, noise = _camera(preset, rows, cols)
    refl, _ = _tissue(p.wavelength_array(), p.fwhm_nm, rows * cols, seed)
    refl = refl.reshape(rows, cols, -1)
    refl[:, cols // 2:] *= 0.7              # an edge the spatial step must keep
    refl[2:6, 2:6] += 0.8                   # a highlight
    refl[rows - 3:, :4] *= 0.02             # little blood signal: low-blood / unmix-invalid
    raw = sensor.expose(refl, EXPOSURE, 1.0, seed)
    return p, ff, noise, raw


#: Reference sigma (StO2 fraction) above which a pixel's float32 estimate is ill-conditioned.
ILL = 0.25
#: sigma: the variance's numerator is a difference of three products of like size (below),
#: so it keeps about one digit less than the maps: 5e-5 (measured up to 1.2e-5).
TOL = {"sto2_sigma": 5e-5}


def compare(a, maps, flags, packed):
    """Flags exact; each map's NaN pattern exact; within relative 1e-5 (sigma: TOL) over the
    pixels whose reference sigma is below ILL (25 points, 5x the 'uncertain' limit) and
    within 5e-3 at the rest. There c_o + c_d is near 0: s = c_o / (c_o + c_d) and its
    variance's numerator (c_d^2 q_oo + c_o^2 q_dd - 2 c_o c_d q_od) cancel, so float32 sums
    over the bands in another order (sgemm's against band order) differ by up to 1e-3
    relative (measured 9e-4 on sigma 167 at a highlight's edge); every such pixel is
    flagged 'uncertain' anyway."""
    np.testing.assert_array_equal(flags, a.flags)
    sig = a.maps["sto2_sigma"]
    ill = sig >= ILL
    for name in MAP_NAMES + QUALITY_MAP_NAMES:
        x, y = a.maps[name], maps[name]
        np.testing.assert_array_equal(np.isnan(y), np.isnan(x), err_msg=name)
        if np.all(np.isnan(x[~ill])):
            continue
        assert rel_err(y[~ill], x[~ill]) < TOL.get(name, 1e-5), name
        fin = ill & np.isfinite(x)
        np.testing.assert_allclose(y[fin], x[fin], rtol=5e-3, err_msg=name)
    if packed is not None:
        assert rel_err(packed[0][:, ~ill], a.input[0][:, ~ill]) < 1e-5
        np.testing.assert_allclose(packed[0][:, ill], a.input[0][:, ill], rtol=5e-3,
                                   atol=1e-6)
