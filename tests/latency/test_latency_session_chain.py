"""The latency session measures the chain of ``hsi-edge run``: it is built by the same
assembly (edge.pipeline.assembly), so the calibration record goes through the calibration
gate (loaded once) and its verdict is stored with the arm."""

from __future__ import annotations

import pytest

from drivers.simulated import SimulatedCamera
from edge.latency.session import LatencySession, config_with_overrides
from sim_records import count_record_loads, save_simulated_record

PRESET, ROWS, COLS = "snapshot16", 12, 16


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    return save_simulated_record(tmp_path_factory.mktemp("rec") / "rec",
                                 SimulatedCamera(PRESET, rows=ROWS, cols=COLS, seed=0,
                                                 noise="exact"))


def test_session_goes_through_the_calibration_gate(record, tmp_path, monkeypatch):
    cfg_path = tmp_path / "unit.yaml"
    cfg_path.write_text(f"camera: {{preset: {PRESET}, rows: {ROWS}, cols: {COLS}, seed: 0, "
                        f"exposure_us: 8000.0, fps: 50}}\n"
                        f"calibration: {{record: '{record}', history: '{tmp_path / 'h'}'}}\n"
                        f"processing: {{backend: numpy}}\n")
    loads = count_record_loads(monkeypatch)
    cfg = config_with_overrides(str(cfg_path), model="none")
    with LatencySession(cfg, bank_size=2) as s:
        rec = s.run_round(3, warmup=1)
    assert loads == [str(record)]
    cal = s.info["calibration"]
    assert cal["state"] == "unchecked" and cal["flat_field_applied"] is True
    assert s.info["stages"] == ["chain"] and s.info["runtime"] is None
    assert len(rec) == 4 and rec.rounds[0]["void"] == []
