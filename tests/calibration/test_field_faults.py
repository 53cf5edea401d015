"""Each simulated fault is caught by its check at a stated magnitude, and the signed report
names it (issue 12).

A healthy unit (snapshot16, 24x32, seed 1) is commissioned once with every optional check;
each case recalibrates a copy of that bench with one fault and ``allow_fail`` (so the record
and report are signed whatever the verdict) and asserts that the fault's check -- and only
it -- leaves PASS.  Magnitudes and what they give on this bench:

===================================== ===================== ====================
fault                                 check                 value (verdict)
===================================== ===================== ====================
wavelength shift 2.5 nm               wavelength_shift      2.5 nm (FAIL)
wavelength shift 2 nm                 wavelength_shift      ~2.0 nm (WARN/FAIL)
field-dependent shift 3 nm at corners wavelength_field      ~1.7 nm (WARN)
lamp dimming 10 %                     white_drift_level     10 % (FAIL)
lamp colour change 6 % across range   white_drift_shape     ~3.1 % (FAIL)
white tile smudge 3 % deep            white_dirt            ~1.5 % (FAIL)
white tile scratch 10 % deep          white_dirt            ~4 % (FAIL)
non-linearity 2 % at full scale       linearity             ~1.6 % (WARN)
non-linearity 3 % at full scale       linearity             ~2.4 % (FAIL)
ambient room light 2 %                ambient_ratio         ~1.9 % (FAIL)
hot pixels +0.5 % of pixels           hot_pixels            ~0.4 % growth (FAIL)
warm-up drift 10 %, tau 15 min        warmup_stability      ~1.1 % / 5 min (FAIL)
defocus 1 px sigma                    mtf50                 ~0.3 x baseline (FAIL)
light leak 3 counts                   light_leak            ~3.2 counts (FAIL)
===================================== ===================== ====================
"""

from __future__ import annotations

import json

import pytest

from calibration.field import OPTIONAL
from calibration.qc import read_qc
from calibration.records import CalibrationRecord
from drivers.sim.faults_optical import OpticalFaults
from edge.errors import ConfigError
from field_bench import calibrate, camera, copy_bench


@pytest.fixture(scope="module")
def commissioned(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    result = calibrate(camera(1), base / "record", base / "history", optional=OPTIONAL)
    assert result.qc["verdict"] == "PASS", [r.line() for r in result.results]
    return base


CASES = [
    ("wavelength_shift", dict(wavelength_shift_nm=2.5), ("wavelength",), {"FAIL"}),
    ("wavelength_shift", dict(wavelength_shift_nm=2.0), ("wavelength",), {"WARN", "FAIL"}),
    ("wavelength_field", dict(wavelength_field_nm=3.0), ("wavelength",), {"WARN", "FAIL"}),
    ("white_drift_level", dict(lamp_dimming=0.10), (), {"FAIL"}),
    ("white_drift_shape", dict(lamp_colour=0.06), (), {"FAIL"}),
    ("white_dirt", dict(tile_smudge=0.03), (), {"FAIL"}),
    ("white_dirt", dict(tile_scratch=0.10), (), {"FAIL"}),
    ("linearity", dict(nonlinearity=0.02), ("linearity",), {"WARN", "FAIL"}),
    ("linearity", dict(nonlinearity=0.03), ("linearity",), {"FAIL"}),
    ("ambient_ratio", dict(ambient=0.02), (), {"FAIL"}),
    ("hot_pixels", dict(hot_pixels=0.005), (), {"FAIL"}),
    ("warmup_stability", dict(warmup_drift=0.10, warmup_tau_s=900.0), (), {"FAIL"}),
    ("mtf50", dict(defocus_px=1.0), ("mtf",), {"FAIL"}),
    ("light_leak", dict(light_leak=3.0), (), {"FAIL"}),
]


@pytest.mark.parametrize("check,fault,optional,verdicts", CASES,
                         ids=[f"{c[0]}-{next(iter(c[1].items()))}" for c in CASES])
def test_fault_is_caught_and_named_in_the_report(commissioned, tmp_path, check, fault, optional,
                                                 verdicts):
    record_dir, history = copy_bench(commissioned, tmp_path / "bench")
    result = calibrate(camera(1, OpticalFaults(**fault), skip_frames=7), record_dir, history,
                       optional=optional, allow_fail=True)
    by = {r.name: r for r in result.results}
    assert by[check].verdict in verdicts, by[check].line()
    # the fault trips its own check and nothing else
    assert [r.name for r in result.results if r.verdict != "PASS"] == [check]
    assert by[check].fix  # says what to do
    # the signed report names it: JSON twin and HTML
    rec = CalibrationRecord.load(record_dir)
    qc = read_qc(rec)
    named = [c for c in qc["checks"] if c["name"] == check]
    assert named[0]["verdict"] == by[check].verdict
    doc = json.loads((record_dir / "report.json").read_text())
    assert any(c["name"] == check and c["verdict"] == by[check].verdict for c in doc["checks"])
    html = (record_dir / "report.html").read_text()
    assert f"<td>{check}</td><td style='color:" in html
    assert by[check].verdict in html


def test_magnitudes_are_checked():
    with pytest.raises(ConfigError, match=r"faults.lamp_dimming: expected a number in "
                                          r"\[0, 0.95\], got 1.5"):
        OpticalFaults(lamp_dimming=1.5)
    assert OpticalFaults().active() == {}
    assert OpticalFaults(tile_smudge=0.03).active() == {"tile_smudge": 0.03}
