"""``ReplayCamera``: serve a recording from disk through the :class:`~drivers.camera.Camera` contract.

Recordings: TIVITA ``.dat`` cubes, ENVI cubes, NPZ frame directories and ``.npy`` stacks (see
:mod:`drivers.formats.sequence`).  Frames come out as stored: uint16 raw counts, or float32
reflectance (TIVITA cubes are already reflectance, FACTS.md "TIVITA cube files").  Other stored
dtypes are converted losslessly or rejected: uint8 -> uint16; int16/int32 -> uint16 when every
value lies in 0..65535 (raw counts written by signed-integer ENVI writers), otherwise an error;
float64 -> float32.

Timing: ``fps=None`` serves frames as fast as they are read; otherwise a frame is never
delivered earlier than ``1/fps`` after the previous one (frames are paced, never dropped, so a
slow consumer sees every frame).  Trigger modes ``software`` (one frame per
:meth:`~drivers.camera.Camera.trigger`) and ``free_run``; a replay has no external trigger
input.  At the end of the recording :meth:`read` raises :class:`~edge.errors.DeviceTimeout`
saying the recording ended, unless ``loop=True``.

Metadata: taken from the recording (NPZ ``meta`` or the recorder's JSON sidecar) when present,
else from the camera settings.  A recording made by :class:`drivers.recorder.Recorder` says in
``recording.json`` which camera preset made it and its band width (FWHM): replay takes both
(:attr:`ReplayCamera.preset_name`, :attr:`~drivers.camera.Camera.fwhm_nm`) unless told, and an
explicit value that disagrees with the recording is refused (one line), so the frames are
processed as they were recorded.  It also takes the bands' mosaic offsets
(``camera.band_offsets``, :attr:`~drivers.camera.Camera.band_offsets`: (dy, dx) per band,
checked by :func:`edge.processing.register.check_band_offsets`), so a replayed snapshot
recording is registered like the live camera; a recording without them (older, or from a
camera without a mosaic) gives None.  An interrupted recording is refused (see
:mod:`drivers.formats.sequence`).  Values no sensor can deliver (counts above the recorded
bit depth, reflectance beyond +-100) are refused (:mod:`drivers.formats.checks`).  ``timestamp_ns`` is the replay time (``time.monotonic_ns()`` at
the trigger) so end-to-end latency is measured on this machine, unless
``original_timestamps=True``; with ``fps`` set, a trigger that comes before the frame's slot
counts from the slot (the pacing wait is not latency).  Frames with NaN/inf are passed on with ``"nonfinite"`` in
``frame.flags``; the count is logged and kept in :attr:`ReplayCamera.last_nonfinite_count`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from typing import Any

import numpy as np

from drivers.camera import Camera
from drivers.formats.checks import check_values
from drivers.formats.envi import envi_header_file, read_envi_header
from drivers.formats.envi import read_envi, write_envi  # noqa: F401  (re-exported)
from drivers.formats.npyseq import read_npz_frame, write_npz_frame  # noqa: F401
from drivers.formats.sequence import FrameSequence, LoadedFrame, open_sequence
from drivers.formats.tivita import read_tivita_cube, write_tivita_cube  # noqa: F401
from edge.core.frame import Frame, FrameMeta, validate_wavelengths
from edge.errors import ConfigError, DataFormatError, DeviceError, DeviceTimeout
from edge.physics.spectra import FWHM_RANGE_NM
from edge.processing.register import check_band_offsets

__all__ = ["ReplayCamera", "read_tivita_cube", "write_tivita_cube", "read_envi", "write_envi",
           "read_npz_frame", "write_npz_frame", "to_frame_dtype", "meta_from_dict",
           "single_fwhm_nm"]

log = logging.getLogger(__name__)
_META_FIELDS = {f.name for f in dataclasses.fields(FrameMeta)}
#: Per-band widths within this relative spread count as one width (their mean is used).
FWHM_EQUAL_RTOL = 0.01


def to_frame_dtype(cube: np.ndarray, source: str = "cube") -> np.ndarray:
    """Convert a stored cube to a Frame dtype (uint16 or float32) without losing values.

    Raises
    ------
    DataFormatError
        For signed integers outside 0..65535 or an unsupported dtype.
    """
    if cube.dtype in (np.uint16, np.float32):
        return cube
    if cube.dtype == np.uint8:
        return cube.astype(np.uint16)
    if cube.dtype == np.float64:
        return cube.astype(np.float32)
    if cube.dtype in (np.int16, np.int32):
        lo, hi = (int(cube.min()), int(cube.max())) if cube.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise DataFormatError(
                f"{source}: {cube.dtype} raw counts must lie in 0..65535 to replay as uint16, "
                f"got {lo}..{hi}")
        return cube.astype(np.uint16)
    raise DataFormatError(
        f"{source}: cannot replay dtype {cube.dtype}; expected uint8/uint16/int16/int32 counts "
        "or float32/float64 reflectance")


def single_fwhm_nm(fwhm: np.ndarray, source: str = "fwhm") -> float:
    """One band width (nm) for the camera from per-band widths.

    The unmixing basis integrates every band with one Gaussian width, so a camera has a single
    ``fwhm_nm``.  Widths equal within :data:`FWHM_EQUAL_RTOL` (1 %) of their mean give their
    mean; otherwise the median is used and one warning names the spread.

    Parameters
    ----------
    fwhm : ndarray of shape (bands,), float64
        Per-band full width at half maximum in nm, each finite and > 0 (as
        :func:`~drivers.formats.envi.read_envi_header` validates them).
    source : str
        Where the widths come from, for the warning.

    Returns
    -------
    float
    """
    fwhm = np.asarray(fwhm, dtype=np.float64)
    lo, hi, mean = float(fwhm.min()), float(fwhm.max()), float(fwhm.mean())
    if hi - lo <= FWHM_EQUAL_RTOL * mean:
        return mean
    median = float(np.median(fwhm))
    log.warning("%s: band widths (fwhm) differ across bands: %.4g-%.4g nm (spread %.1f %% of "
                "the median); the unmixing basis uses one width, taking the median %.4g nm",
                source, lo, hi, 100.0 * (hi - lo) / median, median)
    return median


def meta_from_dict(meta: dict[str, Any], source: str = "meta") -> FrameMeta:
    """Build a FrameMeta from a stored mapping, ignoring unknown keys (logged)."""
    unknown = set(meta) - _META_FIELDS
    if unknown:
        log.debug("%s: ignoring unknown meta keys %s", source, sorted(unknown))
    kwargs = {k: v for k, v in meta.items() if k in _META_FIELDS}
    try:
        return FrameMeta(**kwargs)
    except TypeError as exc:
        raise DataFormatError(f"{source}: bad frame metadata: {exc}") from exc


class ReplayCamera(Camera):
    """A camera that plays back a recording.

    Parameters
    ----------
    path : path-like
        File or directory (see :mod:`drivers.formats.sequence`).
    fps : float, optional
        Frame rate limit; None serves frames as fast as they are read.
    loop : bool
        Restart at the first frame after the last one instead of raising DeviceTimeout.
    wavelengths : array_like of shape (bands,), optional
        Band centres (nm) overriding those of the recording; required when the recording has
        none (ENVI without ``wavelength``, ``.npy`` without a sidecar).
    fwhm_nm : float, optional
        Band full width at half maximum (nm).  When None: the recording's (``recording.json``
        ``camera.fwhm_nm``, else an ENVI recording's ``fwhm`` header key, see
        :func:`single_fwhm_nm`), else it stays unknown.  Given, it must agree with
        ``recording.json`` (it wins over a hand-written ENVI ``fwhm``).
    preset : str, optional
        Camera preset the caller expects; must agree with ``recording.json`` ``camera.preset``
        when the recording names one.
    original_timestamps : bool
        Keep ``timestamp_ns`` from the recorded metadata instead of the replay time.
    cache : bool
        Keep every frame in memory after its first read (read-only cubes shared between
        passes), so looping benchmarks measure the pipeline, not the disk.

    Raises
    ------
    DataFormatError
        Missing path, no frames, unreadable first frame, no wavelengths, an ENVI ``fwhm``
        that is malformed or gives a width >= 500 nm, or a ``recording.json``
        ``camera.band_offsets`` that is not (bands, 2) finite numbers with |value| < 1.
    DeviceError
        ``fps`` not a positive finite number, or ``fwhm_nm`` outside (0, 500) nm.
    ConfigError
        ``fwhm_nm`` or ``preset`` given and different from what ``recording.json`` records.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None, loop: bool = False,
                 wavelengths: Any = None, original_timestamps: bool = False,
                 cache: bool = False, fwhm_nm: float | None = None,
                 preset: str | None = None) -> None:
        super().__init__()
        lo, hi = FWHM_RANGE_NM
        if fwhm_nm is not None and not (isinstance(fwhm_nm, (int, float))
                                        and lo <= fwhm_nm <= hi):
            raise DeviceError(f"fwhm_nm: expected a band width in nm in [{lo:g}, {hi:g}] or "
                              f"None, got {fwhm_nm!r}")
        self._fwhm_nm = None if fwhm_nm is None else float(fwhm_nm)
        if fps is not None and not (isinstance(fps, (int, float)) and np.isfinite(fps)
                                    and fps > 0):
            raise DeviceError(f"fps: expected a frame rate > 0 or None, got {fps!r}")
        self.path = os.fspath(path)
        self.fps = None if fps is None else float(fps)
        self.loop = bool(loop)
        self.original_timestamps = bool(original_timestamps)
        self._memory: dict[int, LoadedFrame] | None = {} if cache else None
        self._seq: FrameSequence = open_sequence(path, wavelengths)
        self._override_wl = None if wavelengths is None else np.asarray(wavelengths, np.float64)
        first = self._seq.load(0)
        cube = self._checked(first)
        self._shape = tuple(int(n) for n in cube.shape)  # type: ignore[assignment]
        self._wavelengths = self._frame_wavelengths(first, cube.shape[2])
        self._dtype = cube.dtype
        self._take_recorded_camera(preset)
        if self._fwhm_nm is None and self._seq.kind == "envi":
            self._fwhm_nm = self._envi_fwhm(self._seq.items[0])
        self._cached: tuple[int, LoadedFrame] | None = (0, first)
        meta = first.meta or {}
        recorded = dict(meta.get("serials", {})).get("camera")
        #: False when the recording does not say which camera made it (raw ENVI/.npy)
        self.serial_known = recorded is not None
        self._serial = str(recorded) if recorded is not None else f"replay:{self.path}"
        self._bit_depth = int(meta.get("bit_depth", 10))
        if "exposure_us" in meta:
            self._exposure_us = float(meta["exposure_us"])
        if "gain" in meta:
            self._gain = float(meta["gain"])
        self._pos = 0
        self._pass = 0
        self._max_id = -1
        self._min_id: int | None = None
        self._id_period = 0
        self._pending: collections.deque[int] = collections.deque()
        self._next_due = 0.0
        self.last_nonfinite_count = 0
        self.nonfinite_frames = 0
        log.info("replay %s: %d %s frame(s) of shape %s, %s", self.path, len(self._seq),
                 self._seq.kind, self._shape, self._dtype)

    # -- information --------------------------------------------------------------------
    @property
    def frame_count(self) -> int:
        """Number of frames in the recording."""
        return len(self._seq)

    @property
    def position(self) -> int:
        """Index of the next frame to be served."""
        return self._pos

    @property
    def exhausted(self) -> bool:
        """True once a non-looping recording has served its last frame (end of stream)."""
        return not self.loop and self._pos >= len(self._seq)

    @property
    def dtype(self) -> np.dtype:
        """dtype of the served cubes: uint16 raw counts or float32 reflectance."""
        return self._dtype

    def _frame_wavelengths(self, loaded: LoadedFrame, bands: int) -> np.ndarray:
        wl = self._override_wl if self._override_wl is not None else loaded.wavelengths
        if wl is None:
            raise DataFormatError(
                f"{loaded.source}: the recording has no wavelengths; give them in a sidecar "
                f"<name>.json next to it (key 'wavelengths': nm, one per band, ascending)")
        return validate_wavelengths(wl, bands=bands, name=f"{loaded.source}: wavelengths")

    def _take_recorded_camera(self, preset: str | None) -> None:
        """Preset, band width and band offsets from ``recording.json``; refuse explicit ones
        that differ."""
        recorded = (self._seq.manifest or {}).get("camera", {})
        where = f"{self.path}/recording.json" if self._seq.manifest is not None else self.path
        offsets = recorded.get("band_offsets")
        #: (dy, dx) per band from recording.json, ndarray (bands, 2) float64, or None
        self.band_offsets: np.ndarray | None = None if offsets is None else check_band_offsets(
            offsets, f"{where}: key 'camera.band_offsets'", bands=self._shape[2])
        rec_fwhm, rec_preset = recorded.get("fwhm_nm"), recorded.get("preset")
        if rec_fwhm is not None:
            if self._fwhm_nm is None:
                self._fwhm_nm = float(rec_fwhm)
            elif not np.isclose(self._fwhm_nm, rec_fwhm, rtol=1e-9, atol=0):
                raise ConfigError(
                    f"fwhm_nm: {self._fwhm_nm:g} nm given, but {where} records band widths of "
                    f"{rec_fwhm:g} nm; leave it unset to use the recording's, or make them agree")
        if preset is not None and rec_preset is not None and preset != rec_preset:
            raise ConfigError(
                f"preset: {preset!r} given, but {where} was made by a {rec_preset!r} camera; "
                "leave it unset to use the recording's, or make them agree")
        #: Camera preset that made the recording (recording.json), else the one given, or None
        self.preset_name: str | None = rec_preset if rec_preset is not None else preset

    def _checked(self, loaded: LoadedFrame) -> np.ndarray:
        """The cube in a Frame dtype, refused if it holds values no sensor can deliver."""
        cube = to_frame_dtype(loaded.cube, loaded.source)
        if self._seq.kind != "tivita":   # the TIVITA reader checks its own values
            depth = (loaded.meta or {}).get("bit_depth")   # only a bit depth the file states
            check_values(cube, loaded.source, bit_depth=depth)
        return cube

    @staticmethod
    def _envi_fwhm(item: os.PathLike) -> float | None:
        """The recording's single band width from the first ENVI header's ``fwhm``, or None."""
        header = envi_header_file(item)
        per_band = read_envi_header(header)["fwhm"]
        if per_band is None:
            return None
        value = single_fwhm_nm(per_band, str(header))
        if not value < 500:
            raise DataFormatError(
                f"{header}: ENVI key 'fwhm': expected band widths below 500 nm, got "
                f"{value:g} nm")
        return value

    # -- hooks ----------------------------------------------------------------------------
    def _do_configure(self, exposure_us: float | None, gain: float | None,
                      trigger_mode: str | None) -> None:
        if trigger_mode == "external":
            raise DeviceError(
                "trigger_mode: a ReplayCamera has no external trigger input; use 'software' or"
                " 'free_run'")

    def _do_arm(self) -> None:
        self._pending.clear()
        self._next_due = time.monotonic()

    def _do_disarm(self) -> None:
        self._pending.clear()

    def _do_trigger(self) -> None:
        self._pending.append(time.monotonic_ns())

    def rewind(self) -> None:
        """Serve the first frame next."""
        self._pos = 0
        self._pass = 0

    def _do_read(self, deadline: float) -> Frame:
        if self._trigger_mode == "software" and not self._pending:
            _sleep_until(deadline)
            raise DeviceTimeout(
                "replay: no frame: no software trigger pending; call trigger() before read()")
        if self._pos >= len(self._seq):
            if not self.loop:
                raise DeviceTimeout(
                    f"replay: the recording ended after {len(self._seq)} frame(s) "
                    f"({self.path}); pass loop=True to repeat it")
            self._pos = 0
            self._pass += 1
            # The next pass continues right after the last recorded id (ids 16..18 ->
            # 19..21): a wrap is not a missed trigger.  Gaps inside the recording stay gaps.
            span = self._max_id - self._min_id + 1 if self._min_id is not None else 0
            self._id_period = max(self._id_period, span, len(self._seq))
        due_ns = 0
        if self.fps is not None:
            if self._next_due > deadline:
                _sleep_until(deadline)
                raise DeviceTimeout(
                    f"replay: next frame due in {self._next_due - time.monotonic():.3f} s at "
                    f"{self.fps:g} fps, after the read timeout")
            _sleep_until(self._next_due)
            due_ns = int(self._next_due * 1e9)
            self._next_due = max(self._next_due + 1.0 / self.fps, time.monotonic())
        stamp = self._pending.popleft() if self._pending else time.monotonic_ns()
        # A trigger that came before the frame's slot fires when the slot opens: the wait for
        # the pace is not latency of the pipeline (end-to-end is measured from this stamp).
        stamp = max(stamp, due_ns)
        frame = self._build_frame(self._pos, stamp)
        self._pos += 1
        return frame

    # -- frame assembly ---------------------------------------------------------------------
    def _build_frame(self, index: int, stamp_ns: int) -> Frame:
        if self._memory is not None and index in self._memory:
            loaded = self._memory[index]
            cube = loaded.cube
        elif self._cached is not None and self._cached[0] == index:
            loaded = self._cached[1]      # checked when the camera was opened
            cube = to_frame_dtype(loaded.cube, loaded.source)
        else:
            loaded = self._seq.load(index)
            cube = self._checked(loaded)
        self._cached = None  # the first frame is kept only until it is served once
        if self._memory is not None and index not in self._memory:
            cube.flags.writeable = False  # shared by every pass: nobody may modify it
            loaded.cube = cube
            self._memory[index] = loaded
        if cube.shape != self._shape:
            raise DataFormatError(
                f"{loaded.source}: frame {index} has shape {cube.shape}, the recording started "
                f"with {self._shape}")
        wl = self._frame_wavelengths(loaded, cube.shape[2])
        if not np.array_equal(wl, self._wavelengths):
            raise DataFormatError(
                f"{loaded.source}: frame {index} has other wavelengths than the first frame "
                f"({wl[0]:g}-{wl[-1]:g} nm vs {self._wavelengths[0]:g}-{self._wavelengths[-1]:g} nm)")
        meta_in = dict(loaded.meta or {})
        if not self.original_timestamps:
            meta_in["timestamp_ns"] = stamp_ns
        if "frame_id" in meta_in:
            self._max_id = max(self._max_id, int(meta_in["frame_id"]))
            if self._pass == 0:
                fid0 = int(meta_in["frame_id"])
                self._min_id = fid0 if self._min_id is None else min(self._min_id, fid0)
            meta_in["frame_id"] = int(meta_in["frame_id"]) + self._pass * self._id_period
        else:
            meta_in["frame_id"] = index + self._pass * max(self._id_period, len(self._seq))
        meta_in.setdefault("exposure_us", self._exposure_us)
        meta_in.setdefault("gain", self._gain)
        meta_in.setdefault("bit_depth", self._bit_depth)
        meta_in.setdefault("serials", {"camera": self._serial})
        frame = Frame(cube, wl, meta_from_dict(meta_in, loaded.source),
                      truth=None if loaded.truth is None else dict(loaded.truth))
        self.last_nonfinite_count = 0
        if cube.dtype == np.float32 and cube.size and not (
                np.isfinite(cube.max()) and np.isfinite(cube.min())):
            # max/min propagate NaN and expose inf cheaply; count only when needed.
            count = int(cube.size - np.count_nonzero(np.isfinite(cube)))
            self.last_nonfinite_count = count
            self.nonfinite_frames += 1
            frame.flags.add("nonfinite")
            log.warning("%s: frame %d has %d NaN/inf value(s)", loaded.source,
                        frame.meta.frame_id, count)
        return frame


def _sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))
