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
failed       ``refuse``: stops; ``warn`` (default): calibrated with the record's flat field
             (the segmentation sees reflectance) but no quantitative maps, every output
             marked "FAILED CALIBRATION"; ``uncalibrated``: as for an expired record (no flat
             field, no quantitative maps, "UNCALIBRATED").  A failed record yields StO2 maps
             only when ``calibration.force_quantitative`` is true (then calibrated, marked
             "FAILED CALIBRATION", under ``warn`` and ``uncalibrated`` alike)
============ ====================================================================

A recording of float reflectance (e.g. TIVITA ``.dat``) is never flat-fielded: the record is
not applied (said in the log) and no nominal flat field is built either; ``flat_field_applied``
in metrics.json is then false.  The record is loaded once per run (:func:`calibration_gate`),
and the same object gives the flat field (:func:`edge.pipeline.reference.obtain_flatfield`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    #: The loaded :class:`calibration.records.CalibrationRecord` (loaded once per run).
    record: Any = field(default=None, compare=False, repr=False)

    def metrics(self, flat_field_applied: bool | None = None) -> dict[str, Any]:
        """The ``calibration`` block of metrics.json; ``flat_field_applied`` is what the run
        did (False for a float reflectance recording), default the policy's decision."""
        applied = self.apply_flatfield if flat_field_applied is None else flat_field_applied
        return {**self.status, "policy": self.policy, "flat_field_applied": bool(applied),
                "quantitative_maps": self.quantitative, "outputs_marked": self.mark}

    def flatfield(self, camera, obtain):
        """The flat field of the run and whether it calibrates the frames.

        ``obtain(record)`` gives the record's flat field (None for a camera that delivers
        float reflectance); it is called when the policy applies the record, and for a
        float camera (which gets no flat field at all, never a nominal one).  Otherwise the
        raw counts get a nominal flat field (counts / full scale, no dark): frames stay
        uncalibrated and say so.

        Returns
        -------
        (FlatField or None, bool)
        """
        if self.apply_flatfield or camera.dtype != np.uint16:
            ff = obtain(self.record)
            return ff, ff is not None and self.apply_flatfield
        from edge.processing.flatfield import FlatField
        full = float(2 ** camera.bit_depth - 1)
        zeros = np.zeros(camera.shape, np.float32)
        return FlatField.from_references(zeros, np.full(camera.shape, full, np.float32),
                                         exposure_us=camera.exposure_us,
                                         white_exposure_us=camera.exposure_us, rho_ref=1.0,
                                         bit_depth=camera.bit_depth), False

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

    def decide(apply: bool, quantitative: bool, mark: str | None) -> CalibrationGate:
        return CalibrationGate(st.as_dict(), policy, apply, quantitative, mark, record)

    if st.state in ("valid", "unchecked"):
        if st.state == "unchecked":
            log.warning("calibration record %s: %s", cal.record, st.reason)
        return decide(True, True, None)
    if policy == "refuse":
        raise CalibrationError(f"calibration.record {cal.record}: {st.state}: {st.reason}; "
                               f"expiry_policy is refuse: {fix}")
    if st.state == "failed":
        if force:
            log.warning("calibration record %s FAILED (%s); quantitative maps forced by "
                        "calibration.force_quantitative", cal.record, st.reason)
            return decide(True, True, "FAILED CALIBRATION")
        log.warning("calibration record %s FAILED (%s): no StO2 or other quantitative maps; %s",
                    cal.record, st.reason, fix)
        return decide(policy == "warn", False,
                      "FAILED CALIBRATION" if policy == "warn" else "UNCALIBRATED")
    if policy == "uncalibrated":
        log.warning("calibration record %s %s: running uncalibrated (no flat field, no "
                    "quantitative maps); %s", cal.record, st.reason, fix)
        return decide(False, force, "UNCALIBRATED")
    log.warning("calibration record %s: %s: every output is marked EXPIRED CALIBRATION; %s",
                cal.record, st.reason, fix)
    return decide(True, True, "EXPIRED CALIBRATION")
