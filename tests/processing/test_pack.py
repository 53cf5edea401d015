"""Pack stage: L1 normalisation and NCHW layout."""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends.base import PackSpec
from edge.errors import DataFormatError
from edge.processing import l1_normalize, pack_input


def test_l1_normalize_formula_zero_and_nan():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    x[0, 0] = 0.0
    x[0, 1, 2] = np.nan
    y = l1_normalize(x)
    with np.errstate(invalid="ignore"):
        ref = x / np.abs(x).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(y[1:], ref[1:], rtol=1e-6)
    assert np.all(y[0, 0] == 0) and np.all(y[0, 1] == 0)
    np.testing.assert_allclose(np.abs(y[1:]).sum(-1), 1, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_pack_layout_nchw(dtype):
    rng = np.random.default_rng(1)
    s = rng.uniform(0.1, 1, (5, 7, 10)).astype(np.float32)
    m1 = rng.uniform(0, 1, (5, 7)).astype(np.float32)
    m1[2, 3] = np.nan
    spec = PackSpec(spectra_bands=(1, 3, 4), maps=("sto2",), dtype=dtype)
    out = pack_input(s, [m1], spec)
    assert out.shape == (1, 4, 5, 7) and out.dtype == np.dtype(dtype)
    sel = s[:, :, [1, 3, 4]]
    ref = sel / sel.sum(-1, keepdims=True)
    tol = 1e-6 if dtype == "float32" else 1e-3
    for i in range(3):
        np.testing.assert_allclose(out[0, i], ref[:, :, i], rtol=tol)
    np.testing.assert_allclose(out[0, 3], np.nan_to_num(m1, nan=0.0), rtol=tol)
    assert out[0, 3, 2, 3] == 0


def test_pack_errors():
    spec = PackSpec(spectra_bands=(0,), maps=("sto2",))
    s = np.ones((2, 2, 3), np.float32)
    with pytest.raises(DataFormatError, match="spec.maps names 1 maps"):
        pack_input(s, [], spec)
    with pytest.raises(DataFormatError, match="spectra is None"):
        pack_input(None, [np.ones((2, 2))], spec)
    with pytest.raises(DataFormatError, match="maps\\['sto2'\\]: expected shape"):
        pack_input(s, [np.ones((3, 2))], spec)
    with pytest.raises(DataFormatError, match="spectra_bands: indices must be in \\[0, 2\\]"):
        pack_input(s, [np.ones((2, 2))], PackSpec(spectra_bands=(5,), maps=("sto2",)))
