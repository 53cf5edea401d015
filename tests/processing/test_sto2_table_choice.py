"""processing.sto2_table (issue 14): which StO2 table the chain applies.

``Sto2Calibration.select``: None the grid's base table, a shipped variant by name (header
``variant: human``, the base table's key), or a .csv path whose key must be the grid's; the
plan and every backend apply the chosen table.  The path test writes a table whose rows are
half the base table's: linear interpolation of halved knots is exactly half the interpolated
value in float32 (halving is exact), so the StO2 map must be exactly half the base map.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.simulated import SimulatedCamera
from edge.backends.numpy_backend import NumpyBackend
from edge.errors import CalibrationError
from edge.processing.plan import ChainPlan
from edge.processing.sto2 import Sto2Calibration

PRESETS = ("tivita", "snapshot16", "snapshot25")


def _grid(preset):
    cam = SimulatedCamera(preset, rows=4, cols=5)
    return cam.wavelengths, cam.fwhm_nm


def _scaled(base: Sto2Calibration, factor: float, **meta) -> Sto2Calibration:
    """``base`` with every row times ``factor`` (keeps it non-decreasing in [0, 1])."""
    axis = None if base.n_rows == 1 else (base.thb_x0, base.thb_dx)
    return Sto2Calibration(base.table_x, base.table_y * np.float32(factor),
                           {**base.meta, **meta}, thb_axis=axis)


def _reflectance(plan: ChainPlan, seed: int = 0) -> np.ndarray:
    """(6, 7, bands) float32 Beer-Lambert spectra of the plan's own basis, StO2 0..1."""
    rng = np.random.default_rng(seed)
    um = plan.unmixer
    c = np.zeros((6, 7, um.basis.shape[1]))
    c[..., um.i_hbo2] = rng.uniform(0.0, 1.0, (6, 7))
    c[..., um.i_hb] = 1.0 - c[..., um.i_hbo2]
    a = c @ um.basis.T
    a *= 2.0 / np.abs(a).max(axis=2, keepdims=True)    # absorbance up to 2: above eps
    return np.exp(-a).astype(np.float32)


@pytest.mark.parametrize("preset", PRESETS)
def test_null_is_the_base_table(preset):
    wl, fwhm = _grid(preset)
    cal = Sto2Calibration.select(wl, fwhm_nm=fwhm)
    assert cal is Sto2Calibration.for_grid(wl, fwhm_nm=fwhm)
    assert cal.variant is None
    assert cal.describe() == f"shipped sto2_{preset}.csv"


def test_for_grid_never_picks_a_variant(monkeypatch):
    """A variant shares its base table's key; for_grid takes the base table, whatever order
    the data folder lists them in, and select finds the variant by name."""
    wl, fwhm = _grid("snapshot16")
    base = Sto2Calibration.shipped()["snapshot16"]
    human = _scaled(base, 0.5, variant="human")
    human.source = "shipped sto2_snapshot16_human.csv"
    monkeypatch.setattr(Sto2Calibration, "shipped",
                        classmethod(lambda cls: {"snapshot16_human": human,
                                                 "snapshot16": base}))
    monkeypatch.setattr(Sto2Calibration, "_cache", {})
    monkeypatch.setattr(Sto2Calibration, "_variants", None)
    assert Sto2Calibration.for_grid(wl, fwhm_nm=fwhm) is base
    assert Sto2Calibration.select(wl, fwhm_nm=fwhm, table="human") is human
    assert human.describe() == "shipped sto2_snapshot16_human.csv, variant human"
    with pytest.raises(CalibrationError, match=r"^processing\.sto2_table: no shipped table "
                       r"'humna' for this grid \(16 bands, 460-600 nm\); shipped: human "):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table="humna")
    wl25, fwhm25 = _grid("snapshot25")       # the variant is not this grid's
    with pytest.raises(CalibrationError, match=r"'human' for this grid \(25 bands, 665-960 "
                       r"nm\); shipped: none"):
        Sto2Calibration.select(wl25, fwhm_nm=fwhm25, table="human")


@pytest.mark.parametrize("preset", PRESETS)
def test_shipped_variants_by_name(preset):
    """The lead's ``sto2_<preset>_human.csv`` tables (skipped only while none is shipped)."""
    shipped = Sto2Calibration.shipped()
    if not any(k.endswith("_human") for k in shipped):
        pytest.skip("no sto2_*_human.csv shipped yet")
    wl, fwhm = _grid(preset)
    base = Sto2Calibration.for_grid(wl, fwhm_nm=fwhm)
    variants = {c.variant: c for c in shipped.values()
                if c.variant is not None and c.meta["key"] == base.meta["key"]}
    assert base.variant is None and base.meta["key"] == shipped[preset].meta["key"]
    for name, cal in variants.items():
        got = Sto2Calibration.select(wl, fwhm_nm=fwhm, table=name)
        assert got.variant == name and got.meta["key"] == base.meta["key"]
        assert f"variant {name}" in got.describe()
    listing = ", ".join(sorted(variants)) or "none"
    with pytest.raises(CalibrationError, match=rf"shipped: {listing} "):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table="humna")


def test_a_path_table_is_what_the_backend_applies(tmp_path):
    wl, fwhm = _grid("snapshot16")
    base = Sto2Calibration.for_grid(wl, fwhm_nm=fwhm)
    path = tmp_path / "field.csv"
    _scaled(base, 0.5).to_csv(path, header=["field refit (test)"])
    plan_b = ChainPlan.build(wl, fwhm_nm=fwhm)
    plan_t = ChainPlan.build(wl, fwhm_nm=fwhm, sto2_table=str(path))
    assert plan_b.calibration is base
    assert plan_t.calibration.describe() == str(path.resolve())
    np.testing.assert_array_equal(plan_t.calibration.table_y, base.table_y * np.float32(0.5))
    refl = _reflectance(plan_b)
    s_b = NumpyBackend(plan_b).run(refl, exposure_us=None).maps["sto2"]
    s_t = NumpyBackend(plan_t).run(refl, exposure_us=None).maps["sto2"]
    assert np.isfinite(s_b).sum() >= 30 and np.nanmax(s_b) - np.nanmin(s_b) > 0.3
    # halved knots interpolate to exactly half (every float32 step scales by an exact 0.5)
    np.testing.assert_allclose(s_t, 0.5 * s_b, rtol=0, atol=1e-7, equal_nan=True)


def test_a_path_relative_to_the_working_directory(tmp_path, monkeypatch):
    wl, fwhm = _grid("tivita")
    base = Sto2Calibration.for_grid(wl, fwhm_nm=fwhm)
    (tmp_path / "tables").mkdir()
    base.to_csv(tmp_path / "tables" / "site.csv")
    monkeypatch.chdir(tmp_path)
    cal = Sto2Calibration.select(wl, fwhm_nm=fwhm, table="tables/site.csv")
    assert cal.source == str(tmp_path / "tables" / "site.csv")
    np.testing.assert_array_equal(cal.table_y, base.table_y)


def test_another_grids_table_is_refused(tmp_path):
    path = tmp_path / "tivita.csv"
    Sto2Calibration.shipped()["tivita"].to_csv(path)
    wl, fwhm = _grid("snapshot16")
    with pytest.raises(CalibrationError, match=r"^processing\.sto2_table: .*tivita\.csv: it "
                       r"was fitted for another grid or unmixer: its header 100 bands, "
                       r"500-1000 nm, fwhm 10\.0 nm, .*this camera 16 bands, 460-600 nm, "
                       r"fwhm 15 nm"):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table=str(path))
    # same grid, another unmixer (a basis without water): another key
    Sto2Calibration.for_grid(wl, fwhm_nm=fwhm).to_csv(tmp_path / "b.csv")
    with pytest.raises(CalibrationError, match=r"its header 16 bands, 460-600 nm, fwhm 15\.0 "
                       r"nm, HbO2 Hb \+ constant linear \(extinction\), this camera 16 bands, "
                       r"460-600 nm, fwhm 15 nm, HbO2 Hb water \+ constant linear"):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, chromophores=("HbO2", "Hb", "water"),
                               table=str(tmp_path / "b.csv"))


def test_a_table_without_key_is_refused(tmp_path):
    wl, fwhm = _grid("snapshot16")
    base = Sto2Calibration.for_grid(wl, fwhm_nm=fwhm)
    bare = base.replace(meta={"version": "1"})
    bare.to_csv(tmp_path / "bare.csv")
    with pytest.raises(CalibrationError, match=r"bare\.csv: its header has no 'key:' line"):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table=str(tmp_path / "bare.csv"))


def test_missing_unreadable_and_corrupt_files(tmp_path):
    wl, fwhm = _grid("snapshot25")
    missing = tmp_path / "nope.csv"
    with pytest.raises(CalibrationError, match=r"^processing\.sto2_table: .*nope\.csv: table "
                       r"file not found$"):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table=str(missing))
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(CalibrationError, match=r"^processing\.sto2_table: .*dir\.csv: cannot "
                       r"read the table: "):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table=str(tmp_path / "dir.csv"))
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CalibrationError, match=r"bin\.csv: cannot read the table: not UTF-8"):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table=str(tmp_path / "bin.csv"))
    (tmp_path / "bad.csv").write_text("# key: x\nsto2_raw,sto2\n0.1,abc\n")
    with pytest.raises(CalibrationError, match=r"^processing\.sto2_table: .*bad\.csv: bad "
                       r"table row '0\.1,abc'$"):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table=str(tmp_path / "bad.csv"))
    (tmp_path / "down.csv").write_text("sto2_raw,sto2\n0,0.5\n0.5,0.2\n1,0.9\n")
    with pytest.raises(CalibrationError, match=r"^processing\.sto2_table: .*down\.csv: "
                       r"table_y: every row must be non-decreasing"):
        Sto2Calibration.select(wl, fwhm_nm=fwhm, table=str(tmp_path / "down.csv"))


def test_plan_takes_one_of_calibration_and_sto2_table():
    wl, fwhm = _grid("tivita")
    base = Sto2Calibration.for_grid(wl, fwhm_nm=fwhm)
    with pytest.raises(CalibrationError, match=r"^sto2_table: 'human' chooses a table, and a "
                       r"calibration table was given too"):
        ChainPlan.build(wl, fwhm_nm=fwhm, calibration=base, sto2_table="human")
