"""How ``hsi-edge run`` reacts to its calibration record's verdict and expiry (issue 12).

Decided before any device moves (:func:`calibration_gate`), from the record's status
(:func:`calibration.status.record_status`) and ``calibration.expiry_policy``:

============ ====================================================================
status       what the run does
============ ====================================================================
valid        calibrated, every output as usual
unchecked    as valid (a record without field QC, e.g. ``calibrate capture``), said in the log
             and metrics.json
expired      ``warn`` (default): calibrated with the expired record, every output marked
             ("EXPIRED CALIBRATION" on the PNGs, ``calibration_mark`` in the NPZ, metrics.json);
             ``refuse``: stops with one line; ``uncalibrated``: no flat field (counts /
             full scale), no quantitative maps (StO2, THb, indices), outputs marked
             "UNCALIBRATED"
failed       ``refuse``: stops; otherwise as ``uncalibrated`` -- a failed record never yields
             StO2 maps unless ``calibration.force_quantitative`` is true (then as ``warn``,
             marked "FAILED CALIBRATION")
============ ====================================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edge.core.frame import Frame
from edge.errors import CalibrationError
from edge.pipeline.config import AppConfig
from edge.pipeline.stages import Stage

__all__ = ["CalibrationGate", "calibration_gate", "MarkStage", "QUANTITATIVE"]

log = logging.getLogger(__name__)

#: Products withheld when a run may not be quantitative.
QUANTITATIVE = ("sto2", "thb", "sto2_index", "nir", "thi", "twi", "sto2_sigma", "sto2_all")


@dataclass(frozen=True)
class CalibrationGate:
    """The decision for one run."""

    status: dict[str, Any]
    policy: str
    apply_flatfield: bool
    quantitative: bool
    mark: str | None

    def metrics(self) -> dict[str, Any]:
        return {**self.status, "policy": self.policy, "flat_field_applied": self.apply_flatfield,
                "quantitative_maps": self.quantitative, "outputs_marked": self.mark}

    def flatfield(self, camera, obtain):
        """The flat field of the run: ``obtain()`` (the record's) when it applies, else a
        nominal one (counts / full scale, no dark): frames stay uncalibrated and say so."""
        if self.apply_flatfield:
            return obtain()
        import numpy as np

        from edge.processing.flatfield import FlatField
        full = float(2 ** camera.bit_depth - 1)
        zeros = np.zeros(camera.shape, np.float32)
        return FlatField.from_references(zeros, np.full(camera.shape, full, np.float32),
                                         exposure_us=camera.exposure_us,
                                         white_exposure_us=camera.exposure_us, rho_ref=1.0,
                                         bit_depth=camera.bit_depth)

    def stage(self) -> "MarkStage | None":
        return None if self.mark is None and self.quantitative else MarkStage(self)


class MarkStage(Stage):
    """Marks every frame (``products["calibration_mark"]``) and withholds quantitative maps."""

    name = "calibration_mark"

    def __init__(self, gate: CalibrationGate) -> None:
        self.gate = gate

    def process(self, frame: Frame) -> Frame:
        if not self.gate.quantitative:
            for key in QUANTITATIVE:
                frame.products.pop(key, None)
        if self.gate.mark:
            frame.products["calibration_mark"] = self.gate.mark
        return frame


def calibration_gate(cfg: AppConfig) -> CalibrationGate | None:
    """Judge ``cfg.calibration.record`` before any device moves; None without a record.

    Raises
    ------
    CalibrationError
        The record does not load, or the policy refuses it (one line: status, reason, fix).
    """
    cal = cfg.calibration
    if not cal.record:
        return None
    from calibration.records import CalibrationRecord
    from calibration.status import default_history_root, record_status

    record = CalibrationRecord.load(cal.record)
    history = cal.history if cal.history else default_history_root(cal.record)
    st = record_status(record, history_root=history)
    policy, force = cal.expiry_policy, cal.force_quantitative
    fix = "run `hsi-edge calibrate field` (or set calibration.expiry_policy)"
    if st.state in ("valid", "unchecked"):
        if st.state == "unchecked":
            log.warning("calibration record %s: %s", cal.record, st.reason)
        return CalibrationGate(st.as_dict(), policy, True, True, None)
    if policy == "refuse":
        raise CalibrationError(f"calibration.record {cal.record}: {st.state}: {st.reason}; "
                               f"expiry_policy is refuse: {fix}")
    if st.state == "failed":
        if force:
            log.warning("calibration record %s FAILED (%s); quantitative maps forced by "
                        "calibration.force_quantitative", cal.record, st.reason)
            return CalibrationGate(st.as_dict(), policy, True, True, "FAILED CALIBRATION")
        log.warning("calibration record %s FAILED (%s): no StO2 or other quantitative maps; %s",
                    cal.record, st.reason, fix)
        return CalibrationGate(st.as_dict(), policy, policy == "warn", False,
                               "FAILED CALIBRATION" if policy == "warn" else "UNCALIBRATED")
    if policy == "uncalibrated":
        log.warning("calibration record %s %s: running uncalibrated (no flat field, no "
                    "quantitative maps); %s", cal.record, st.reason, fix)
        return CalibrationGate(st.as_dict(), policy, False, force, "UNCALIBRATED")
    log.warning("calibration record %s: %s: every output is marked EXPIRED CALIBRATION; %s",
                cal.record, st.reason, fix)
    return CalibrationGate(st.as_dict(), policy, True, True, "EXPIRED CALIBRATION")
