"""The scene renderer against the forward model the StO2 calibration is fitted on, and the
physical scale of its texture (drivers.sim.scene)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.presets import PRESETS, TEXTURE_SIGMA_MM, get_preset
from drivers.sim.scene import SCENE_CLASSES, SurgicalScene
from edge.errors import ConfigError
from edge.physics import tissue_reflectance

_NAMES = ("sto2", "blood_volume", "water", "fat", "scatter_a", "scatter_b", "melanin")


def _random_params(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters over the scene's clip limits (scene._LIMITS) and the human melanin load."""
    rng = np.random.default_rng(seed)
    return {"sto2": rng.uniform(0, 1, n), "blood_volume": rng.uniform(0.005, 0.065, n),
            "water": rng.uniform(0.5, 0.8, n), "fat": rng.uniform(0, 0.3, n),
            "scatter_a": rng.uniform(5, 40, n), "scatter_b": rng.uniform(0.5, 2.0, n),
            "melanin": rng.uniform(0, 0.003, n)}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_renderer_matches_dense_band_integration(preset):
    """The renderer integrates each band exactly as edge.physics.tissue_reflectance(fwhm_nm=)
    does (1 nm grid, Gaussian responses): agreement to float32 rounding, 2e-6 relative, over
    400 spectra spanning the scene's parameter limits (the old band-averaged renderer was off
    by up to 27 % relative on snapshot16)."""
    p = get_preset(preset)
    wl = p.wavelength_array()
    params = _random_params(400)
    scene = SurgicalScene(wl, 8, 8, fwhm_nm=p.fwhm_nm, seed=1, species="human")
    got = scene.diffuse_reflectance(np.stack([params[k] for k in _NAMES]))
    want = tissue_reflectance(wl, fwhm_nm=p.fwhm_nm, **params)
    assert got.shape == want.shape == (400, p.bands) and got.dtype == np.float32
    rel = np.abs(got / want - 1.0)
    assert rel.max() < 2e-6, f"{preset}: max relative error {rel.max():.2e}"


def test_renderer_without_melanin_matches_too():
    p = get_preset("snapshot16")
    params = _random_params(100, seed=3)
    params["melanin"] = np.zeros(100)
    scene = SurgicalScene(p.wavelength_array(), 8, 8, fwhm_nm=p.fwhm_nm)
    got = scene.diffuse_reflectance(np.stack([params[k] for k in _NAMES[:6]]))
    want = tissue_reflectance(p.wavelength_array(), fwhm_nm=p.fwhm_nm, **params)
    np.testing.assert_allclose(got, want, rtol=2e-6)


def _grain_correlation(scene: SurgicalScene, lag: int) -> float:
    """Correlation of the texture of the scattering amplitude a' (a' minus its class mean)
    between pixels ``lag`` apart in the same organ."""
    cls = scene.classes_canvas
    a = scene._params[4].copy()
    for c in np.unique(cls):
        a[cls == c] -= a[cls == c].mean()
    same = (cls[:, :-lag] == cls[:, lag:]) & (cls[:, :-lag] != 0)
    x, y = a[:, :-lag][same], a[:, lag:][same]
    return float(np.corrcoef(x, y)[0, 1])


def test_texture_is_correlated_at_its_physical_scale_not_per_pixel():
    """Fine texture: a Gaussian-filtered field of sigma 1.5 mm.  At 0.25 mm pixels (6 px) the
    neighbouring pixels' texture correlates > 0.95 (a white per-pixel grain gives about 0.64,
    the variance share of the organ-scale field); at 3 mm pixels (0.5 px) the grain is
    nearly white again (< 0.85; expected ~0.77)."""
    p = get_preset("snapshot25")
    fine = SurgicalScene(p.wavelength_array(), 96, 120, fwhm_nm=p.fwhm_nm, seed=4,
                         pixel_mm=0.25)
    coarse = SurgicalScene(p.wavelength_array(), 96, 120, fwhm_nm=p.fwhm_nm, seed=4,
                           pixel_mm=3.0)
    assert _grain_correlation(fine, 1) > 0.95
    assert _grain_correlation(coarse, 1) < 0.85
    assert TEXTURE_SIGMA_MM == 1.5


def test_organ_and_patch_boundaries_stay_sharp():
    """Texture is smooth, the class means are painted per class: StO2 jumps by the class mean
    difference across the malperfused patch border (mean of 0.55 vs >= 0.65 outside), and the
    jump over one pixel is over twice the 99th percentile of the steps inside organs."""
    p = get_preset("snapshot25")
    scene = SurgicalScene(p.wavelength_array(), 64, 80, fwhm_nm=p.fwhm_nm, seed=2,
                          pixel_mm=70.0 / 80)
    s = scene.render(0.0)
    mal = SCENE_CLASSES.index("malperfused")
    cls, sto2 = s.classes, s.sto2.astype(np.float64)
    border = (cls[:, :-1] == mal) & (cls[:, 1:] != mal) & (cls[:, 1:] != 0)
    assert border.sum() >= 3
    jump = np.abs(np.diff(sto2, axis=1))
    inside = (cls[:, :-1] == cls[:, 1:]) & (cls[:, :-1] != 0)
    assert np.median(jump[border]) > 0.08
    assert np.quantile(jump[inside], 0.99) < 0.04  # a white grain gave ~0.09


def test_pixel_size_is_checked():
    p = get_preset("tivita")
    with pytest.raises(ConfigError, match=r"pixel_mm: expected a pixel size in mm within "
                                          r"\[0.001, 100\], got -1"):
        SurgicalScene(p.wavelength_array(), 8, 8, pixel_mm=-1)


def test_preset_pixel_size_follows_the_field_of_view():
    assert get_preset("tivita").pixel_mm == pytest.approx(300.0 / 640)
    assert get_preset("snapshot25", cols=80).pixel_mm == pytest.approx(70.0 / 80)
