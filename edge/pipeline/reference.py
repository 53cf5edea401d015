"""Reference capture for the main job: the flat field from a saved calibration record, or
dark and white references captured from a camera that can show its own targets."""

from __future__ import annotations

import logging

import numpy as np

from edge.errors import CalibrationError
from edge.pipeline.config import AppConfig

__all__ = ["obtain_flatfield"]

log = logging.getLogger(__name__)


def obtain_flatfield(cfg: AppConfig, camera, *, progress: bool = False, record=None):
    """The flat-field for this camera: from a saved record, or captured now.

    Returns None for cameras that deliver float32 reflectance (e.g. TIVITA recordings).

    Parameters
    ----------
    record : CalibrationRecord, optional
        ``calibration.record`` already loaded (by the calibration gate: a run loads it
        once); default: loaded here when ``calibration.record`` is set.

    Raises
    ------
    CalibrationError
        The record does not fit the camera (serial, shape, exposure, gain), or the camera
        cannot capture references (no record given for a raw replay).
    """
    from calibration.records import CalibrationRecord

    cal = cfg.calibration
    frame_is_raw = camera.dtype == np.uint16
    if not frame_is_raw:
        if cal.record:
            # Said, not silent: the user asked for a record that will not be applied.
            log.warning("calibration.record %s is not applied: the recording holds calibrated "
                        "reflectance (%s), not raw counts", cal.record, camera.dtype)
        return None
    if cal.record or record is not None:
        if record is None:
            record = CalibrationRecord.load(cal.record)
        serial = camera.serial if camera.serial_known else None
        record.check_compatible(serial, camera.shape, camera.exposure_us, camera.gain,
                                wavelengths=camera.wavelengths)
        return record.flatfield()
    if camera.target is None:
        raise CalibrationError(
            "calibration.record: this camera cannot capture dark/white references by itself; "
            "give a record from `hsi-edge calibrate capture`")
    from calibration.references import capture_dark, capture_white

    # References are captured with software triggers; an externally triggered camera is
    # switched over for the capture and back afterwards.
    mode = camera.trigger_mode
    if mode != "software":
        camera.disarm()
        camera.configure(trigger_mode="software")
    camera.target = "dark"
    try:
        dark = capture_dark(camera, cal.frames, progress=progress)
        camera.target = "white"
        white = capture_white(camera, cal.frames, dark=dark, progress=progress)
    finally:
        camera.target = "scene"
        if mode != "software":
            camera.disarm()
            camera.configure(trigger_mode=mode)
    return CalibrationRecord.from_references(dark, white, rho_ref=cal.rho_ref).flatfield()
