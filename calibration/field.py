"""The guided field calibration: identify -> environment -> warm-up -> dark -> white ->
verify -> optional checks -> sign (issue 12; ``../shared/research/field_calibration.md``
section 5).

Each step measures, judges its checks against the threshold table
(:mod:`calibration.thresholds`) and refuses to go on at a FAIL with what to fix
(:class:`CalibrationRefused`); nothing is written before *sign*, where the record is saved
atomically (the previous one kept as a backup), so an aborted or refused calibration leaves
the previous record in place.  Refused attempts are still appended to the camera's history.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration import checks as C
from calibration import checks_spectral as S
from calibration.certificates import Certificate
from calibration.history import History
from calibration.placers import Placer
from calibration.qc import read_qc, save_record
from calibration.records import CalibrationRecord
from calibration.references import average_frames, capture_dark, capture_white
from calibration.thresholds import FAIL, CheckResult, ThresholdTable, worst
from edge import __version__
from edge.errors import CalibrationError

__all__ = ["FieldSettings", "FieldCalibration", "FieldResult", "CalibrationRefused",
           "STEPS", "OPTIONAL"]

log = logging.getLogger(__name__)

STEPS = ("identify", "environment", "warmup", "dark", "white", "verify", "optional", "sign")
OPTIONAL = ("linearity", "snr", "wavelength", "mtf")


class CalibrationRefused(CalibrationError):
    """A step found a FAIL; ``step`` and ``results`` say which and why."""

    def __init__(self, step: str, results: list[CheckResult], where: str) -> None:
        bad = [r.line() for r in results if r.verdict == FAIL]
        super().__init__(f"field calibration refused at step '{step}': " + "; ".join(bad)
                         + f" ({where})")
        self.step, self.results = step, results


@dataclass
class FieldSettings:
    """Settings of one field calibration (frame counts small enough for the bench)."""

    exposure_us: float = 8000.0
    gain: float = 1.0
    operator: str = "unknown"
    n_env: int = 4
    n_dark: int = 32
    n_white: int = 16
    n_verify: int = 4
    placements: int = 3
    warmup_frames: int = 8
    warmup_interval_s: float = 60.0
    warmup_window_s: float = 300.0
    warmup_max_s: float = 1200.0
    optional: tuple[str, ...] = ()
    valid_hours: float = 24.0
    allow_fail: bool = False
    plots: bool = True


@dataclass
class FieldResult:
    record: CalibrationRecord | None
    results: list[CheckResult]
    qc: dict[str, Any]
    path: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class FieldCalibration:
    """One field calibration of ``camera`` into the record folder ``out``.

    Parameters
    ----------
    camera : drivers.camera.Camera
    placer : Placer
    certs : dict of str to Certificate
        ``white`` and ``grey_tile`` required; ``colour_tile``, ``wavelength_std`` and
        ``slanted_edge`` for their checks.
    out : path
        Record folder; a record already there is the previous calibration.
    table : ThresholdTable
    history_root : path, optional
        Folder of the per-serial histories (None: no history).
    tile_ids : dict of str to str, optional
        Tile ids read from the tiles, checked against their certificates.
    on_step : callable, optional
        ``on_step(step, results)`` after each step (the CLI prints the verdicts).
    """

    def __init__(self, camera, placer: Placer, certs: dict[str, Certificate], out, *,
                 settings: FieldSettings, table: ThresholdTable, history_root=None,
                 tile_ids: dict[str, str] | None = None, on_step=None) -> None:
        for role in ("white", "grey_tile"):
            if role not in certs:
                raise CalibrationError(f"certificates: a {role} certificate is required")
        bad = sorted(set(settings.optional) - set(OPTIONAL))
        if bad:
            raise CalibrationError(f"optional checks: unknown {', '.join(bad)}; allowed: "
                                   f"{', '.join(OPTIONAL)}")
        self.cam, self.placer, self.certs = camera, placer, certs
        self.on_step = on_step  # called (step, results) after each step: progress for people
        self.out, self.s, self.t = Path(out), settings, table
        self.tile_ids = dict(tile_ids or {})
        self.history = None if history_root is None else History(history_root, camera.serial)
        self.results: list[CheckResult] = []
        self.steps: dict[str, str] = {}
        self.extras: dict[str, Any] = {}
        self.previous, prev_qc = self._load_previous()
        comm = self.history.commissioning() if self.history else None
        self.baseline = (self.history.baseline() if self.history else None) \
            or prev_qc.get("baseline")
        self.factory_ref = (comm or {}).get("factory_calibration_hash") \
            or prev_qc.get("factory_calibration_hash")
        self.trend = self.history.trend(table) if self.history else []

    def _load_previous(self) -> tuple[CalibrationRecord | None, dict[str, Any]]:
        if not (self.out / "record.yaml").is_file():
            return None, {}
        try:
            rec = CalibrationRecord.load(self.out)
            qc = read_qc(rec) or {}
        except CalibrationError as exc:
            log.warning("previous record not usable for comparison: %s", exc)
            return None, {}
        if rec.camera_serial != self.cam.serial:
            log.warning("%s holds a record of camera %s, not %s: not compared (it is kept as "
                        "a backup when this one is signed)", self.out, rec.camera_serial,
                        self.cam.serial)
            return None, {}
        return rec, qc

    # -- driver ---------------------------------------------------------------------------
    def run(self) -> FieldResult:
        """Run every step; raises CalibrationRefused at a FAIL (unless ``allow_fail``)."""
        CalibrationRecord.check_target(self.out, overwrite=True)
        self.cam.open()
        self.cam.configure(trigger_mode="software", exposure_us=self.s.exposure_us,
                           gain=self.s.gain)
        for step in STEPS[:-1]:
            log.info("field calibration: step %s", step)
            results = getattr(self, f"_step_{step}")()
            self.steps[step] = worst(r.verdict for r in results)
            self.results += results
            for r in results:
                log.info("  %s", r.line())
            if self.on_step is not None:
                self.on_step(step, results)
            if self.steps[step] == FAIL and not self.s.allow_fail:
                self._log_history(refused_at=step)
                raise CalibrationRefused(step, results, f"the previous record in {self.out} "
                                         "is unchanged" if self.previous else "nothing saved")
        return self._sign()

    def _avg(self, n: int, exposure_us: float | None = None, what: str = "frames"):
        return average_frames(self.cam, n, exposure_us=exposure_us or self.s.exposure_us,
                              gain=self.s.gain, what=what)

    # -- steps ------------------------------------------------------------------------------
    def _step_identify(self) -> list[CheckResult]:
        fh = self.cam.factory_calibration_hash
        self.factory_hash = fh
        if fh is None:
            fac = self.t.result("factory_calibration", True, detail="the camera reports none")
        elif self.factory_ref is None:
            fac = self.t.result("factory_calibration", True, detail=f"{fh[:12]}: commissioning")
        else:
            same = fh == self.factory_ref
            fac = self.t.result("factory_calibration", same,
                                detail=f"{fh[:12]} against commissioning {self.factory_ref[:12]}")
        problems = []
        for role, cert in self.certs.items():
            if cert.kind != role:
                problems.append(f"{role}: certificate is for a {cert.kind}")
            want = self.tile_ids.get(role)
            if want is not None and want != cert.tile_id:
                problems.append(f"{role}: tile {want!r} is unknown (the certificate is for "
                                f"{cert.tile_id!r})")
            problems += cert.problems(self.cam.wavelengths, self.cam.fwhm_nm or 0.0)
        tiles = self.t.result("tile_certificate", not problems,
                              detail="; ".join(problems) or ", ".join(
                                  f"{c.tile_id} ({c.number}, expires {c.expires})"
                                  for c in self.certs.values()))
        return [fac, tiles]

    def _step_environment(self) -> list[CheckResult]:
        def capture(what: str) -> np.ndarray:  # band medians only: full cubes cost GBs
            return C.band_medians(self._avg(self.s.n_env, what=what).mean)

        self.placer.place("dark")
        dark = capture("environment dark")
        self.placer.place("white")
        self.placer.lights(False)
        amb = capture("ambient")
        self.placer.lights(True)
        white = capture("environment white")
        return [C.ambient_check(self.t, amb, white, dark)]

    def _step_warmup(self) -> list[CheckResult]:
        s = self.s

        def group() -> tuple[np.ndarray, np.ndarray]:
            # only band means are kept: a full-size cube per group would cost GBs
            mean = self._avg(s.warmup_frames, what="warm-up").mean
            return C.central(mean).mean(axis=(0, 1)), C.central(mean, 0.5).mean(axis=(0, 1))

        groups = [(0.0, *group())]
        elapsed, change = 0.0, float("nan")
        lag = max(int(round(s.warmup_window_s / s.warmup_interval_s)), 1)
        while elapsed < s.warmup_max_s:
            self.placer.wait(s.warmup_interval_s, "warm-up")
            elapsed += s.warmup_interval_s
            groups.append((elapsed, *group()))
            if len(groups) > lag:
                change = C.warmup_change(groups[-1 - lag][1], groups[-1][1])
                if change <= self.t["warmup_stability"].warn:
                    break
        self.extras["warmup"] = {"t_s": [g[0] for g in groups],
                                 "level": [float(np.mean(g[1])) for g in groups]}
        full = 2.0 ** self.cam.bit_depth - 1
        peak = float(np.max(groups[-1][2])) / full
        # auto-exposure: the white at ~75 % of full scale (FACTS.md); the previous record's
        # white exposure is kept when it is within 10 % of that (comparable whites)
        target = float(np.clip(self.s.exposure_us * 0.75 / max(peak, 1e-3),
                               self.s.exposure_us / 4, self.s.exposure_us * 4))
        prev = self.previous.white_exposure_us if self.previous is not None else None
        if prev is not None and abs(prev / target - 1) < 0.1:
            self.white_exposure = float(prev)
        elif abs(target / self.s.exposure_us - 1) < 0.05:
            self.white_exposure = float(self.s.exposure_us)
        else:
            self.white_exposure = round(target / 100.0) * 100.0
        return [self.t.result("warmup_stability", change,
                              detail=f"over {s.warmup_window_s:g} s after {elapsed:g} s")]

    def _step_dark(self) -> list[CheckResult]:
        self.placer.place("dark")
        self.dark = capture_dark(self.cam, self.s.n_dark, exposure_us=self.s.exposure_us,
                                 gain=self.s.gain)
        results, hot = C.dark_checks(self.t, self.dark.mean, self.dark.std, self.s.n_dark,
                                     self.baseline)
        self.dark.hot = hot
        self.white_dark = None
        if self.white_exposure != self.s.exposure_us:
            self.white_dark = capture_dark(self.cam, self.s.n_dark,
                                           exposure_us=self.white_exposure, gain=self.s.gain)
            self.white_dark.hot = C.hot_mask(self.white_dark.mean, self.white_dark.std,
                                             self.s.n_dark)
        self.extras["hot_map"] = hot
        return results

    def _step_white(self) -> list[CheckResult]:
        self.placer.place("white")
        wd = self.white_dark or self.dark
        self.white = capture_white(self.cam, self.s.n_white, dark=wd,
                                   exposure_us=self.white_exposure, gain=self.s.gain)
        prev = self.previous
        same = prev is not None and prev.shape == self.white.mean.shape and \
            prev.gain == self.s.gain and prev.camera_serial == self.cam.serial
        prev_pair = None
        if same:
            pwd = prev.white_dark if prev.white_dark is not None else prev.dark
            prev_pair = (prev.white, pwd)
        results = C.white_checks(self.t, self.white.mean, wd.mean, self.cam.bit_depth,
                                 prev_pair, self.baseline)
        if same:
            results += C.drift_checks(self.t, self.white.mean, wd.mean, prev_pair[0],
                                      prev_pair[1], self.white_exposure / prev.white_exposure_us)
            self.extras["previous_white"] = C._band_means(prev_pair[0] - prev_pair[1]).tolist()
        span = self.white.mean - wd.mean
        self.extras["white_band"] = C._band_means(span).tolist()
        picks = sorted({0, span.shape[2] // 2, span.shape[2] - 1})
        self.extras["uniformity_bands"] = {
            float(self.cam.wavelengths[b]): (span[:, :, b] / max(float(np.median(span[:, :, b])),
                                                                 1e-6)).astype(np.float32)
            for b in picks}
        self.extras["white_map"] = results[3].data.pop("map")
        self.rho = self.certs["white"].band_values(self.cam.wavelengths, self.cam.fwhm_nm or 0.0)
        return results

    def _reflectance(self, target: str, placement: int = 0) -> np.ndarray:
        self.placer.place(target, placement)
        sig = self._avg(self.s.n_verify, what=target)
        wd = self.white_dark or self.dark
        return C.reflectance(sig.mean, self.dark.mean, self.white.mean, wd.mean, self.rho,
                             self.s.exposure_us / self.white_exposure)

    def _step_verify(self) -> list[CheckResult]:
        wl, fwhm = self.cam.wavelengths, self.cam.fwhm_nm or 0.0
        grey = np.stack([C._band_means(self._reflectance("grey_tile", p), 0.5)
                         for p in range(self.s.placements)])
        out = [C.accuracy_check(self.t, grey[0], self.certs["grey_tile"].band_values(wl, fwhm))]
        if self.s.placements >= 2:
            out.append(C.repeatability_check(self.t, grey))
        if "colour_tile" in self.certs:
            colour = C._band_means(self._reflectance("colour_tile"), 0.5)
            out.append(C.colour_check(self.t, colour,
                                      self.certs["colour_tile"].band_values(wl, fwhm)))
        return out

    def _step_optional(self) -> list[CheckResult]:
        todo = list(self.s.optional)
        flagged = [r.name for r in self.trend if r.verdict != "PASS"]
        if flagged and not todo:
            log.warning("drift history flags %s: running every optional check",
                        ", ".join(flagged))
            todo = [o for o in OPTIONAL if o != "wavelength" or "wavelength_std" in self.certs]
            todo = [o for o in todo if o != "mtf" or "slanted_edge" in self.certs]
        out: list[CheckResult] = []
        wd = self.white_dark or self.dark
        if "snr" in todo:
            out.append(C.snr_check(self.t, C.snr_per_band(self.white.mean, self.white.std,
                                                          wd.mean), self.baseline))
        if "linearity" in todo:
            self.placer.place("white")
            exps = [self.white_exposure * f for f in (0.1, 0.2, 0.3, 0.6, 0.9, 1.25)]
            sig = np.stack([C.central(self._avg(8, e, "linearity").mean - wd.mean)
                            .mean(axis=(0, 1)) for e in exps])
            self.cam.configure(exposure_us=self.s.exposure_us)
            out.append(C.linearity_check(self.t, np.asarray(exps), sig))
        if "wavelength" in todo:
            if "wavelength_std" not in self.certs:
                raise CalibrationError("optional check wavelength: needs the wavelength "
                                       "standard's certificate")
            refl = self._reflectance("wavelength_std")
            out += S.wavelength_checks(self.t, refl, self.cam.wavelengths,
                                       self.cam.fwhm_nm or 0.0,
                                       self.certs["wavelength_std"].spectrum())
        if "mtf" in todo:
            out.append(S.mtf_check(self.t, self._reflectance("slanted_edge"), self.baseline))
        if self.cam.target is not None:
            self.placer.place("scene")
        return out

    # -- sign -------------------------------------------------------------------------------
    def _summary(self) -> dict[str, Any]:
        s = C.summary(self.results)
        band = np.asarray(self.extras["white_band"])
        s["white_level"] = float(np.median(band)) * 1e4 / self.white_exposure  # per 10 ms
        s["white_band_mean"] = band.tolist()
        if "snr" in s:
            s["snr_min"] = float(np.min(s["snr"]))
        return s

    def _log_history(self, refused_at: str | None = None) -> dict[str, Any]:
        now = _dt.datetime.now(_dt.timezone.utc)
        entry = {"time": now.isoformat(timespec="seconds"), "epoch": now.timestamp(),
                 "kind": "calibration", "verdict": FAIL if refused_at else
                 worst(r.verdict for r in self.results), "refused_at": refused_at,
                 "record": str(self.out), "operator": self.s.operator,
                 "thresholds_version": self.t.version,
                 "factory_calibration_hash": getattr(self, "factory_hash", None),
                 "checks": {r.name: [r.value if not isinstance(r.value, bool) else r.value,
                                     r.verdict] for r in self.results}}
        if refused_at is None:
            entry["summary"] = self._summary()
        if self.history is not None:
            self.history.append(entry)
        return entry

    def _sign(self) -> FieldResult:
        now = _dt.datetime.now(_dt.timezone.utc)
        valid = now + _dt.timedelta(hours=self.s.valid_hours)
        first_expiry = min(c.expires for c in self.certs.values())
        cert_end = _dt.datetime.combine(first_expiry, _dt.time(23, 59, 59), _dt.timezone.utc)
        valid = min(valid, cert_end)
        summary = self._summary()
        qc = {"workflow": "field", "verdict": worst(r.verdict for r in self.results),
              "operator": self.s.operator, "signed": now.isoformat(timespec="seconds"),
              "valid_until": valid.isoformat(timespec="seconds"),
              "expires": valid.date().isoformat(),  # the day, for readers of dates only
              "thresholds_version": self.t.version, "software_version": __version__,
              "factory_calibration_hash": self.factory_hash,
              "commissioning": self.baseline is None,
              "tiles": {role: c.as_dict() for role, c in self.certs.items()},
              "steps": dict(self.steps), "summary": summary,
              "baseline": self.baseline or summary,
              "checks": [r.as_dict() for r in self.results],
              "trend": [r.as_dict(with_data=True) for r in self.trend]}
        self.steps["sign"] = qc["verdict"]
        # dark.hot is the field workflow's hot rule (calibration.checks.hot_mask)
        record = CalibrationRecord.from_references(
            self.dark, self.white, white_dark=self.white_dark,
            rho_ref=[float(v) for v in np.clip(self.rho, 1e-6, 1.0)])
        from calibration import report
        files = report.render(record, self.results, qc, self.extras, plots=self.s.plots)
        path = save_record(record, self.out, qc, files)
        self._log_history()
        log.info("field calibration signed: %s, valid until %s", qc["verdict"], qc["valid_until"])
        return FieldResult(record, self.results, qc, path, self.extras)
