"""Species tissue optics in the scene generator (drivers.sim.scene SPECIES / Species).

The reference file ``data/scene_reference_v2.npz`` was rendered with the scene generator
when the band integration became the forward model's (1 nm grid) and the fine texture got its
physical scale (tivita 10x12 seed 3 and snapshot25 12x16 seed 7, default pixel_mm 0.5, scene
times 0 and 20 s; keys ``<tiv|snap>_t<0|20>_<refl|classes|sto2|blood>``); the default species
must reproduce it bit for bit.  (v1 held the renders from before species existed, with
band-averaged absorption and per-pixel grain.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers.sim.presets import get_preset
from drivers.sim.scene import (CLASS_PARAMS, DEFAULT_SPECIES, MELANIN_WEIGHT, SCENE_CLASSES,
                               SPECIES, Species, SurgicalScene, get_species)
from drivers.simulated import SimulatedCamera
from edge.errors import ConfigError

REFERENCE = Path(__file__).parent / "data" / "scene_reference_v2.npz"
MALPERFUSED = SCENE_CLASSES.index("malperfused")


def _scene(preset="snapshot25", rows=40, cols=48, seed=5, **kw):
    p = get_preset(preset)
    return SurgicalScene(p.wavelength_array(), rows, cols, fwhm_nm=p.fwhm_nm, seed=seed, **kw)


@pytest.mark.parametrize("key,preset,rows,cols,seed", [("tiv", "tivita", 10, 12, 3),
                                                       ("snap", "snapshot25", 12, 16, 7)])
@pytest.mark.parametrize("species", [None, "pig", Species("pig")])
def test_default_species_is_bit_identical_to_stored_renders(key, preset, rows, cols, seed,
                                                                species):
    ref = np.load(REFERENCE)
    kw = {} if species is None else {"species": species}
    scene = _scene(preset, rows, cols, seed, **kw)
    for t in (0, 20):
        s = scene.render(float(t))
        got = {"refl": s.reflectance, "classes": s.classes, "sto2": s.sto2,
               "blood": s.blood_volume}
        for name, arr in got.items():
            want = ref[f"{key}_t{t}_{name}"]
            assert arr.dtype == want.dtype
            np.testing.assert_array_equal(arr, want, err_msg=f"{key} t={t} {name}")
    assert DEFAULT_SPECIES == "pig"


def test_presets_are_plausible_and_distinct():
    assert SPECIES["pig"] == Species("pig")  # the identity
    for sp in SPECIES.values():
        for name in CLASS_PARAMS:
            s, b, w, f, a, bb = sp.class_means(name)
            # FACTS.md ranges: B 0.5-6.5 %, W 0.5-0.8 (before clipping may exceed by an offset),
            # F 0-0.3, a' 18.9 +- 10.2 (so within ~2 sd), b 1.286 +- 0.521.
            assert 0.005 <= b <= 0.065 and 0.45 <= w <= 0.85 and -0.05 <= f <= 0.36
            assert 5.0 <= a <= 40.0 and 0.5 <= bb <= 2.0
    assert SPECIES["human"].melanin > 0 and SPECIES["pig"].melanin == 0
    assert set(MELANIN_WEIGHT) == set(CLASS_PARAMS)


def _mean_tissue_reflectance(species, **kw):
    scene = _scene(species=species, **kw)
    s = scene.render(0.0)
    return s.reflectance[s.classes != 0].mean(axis=0).astype(np.float64), s


def test_more_scattering_raises_reflectance():
    base, _ = _mean_tissue_reflectance("pig")
    more, _ = _mean_tissue_reflectance(Species("s", scatter_scale=1.5))
    less, _ = _mean_tissue_reflectance(Species("s", scatter_scale=0.7))
    assert np.all(more > base * 1.01) and np.all(less < base * 0.99)


def test_more_blood_lowers_reflectance_most_where_blood_absorbs():
    base, s0 = _mean_tissue_reflectance("pig", preset="tivita")
    blood, s1 = _mean_tissue_reflectance(Species("b", blood_scale=1.5), preset="tivita")
    wl = get_preset("tivita").wavelength_array()
    ratio = blood / base
    assert np.all(ratio < 1.0)
    # Hb/HbO2 absorb ~40x more at 560 nm than at 800 nm (FACTS.md spot values).
    i560, i800 = np.argmin(abs(wl - 560)), np.argmin(abs(wl - 800))
    assert ratio[i560] < ratio[i800] - 0.05
    # Blood volume truth follows the scale (texture and clip aside).
    tissue = s0.classes != 0
    np.testing.assert_allclose(np.nanmean(s1.blood_volume[tissue]),
                               1.5 * np.nanmean(s0.blood_volume[tissue]), rtol=0.05)


def test_melanin_lowers_reflectance_more_towards_the_blue():
    wl = get_preset("tivita").wavelength_array()
    base, _ = _mean_tissue_reflectance("pig", preset="tivita")
    mel, _ = _mean_tissue_reflectance(Species("m", melanin=0.003), preset="tivita")
    drop = 1.0 - mel / base
    assert np.all(drop > 0.02)
    # Melanin µa falls ~9x from 500 to 1000 nm (simpa table), so where haemoglobin does not
    # dominate (> 650 nm) the loss grows towards shorter wavelengths.  Below ~600 nm blood
    # absorbs so strongly that the extra melanin changes the relative reflectance less.
    i700, i850, i950 = (int(np.argmin(abs(wl - w))) for w in (700, 850, 950))
    assert drop[i700] > drop[i850] > drop[i950]
    assert drop[i700] > 2.0 * drop[i950] and drop[i700] > 0.15


def test_fat_offset_deepens_the_fat_band_at_930nm():
    wl = get_preset("tivita").wavelength_array()
    base, _ = _mean_tissue_reflectance("pig", preset="tivita")
    fat, _ = _mean_tissue_reflectance(Species("f", fat_offset=0.2), preset="tivita")
    ratio = fat / base
    i930, i800 = np.argmin(abs(wl - 930)), np.argmin(abs(wl - 800))
    assert ratio[i930] < ratio[i800] - 0.01


def test_species_keeps_layout_and_sto2():
    a = _scene(species="pig").render(0.0)
    b = _scene(species="human").render(0.0)
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.sto2, b.sto2)
    assert not np.allclose(a.reflectance, b.reflectance)


def test_without_patch_same_view_organ_underneath():
    with_patch = _scene().render(20.0)
    without = _scene(malperfused_patch=False).render(20.0)
    patch = with_patch.classes == MALPERFUSED
    assert patch.sum() > 20 and not np.any(without.classes == MALPERFUSED)
    np.testing.assert_array_equal(without.classes[~patch], with_patch.classes[~patch])
    np.testing.assert_array_equal(without.reflectance[~patch], with_patch.reflectance[~patch])
    assert np.all(without.classes[patch] != 0)
    # Perfused tissue under the patch has a higher StO2 than the malperfused patch.
    assert np.nanmean(without.sto2[patch]) > np.nanmean(with_patch.sto2[patch]) + 0.2


def test_camera_passes_scene_options_through():
    kw = dict(rows=24, cols=32, seed=2)
    frames = {}
    for sp in ("pig", "human"):
        with SimulatedCamera("snapshot25", scene_options={"species": sp}, **kw) as cam:
            cam.configure(trigger_mode="software")
            cam.arm()
            frames[sp] = cam.grab(timeout=5.0)
    with SimulatedCamera("snapshot25", **kw) as cam:
        cam.configure(trigger_mode="software")
        cam.arm()
        default = cam.grab(timeout=5.0)
    np.testing.assert_array_equal(default.cube, frames["pig"].cube)
    assert not np.array_equal(frames["human"].cube, frames["pig"].cube)
    np.testing.assert_array_equal(frames["human"].truth["classes"], default.truth["classes"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(scatter_scale=0.1), r"species 'x': scatter_scale must be a number in \[0.25, 4\], "
                              r"got 0.1"),
    (dict(melanin=-0.01), r"species 'x': melanin must be a number in \[0, 0.05\], got -0.01"),
    (dict(fat_offset="a"), r"species 'x': fat_offset must be a number in \[-0.3, 0.3\], "
                           r"got 'a'"),
    (dict(blood_scale=True), r"blood_scale must be a number in \[0.2, 5\], got True"),
])
def test_bad_species_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Species("x", **kwargs)


def test_unknown_species_and_options():
    with pytest.raises(ConfigError, match=r"species: expected one of pig, human, rat or a "
                                          r"Species, got 'cow'"):
        get_species("cow")
    with pytest.raises(ConfigError, match=r"species: expected one of pig, human, rat"):
        _scene(species="cow")
    with pytest.raises(ConfigError, match=r"malperfused_patch: expected True or False, got 0"):
        _scene(malperfused_patch=0)
    with pytest.raises(ConfigError, match=r"species: expected one of .* got 'cow'"):
        SimulatedCamera("snapshot25", rows=8, cols=8, scene_options={"species": "cow"})
    with pytest.raises(ConfigError, match=r"scene_options: unknown option\(s\) seed; allowed: "
                                          r"species, malperfused_patch, breathing_amplitude_px"):
        SimulatedCamera("snapshot25", rows=8, cols=8, scene_options={"seed": 3})
