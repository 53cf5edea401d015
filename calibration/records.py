"""Calibration records: dark/white references and masks on disk, with checksums.

A record is a directory::

    record.yaml       metadata: camera serial, exposures, gain, bit depth, temperature,
                      ISO time, wavelengths, shape, rho_ref, software version, and the
                      sha256 of every array file
    dark.npz          mean, std          (rows, cols, bands) float32, counts
    white.npz         mean, std          (rows, cols, bands) float32, counts
    white_dark.npz    mean, std          only when the white had its own dark exposure
    masks.npz         hot, dead, overexposed, underexposed   (rows, cols) bool
    report.html, ...  optional extra files a workflow signs with the record (the field
                      calibration's report, :mod:`calibration.qc`): checksummed in ``files``

``record.yaml`` may also hold ``qc``: the field calibration's quality control (verdicts,
operator, tiles, versions, valid-until; :mod:`calibration.qc`), covered by ``record_sha256``.
A record without it (``hsi-edge calibrate capture``, older versions) loads as before.

Saving never loses calibration data: the record is written into a temporary sibling directory
and renamed into place; an existing record is refused unless ``overwrite=True``, and then it is
renamed to ``<dir>.backup-<UTC timestamp>`` rather than deleted.  A save killed at any point is
finished or rolled back by the next save or load, with a warning (:mod:`calibration._replace`),
and its temporary folders are removed.  Loading verifies every checksum -- the array files'
and ``record_sha256``, the sha256 of record.yaml's own metadata (a record written before it
existed loads with a warning) -- and refuses physically impossible references (non-finite,
outside the sensor's range, white not above dark on most pixels), so a corrupt, truncated or
edited record is reported by name instead of producing wrong reflectance.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration import _replace
from calibration._checks import META_CHECKSUM_KEY, check_references, meta_checksum, meta_count
from calibration._checks import check_rho as _check_rho
from calibration._checks import meta_number as _num
from calibration._checks import meta_shape as _meta_shape
from calibration._checks import meta_temperature
from calibration._checks import meta_wavelengths as _wavelengths
from calibration.record_files import MASK_NAMES, RECORD_FILE, check_target, save_locked
from calibration.references import DarkReference, WhiteReference
from edge import __version__
from edge.core.config import load_yaml
from edge.core.fileio import sha256_file
from edge.errors import CalibrationError, ConfigError
from edge.processing.flatfield import FlatField

__all__ = ["CalibrationRecord", "RECORD_FILE", "MASK_NAMES"]

log = logging.getLogger(__name__)

_REQUIRED = ("camera_serial", "exposure_us", "white_exposure_us", "gain", "bit_depth",
             "created", "wavelengths", "shape", "rho_ref", "files")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class CalibrationRecord:
    """Dark and white references of one camera at one setting, with pixel masks.

    Attributes
    ----------
    dark, dark_std : ndarray of shape (rows, cols, bands), float32
        Dark at ``exposure_us`` (the frame exposure).
    white, white_std : ndarray of shape (rows, cols, bands), float32
        White tile at ``white_exposure_us``.
    white_dark, white_dark_std : ndarray or None
        Dark at ``white_exposure_us`` when it differs from ``exposure_us``.
    masks : dict of str to ndarray of shape (rows, cols), bool
        ``hot``, ``dead``, ``overexposed``, ``underexposed``.
    wavelengths : ndarray of shape (bands,), float64 nm
    qc : dict or None
        Field calibration QC (:mod:`calibration.qc`); None for a plain dark/white record.
    """

    dark: np.ndarray
    dark_std: np.ndarray
    white: np.ndarray
    white_std: np.ndarray
    masks: dict[str, np.ndarray]
    camera_serial: str
    exposure_us: float
    white_exposure_us: float
    gain: float
    bit_depth: int
    wavelengths: np.ndarray
    white_dark: np.ndarray | None = None
    white_dark_std: np.ndarray | None = None
    rho_ref: float | list[float] = 0.99
    temperature_c: float | None = None
    created: str = field(default_factory=_now_iso)
    software_version: str = __version__
    n_dark: int = 0
    n_white: int = 0
    qc: dict[str, Any] | None = None
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.dark.shape)  # type: ignore[return-value]

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_references(cls, dark: DarkReference, white: WhiteReference, *,
                        white_dark: DarkReference | None = None, rho_ref: Any = 0.99,
                        temperature_c: float | None = None) -> "CalibrationRecord":
        """Combine captured references into a record.

        Raises
        ------
        CalibrationError
            If the references come from different cameras, shapes or gains, or the white has
            a different exposure than ``dark`` and no ``white_dark`` at its exposure is given.
        """
        wd = white_dark if white_dark is not None else dark
        for name, ref in (("white", white), ("white_dark", wd)):
            if ref.serial != dark.serial:
                raise CalibrationError(
                    f"{name}: recorded on camera {ref.serial!r}, dark on {dark.serial!r}")
            if ref.mean.shape != dark.mean.shape:
                raise CalibrationError(
                    f"{name}: shape {ref.mean.shape} does not match dark shape {dark.mean.shape}")
            if ref.gain != dark.gain:
                raise CalibrationError(f"{name}: gain {ref.gain:g} differs from dark gain "
                                       f"{dark.gain:g}; capture all references at one gain")
        if wd.exposure_us != white.exposure_us:
            raise CalibrationError(
                f"white_dark: white captured at {white.exposure_us:g} µs but its dark at "
                f"{wd.exposure_us:g} µs; capture a dark at the white exposure (white_dark=)")
        masks = {"hot": dark.hot | (white_dark.hot if white_dark is not None else False),
                 "dead": white.dead, "overexposed": white.overexposed,
                 "underexposed": white.underexposed}
        rho = _check_rho(rho_ref, dark.mean.shape[2])
        return cls(dark=dark.mean, dark_std=dark.std, white=white.mean, white_std=white.std,
                   masks=masks, camera_serial=dark.serial, exposure_us=dark.exposure_us,
                   white_exposure_us=white.exposure_us, gain=dark.gain,
                   bit_depth=dark.bit_depth, wavelengths=np.asarray(dark.wavelengths, np.float64),
                   white_dark=None if white_dark is None else white_dark.mean,
                   white_dark_std=None if white_dark is None else white_dark.std,
                   rho_ref=float(rho) if rho.ndim == 0 else [float(v) for v in rho],
                   temperature_c=temperature_c, n_dark=dark.n_frames, n_white=white.n_frames)

    def flatfield(self) -> FlatField:
        """The :class:`~edge.processing.flatfield.FlatField` of this record.

        Hot and dead pixels become ``FLAG_BAD_PIXEL``, over-exposed white pixels
        ``FLAG_SATURATED``; under-exposure is recomputed from white - dark.
        """
        return FlatField.from_references(
            self.dark, self.white, self.white_dark, exposure_us=self.exposure_us,
            white_exposure_us=self.white_exposure_us, rho_ref=self.rho_ref,
            bit_depth=self.bit_depth, bad_pixels=self.masks["hot"] | self.masks["dead"],
            overexposed=self.masks["overexposed"])

    def check_compatible(self, camera_serial: str | None, shape: tuple[int, ...], exposure_us: float,
                         gain: float, *, wavelengths: Any = None, rtol: float = 1e-6,
                         wavelength_tol_nm: float = 0.01) -> None:
        """Raise CalibrationError naming every setting in which the camera differs.

        ``camera_serial`` None (a recording that does not name its camera) skips the serial
        check with a logged warning; every other setting is still checked.

        ``wavelengths`` (nm, optional) are compared band by band within
        ``wavelength_tol_nm``: a record of another band set with the same band count would
        otherwise calibrate every band against the wrong reference, silently.
        """
        diffs = []
        if camera_serial is None:
            log.warning("calibration record %s: the camera serial is unknown (a recording "
                        "without it); using the record of camera %r unchecked",
                        self.path or "", self.camera_serial)
        elif str(camera_serial) != self.camera_serial:
            diffs.append(f"camera serial {camera_serial!r} (record {self.camera_serial!r})")
        if tuple(int(n) for n in shape) != self.shape:
            diffs.append(f"shape {tuple(shape)} (record {self.shape})")
        if not np.isclose(exposure_us, self.exposure_us, rtol=rtol, atol=0):
            diffs.append(f"exposure {exposure_us:g} µs (record {self.exposure_us:g} µs)")
        if not np.isclose(gain, self.gain, rtol=rtol, atol=0):
            diffs.append(f"gain {gain:g} (record {self.gain:g})")
        if wavelengths is not None:
            wl = np.asarray(wavelengths, dtype=np.float64)
            if wl.shape != self.wavelengths.shape:
                if tuple(int(n) for n in shape) == self.shape:  # not already said by shape
                    diffs.append(f"{wl.size} wavelengths (record {self.wavelengths.size})")
            elif not np.allclose(wl, self.wavelengths, rtol=0, atol=wavelength_tol_nm):
                i = int(np.argmax(np.abs(wl - self.wavelengths)))
                diffs.append(f"wavelengths {wl[0]:g}-{wl[-1]:g} nm (record "
                             f"{self.wavelengths[0]:g}-{self.wavelengths[-1]:g} nm; band {i}: "
                             f"{wl[i]:g} vs {self.wavelengths[i]:g} nm)")
        if diffs:
            where = f" {self.path}" if self.path else ""
            raise CalibrationError(
                f"calibration record{where} does not fit the camera: " + "; ".join(diffs)
                + "; capture a new dark/white for these settings")

    def metadata(self) -> dict[str, Any]:
        """The record's metadata as written to ``record.yaml`` (without checksums)."""
        return {"camera_serial": self.camera_serial, "exposure_us": float(self.exposure_us),
                "white_exposure_us": float(self.white_exposure_us), "gain": float(self.gain),
                "bit_depth": int(self.bit_depth),
                "temperature_c": None if self.temperature_c is None else float(self.temperature_c),
                "created": self.created, "software_version": self.software_version,
                "shape": list(self.shape), "rho_ref": self.rho_ref,
                "n_dark": int(self.n_dark), "n_white": int(self.n_white),
                "wavelengths": [float(v) for v in self.wavelengths],
                **({} if self.qc is None else {"qc": self.qc})}

    def mask_counts(self) -> dict[str, int]:
        return {k: int(np.count_nonzero(v)) for k, v in self.masks.items()}

    # -- disk -----------------------------------------------------------------------------
    #: See :func:`calibration.record_files.check_target`.
    check_target = staticmethod(check_target)

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False,
             extra_files: dict[str, bytes] | None = None) -> Path:
        """Write the record atomically into ``directory``; returns its path.

        ``extra_files`` (file name -> bytes, e.g. a signed report) are written in the same
        atomic step and checksummed in ``files`` like the arrays.

        Raises
        ------
        CalibrationError
            If ``directory`` already holds something and ``overwrite`` is False (the existing
            record is then untouched), or it is a file.
        """
        target = Path(directory)
        extra = dict(extra_files or {})
        for name in extra:
            if Path(name).name != name or name.startswith(".") or name == RECORD_FILE \
                    or name.endswith(".npz"):
                raise CalibrationError(f"extra_files: {name!r} is not allowed (a plain file "
                                       f"name, not {RECORD_FILE} nor an .npz)")
        check_target(target, overwrite=overwrite)
        with _replace.parent_lock(target):
            _replace.recover(target, self._problem)
            save_locked(self, target, check_target(target, overwrite=overwrite), extra)
        self.path = target
        log.info("calibration record saved to %s", target)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CalibrationRecord":
        """Read a record and verify the checksum of every array file.

        Raises
        ------
        CalibrationError
            Missing directory or ``record.yaml``, invalid YAML or missing keys, a missing,
            corrupt or truncated array file (named), or arrays that do not match the metadata.
        """
        d = Path(directory)
        with _replace.parent_lock(d):
            _replace.recover(d, cls._problem)
        return cls._load(d)

    @classmethod
    def _problem(cls, directory: Path) -> str | None:
        """Why the record in ``directory`` does not load (None: complete and verified)."""
        try:
            cls._load(directory, quiet=True)
        except CalibrationError as exc:
            return str(exc)
        return None

    @classmethod
    def _load(cls, d: Path, quiet: bool = False) -> "CalibrationRecord":
        meta_path = d / RECORD_FILE
        if not meta_path.is_file():
            raise CalibrationError(f"{d}: not a calibration record ({RECORD_FILE} missing)")
        try:
            meta = load_yaml(meta_path, what="calibration record")
        except ConfigError as exc:
            detail = str(exc).removeprefix(f"{meta_path}: ")
            raise CalibrationError(f"{meta_path}: cannot read record metadata: {detail}") from None
        if not isinstance(meta, dict):
            raise CalibrationError(f"{meta_path}: expected a mapping of metadata keys")
        missing = [k for k in _REQUIRED if k not in meta]
        if missing:
            raise CalibrationError(f"{meta_path}: missing key(s) {', '.join(missing)}")

        files = meta["files"]
        if not (isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in files.items())):
            raise CalibrationError(f"{meta_path}: 'files': expected a mapping of file name to "
                                   f"sha256, got {files!r}"[:300])
        for name in files:
            if Path(name).name != name or name.startswith("."):
                # a checksummed name must stay inside the record folder
                raise CalibrationError(f"{meta_path}: 'files': {name!r} is not a file name "
                                       "inside the record")
        for name in ("dark.npz", "white.npz", "masks.npz"):
            if name not in files:
                raise CalibrationError(f"{meta_path}: 'files' does not list {name}")
        data: dict[str, dict[str, np.ndarray]] = {}
        for name, digest in files.items():
            path = d / name
            if not path.is_file():
                raise CalibrationError(f"{path}: calibration file missing")
            actual = sha256_file(path)
            if actual != digest:
                raise CalibrationError(
                    f"{path}: checksum mismatch (expected sha256 {digest[:16]}..., got "
                    f"{actual[:16]}...): the file is corrupt, truncated or was modified")
            if not name.endswith(".npz"):
                continue  # a signed extra file (report): its checksum is all there is to check
            try:
                with np.load(path, allow_pickle=False) as npz:
                    data[name] = {k: npz[k] for k in npz.files}
            except Exception as exc:  # zip/format errors of every kind
                raise CalibrationError(f"{path}: cannot read calibration arrays: {exc}") from exc
        shape = _meta_shape(meta_path, meta["shape"])
        wd = data.get("white_dark.npz")
        try:
            rec = cls(dark=data["dark.npz"]["mean"], dark_std=data["dark.npz"]["std"],
                      white=data["white.npz"]["mean"], white_std=data["white.npz"]["std"],
                      masks={k: data["masks.npz"][k].astype(bool) for k in MASK_NAMES},
                      camera_serial=str(meta["camera_serial"]),
                      exposure_us=_num(meta_path, meta, "exposure_us"),
                      white_exposure_us=_num(meta_path, meta, "white_exposure_us"),
                      gain=_num(meta_path, meta, "gain"),
                      bit_depth=int(_num(meta_path, meta, "bit_depth", int)),
                      wavelengths=_wavelengths(meta_path, meta["wavelengths"]),
                      white_dark=None if wd is None else wd["mean"],
                      white_dark_std=None if wd is None else wd["std"],
                      rho_ref=meta["rho_ref"], temperature_c=meta_temperature(meta_path, meta),
                      created=str(meta["created"]),
                      software_version=str(meta.get("software_version", "unknown")),
                      n_dark=meta_count(meta_path, meta, "n_dark"),
                      n_white=meta_count(meta_path, meta, "n_white"),
                      qc=meta.get("qc"), path=d)
        except KeyError as exc:
            raise CalibrationError(f"{d}: calibration array {exc} missing") from exc
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"{meta_path}: bad metadata value: {exc}") from exc
        if rec.qc is not None and not isinstance(rec.qc, dict):
            raise CalibrationError(f"{meta_path}: qc: expected a mapping (field calibration "
                                   f"QC), got {rec.qc!r}"[:300])
        for key in ("exposure_us", "white_exposure_us", "gain"):
            value = getattr(rec, key)
            if not (np.isfinite(value) and value > 0):
                raise CalibrationError(f"{meta_path}: {key}: expected a number > 0, got {value!r}")
        if not 1 <= rec.bit_depth <= 16:
            raise CalibrationError(
                f"{meta_path}: bit_depth: expected an integer 1-16, got {rec.bit_depth}")
        try:
            _check_rho(rec.rho_ref, shape[2])
        except CalibrationError as exc:
            raise CalibrationError(f"{meta_path}: {exc}") from None
        for name, arr in (("dark", rec.dark), ("white", rec.white), ("white_dark", rec.white_dark)):
            if arr is not None and arr.shape != shape:
                raise CalibrationError(
                    f"{d}: {name} has shape {arr.shape}, record.yaml says {shape}")
        for name, m in rec.masks.items():
            if m.shape != shape[:2]:
                raise CalibrationError(f"{d}: mask {name} has shape {m.shape}, expected "
                                       f"{shape[:2]}")
        if rec.wavelengths.shape != (shape[2],) or not np.all(np.isfinite(rec.wavelengths)):
            raise CalibrationError(
                f"{meta_path}: wavelengths: expected {shape[2]} finite values (one per band), "
                f"got {rec.wavelengths.size}")
        # Saturated/under-exposed pixels are usable information (a too-bright white is a
        # capture mistake, said at capture); hot and dead pixels and no light are not.
        unusable = rec.masks["hot"] | rec.masks["dead"]
        check_references(d, {"dark": rec.dark, "dark_std": rec.dark_std, "white": rec.white,
                             "white_std": rec.white_std, "white_dark": rec.white_dark,
                             "white_dark_std": rec.white_dark_std}, rec.bit_depth, unusable)
        # Last, so that a bad value is named; an edit that leaves every value plausible (a
        # changed exposure, serial or rho_ref) is caught here.
        if META_CHECKSUM_KEY not in meta:
            if not quiet:
                log.warning("%s: no %s (written by an older version): its metadata cannot be "
                            "verified; save the record again to add one", meta_path,
                            META_CHECKSUM_KEY)
        elif meta[META_CHECKSUM_KEY] != meta_checksum(meta):
            raise CalibrationError(
                f"{meta_path}: {META_CHECKSUM_KEY}: the metadata does not match its checksum "
                f"(edited or corrupt); restore the record from its backup or capture a new one")
        return rec

