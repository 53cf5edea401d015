"""Dark and white references captured from any :class:`drivers.camera.Camera`.

Practice (FACTS.md, "Calibration practice"): average ~100 dark frames at the same exposure,
gain and temperature (lens capped or LEDs off); expose the white tile to read ~75 % of full
scale and flag pixels over 900/1023 (over-exposed) or under 40/1023 (under-exposed) of full
scale (DKFZ XiLens recorder thresholds), scaled to the camera's bit depth.  Redo the dark at
every setting change.

Pixel masks (bool, shape (rows, cols); a pixel is flagged if any band qualifies):

- ``hot`` (dark): dark mean above ``median + hot_sigma * 1.4826 * MAD`` of that band over all
  pixels (robust outlier rule; at least 1 count above the median so a noiseless synthetic dark
  flags nothing);
- ``overexposed`` (white): white mean > 900/1023 of full scale;
- ``underexposed`` (white): white - dark < 40/1023 of full scale (white alone if no dark);
- ``dead`` (white, needs the dark): no band responds to light: ``white - dark <=
  max(5 * sqrt(std_white**2 + std_dark**2), 1 count)`` in every band.

The capture functions put the camera in software-trigger mode, grab ``n`` frames and average
them with Welford's update in float64 (numerically safe for long series).  Whoever calls them
must first make the scene dark (cap, LEDs off) or put the white tile in view; for the simulated
camera that is its ``target`` attribute.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from drivers.camera import Camera
from edge.errors import CalibrationError

__all__ = ["DarkReference", "WhiteReference", "capture_dark", "capture_white", "average_frames",
           "hot_pixels", "OVEREXPOSED_FRACTION", "UNDEREXPOSED_FRACTION"]

log = logging.getLogger(__name__)

OVEREXPOSED_FRACTION = 900.0 / 1023.0   #: XiLens over-exposure threshold (FACTS.md)
UNDEREXPOSED_FRACTION = 40.0 / 1023.0   #: XiLens under-exposure threshold (FACTS.md)
_MAD_TO_SIGMA = 1.4826                  # MAD of a normal distribution times this = sigma


@dataclass
class _Averaged:
    mean: np.ndarray
    std: np.ndarray
    n: int
    exposure_us: float
    gain: float
    serial: str
    bit_depth: int
    wavelengths: np.ndarray


@dataclass
class DarkReference:
    """Averaged dark frames.

    Attributes
    ----------
    mean, std : ndarray of shape (rows, cols, bands), float32
        Per-element mean and standard deviation (noise) over ``n_frames`` frames, counts.
    hot : ndarray of shape (rows, cols), bool
    exposure_us, gain : float
    n_frames : int
    serial : str
    bit_depth : int
    wavelengths : ndarray of shape (bands,), float64 nm
    """

    mean: np.ndarray
    std: np.ndarray
    hot: np.ndarray
    exposure_us: float
    gain: float
    n_frames: int
    serial: str
    bit_depth: int
    wavelengths: np.ndarray


@dataclass
class WhiteReference:
    """Averaged white-tile frames (attributes as :class:`DarkReference`, plus masks).

    Attributes
    ----------
    overexposed, underexposed, dead : ndarray of shape (rows, cols), bool
        ``dead`` is all False when no dark was given.
    """

    mean: np.ndarray
    std: np.ndarray
    overexposed: np.ndarray
    underexposed: np.ndarray
    dead: np.ndarray
    exposure_us: float
    gain: float
    n_frames: int
    serial: str
    bit_depth: int
    wavelengths: np.ndarray


def average_frames(camera: Camera, n: int, *, exposure_us: float | None = None,
                   gain: float | None = None, timeout: float = 2.0, progress: bool = False,
                   what: str = "frames") -> _Averaged:
    """Grab ``n`` software-triggered raw frames and return their per-element mean and std.

    Raises
    ------
    CalibrationError
        ``n`` < 1, a frame is not raw uint16, or shape/exposure/gain change between frames.
    DeviceError
        From the camera (timeouts, configuration).
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise CalibrationError(f"n: expected a number of frames >= 1, got {n!r}")
    was_armed = camera.is_armed
    camera.open()
    if camera.trigger_mode != "software":
        camera.disarm()
        camera.configure(trigger_mode="software")
    if exposure_us is not None or gain is not None:
        camera.configure(exposure_us=exposure_us, gain=gain)
    camera.arm()
    mean = m2 = None
    first = None
    frames = range(int(n))
    if progress:
        from tqdm import tqdm
        frames = tqdm(frames, desc=f"capturing {what}", unit="frame")
    try:
        for k in frames:
            frame = camera.grab(timeout)
            if not frame.is_raw:
                raise CalibrationError(
                    f"{what}: references need raw uint16 frames, camera {camera.serial} "
                    f"delivered {frame.cube.dtype} (already calibrated data?)")
            if first is None:
                first = frame
                mean = np.zeros(frame.shape, np.float64)
                m2 = np.zeros(frame.shape, np.float64)
            elif (frame.shape != first.shape or frame.meta.exposure_us != first.meta.exposure_us
                  or frame.meta.gain != first.meta.gain):
                raise CalibrationError(
                    f"{what}: frame {k} changed shape/exposure/gain during capture: "
                    f"{frame.shape}, {frame.meta.exposure_us:g} µs, gain {frame.meta.gain:g} vs "
                    f"{first.shape}, {first.meta.exposure_us:g} µs, gain {first.meta.gain:g}")
            # Welford: stable running mean and sum of squared deviations.
            x = frame.cube.astype(np.float64)
            delta = x - mean
            mean += delta / (k + 1)
            x -= mean
            m2 += delta * x
    finally:
        if not was_armed:
            camera.disarm()
    std = np.sqrt(m2 / (n - 1)) if n > 1 else np.zeros_like(m2)
    return _Averaged(mean, std, int(n), float(first.meta.exposure_us), float(first.meta.gain),
                     camera.serial, int(first.meta.bit_depth), first.wavelengths.copy())


def hot_pixels(dark_mean: np.ndarray, hot_sigma: float = 6.0) -> np.ndarray:
    """Pixels whose dark level is a robust outlier in any band (see module docstring).

    Parameters
    ----------
    dark_mean : ndarray of shape (rows, cols, bands)
    hot_sigma : float

    Returns
    -------
    ndarray of shape (rows, cols), bool
    """
    flat = dark_mean.reshape(-1, dark_mean.shape[2])
    med = np.median(flat, axis=0)
    mad = np.median(np.abs(flat - med), axis=0)
    limit = med + np.maximum(hot_sigma * _MAD_TO_SIGMA * mad, 1.0)
    return (dark_mean > limit).any(axis=2)


def capture_dark(camera: Camera, n: int = 100, *, exposure_us: float | None = None,
                 gain: float | None = None, timeout: float = 2.0, hot_sigma: float = 6.0,
                 progress: bool = False) -> DarkReference:
    """Average ``n`` dark frames (scene must be dark) and find hot pixels.

    Parameters
    ----------
    camera : Camera
        Any camera; left armed in software mode if it was armed, else disarmed.
    n : int
        Number of frames (FACTS.md recommends ~100).
    exposure_us, gain : float, optional
        Settings to apply first; None keeps the camera's.
    timeout : float
        Per-frame read timeout in seconds.
    hot_sigma : float
        Outlier threshold in robust standard deviations.
    """
    avg = average_frames(camera, n, exposure_us=exposure_us, gain=gain, timeout=timeout,
                         progress=progress, what="dark")
    hot = hot_pixels(avg.mean, hot_sigma)
    log.info("dark: %d frames at %g µs, %d hot pixel(s)", n, avg.exposure_us, int(hot.sum()))
    return DarkReference(avg.mean.astype(np.float32), avg.std.astype(np.float32), hot,
                         avg.exposure_us, avg.gain, avg.n, avg.serial, avg.bit_depth,
                         avg.wavelengths)


def capture_white(camera: Camera, n: int = 20, *, dark: DarkReference | None = None,
                  exposure_us: float | None = None, gain: float | None = None,
                  timeout: float = 2.0, progress: bool = False) -> WhiteReference:
    """Average ``n`` frames of the white tile and flag over-/under-exposed and dead pixels.

    Parameters
    ----------
    dark : DarkReference, optional
        Dark at the white's exposure (needed for ``dead`` and a dark-corrected
        ``underexposed``).

    Raises
    ------
    CalibrationError
        If ``dark`` has a different shape or serial than the white frames.
    """
    avg = average_frames(camera, n, exposure_us=exposure_us, gain=gain, timeout=timeout,
                         progress=progress, what="white")
    full = 2.0 ** avg.bit_depth - 1.0
    over = (avg.mean > OVEREXPOSED_FRACTION * full).any(axis=2)
    if dark is not None:
        if dark.mean.shape != avg.mean.shape:
            raise CalibrationError(
                f"dark: shape {dark.mean.shape} does not match the white frames {avg.mean.shape}")
        if dark.serial != avg.serial:
            raise CalibrationError(
                f"dark: recorded on camera {dark.serial!r}, white on {avg.serial!r}")
        if dark.exposure_us != avg.exposure_us:
            log.warning("white: dark exposure %g µs differs from the white's %g µs",
                        dark.exposure_us, avg.exposure_us)
        span = avg.mean - dark.mean
        noise = np.sqrt(avg.std.astype(np.float64) ** 2 + dark.std.astype(np.float64) ** 2)
        dead = (span <= np.maximum(5.0 * noise, 1.0)).all(axis=2)
    else:
        span = avg.mean
        dead = np.zeros(avg.mean.shape[:2], bool)
    under = (span < UNDEREXPOSED_FRACTION * full).any(axis=2)
    peak = float(np.median(avg.mean.max(axis=2))) / full
    if not 0.5 <= peak <= 0.9:
        log.warning("white: median peak level is %.0f %% of full scale; aim for about 75 %%",
                    100 * peak)
    log.info("white: %d frames at %g µs, %d over-, %d under-exposed, %d dead pixel(s)", n,
             avg.exposure_us, int(over.sum()), int(under.sum()), int(dead.sum()))
    return WhiteReference(avg.mean.astype(np.float32), avg.std.astype(np.float32), over, under,
                          dead, avg.exposure_us, avg.gain, avg.n, avg.serial, avg.bit_depth,
                          avg.wavelengths)
