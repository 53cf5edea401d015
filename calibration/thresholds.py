"""The versioned threshold table of the field calibration checks, and check results.

The table ships as ``calibration/thresholds.yaml`` (documented there); a site overrides the
limits of named checks with a mapping ``{check: {warn: ..., fail: ...}}`` (from its run
config or a YAML file), and the table's version then says so (``"2026.12-1+site"``).

A :class:`CheckResult` is one measured value with its verdict (PASS / WARN / FAIL), the limits
it was judged against, how it was measured and where the limits come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping


from edge.core.config import load_yaml
from edge.errors import CalibrationError, ConfigError

__all__ = ["PASS", "WARN", "FAIL", "VERDICTS", "Threshold", "ThresholdTable", "CheckResult",
           "load_thresholds", "worst", "DEFAULT_TABLE"]

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
VERDICTS = (PASS, WARN, FAIL)
DEFAULT_TABLE = Path(__file__).with_name("thresholds.yaml")
_KINDS = ("max", "min", "range", "match")


def worst(verdicts: Any) -> str:
    """The worst of some verdicts (PASS when there are none)."""
    vs = list(verdicts)
    return FAIL if FAIL in vs else WARN if WARN in vs else PASS


@dataclass(frozen=True)
class Threshold:
    """Limits of one check (see ``thresholds.yaml`` for ``kind``)."""

    name: str
    kind: str
    unit: str
    method: str
    source: str
    fix: str
    warn: Any = None
    fail: Any = None

    def judge(self, value: Any) -> str:
        """PASS, WARN or FAIL for ``value`` (a non-finite number is FAIL)."""
        if self.kind == "match":
            return PASS if bool(value) else FAIL
        v = float(value)
        if not math.isfinite(v):
            return FAIL
        if self.kind == "max":
            return PASS if v <= self.warn else WARN if v <= self.fail else FAIL
        if self.kind == "min":
            return PASS if v >= self.warn else WARN if v >= self.fail else FAIL
        (wl, wh), (fl, fh) = self.warn, self.fail
        return PASS if wl <= v <= wh else WARN if fl <= v <= fh else FAIL

    def limits_text(self) -> str:
        if self.kind == "match":
            return "must match"
        if self.kind == "range":
            return (f"PASS {self.warn[0]:g}-{self.warn[1]:g}, WARN {self.fail[0]:g}-"
                    f"{self.fail[1]:g} {self.unit}")
        op = "<=" if self.kind == "max" else ">="
        return f"PASS {op} {self.warn:g}, FAIL beyond {self.fail:g} {self.unit}"


@dataclass(frozen=True)
class ThresholdTable:
    """All thresholds, by check name, with the table's version."""

    version: str
    checks: dict[str, Threshold]
    path: str = ""

    def __getitem__(self, name: str) -> Threshold:
        try:
            return self.checks[name]
        except KeyError:
            raise CalibrationError(f"threshold table {self.path or self.version}: no check "
                                   f"{name!r}; known: {', '.join(self.checks)}") from None

    def result(self, name: str, value: Any, *, detail: str = "", data: Mapping | None = None,
               verdict: str | None = None) -> "CheckResult":
        """Judge ``value`` for check ``name`` (``verdict`` given: use it, e.g. for a step
        that could not measure)."""
        t = self[name]
        v = verdict or t.judge(value)
        return CheckResult(name=name, value=value, unit=t.unit, verdict=v, warn=t.warn,
                           fail=t.fail, kind=t.kind, method=t.method, source=t.source,
                           fix=t.fix if v != PASS else "", detail=detail,
                           data=dict(data or {}))

    def with_overrides(self, overrides: Mapping[str, Any] | None,
                       origin: str = "site overrides") -> "ThresholdTable":
        """A copy with site limits; raises ConfigError naming the key and what is allowed."""
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{origin}: expected a mapping check -> {{warn:, fail:}}, got "
                              f"{overrides!r}"[:200])
        checks = dict(self.checks)
        for name, limits in overrides.items():
            if name not in checks:
                raise ConfigError(f"{origin}: {name}: unknown check; known: "
                                  f"{', '.join(self.checks)}")
            t = checks[name]
            if not isinstance(limits, Mapping) or set(limits) - {"warn", "fail"}:
                raise ConfigError(f"{origin}: {name}: expected a mapping with warn and/or fail, "
                                  f"got {limits!r}"[:200])
            new = replace(t, warn=limits.get("warn", t.warn), fail=limits.get("fail", t.fail))
            _validate(new, f"{origin}: {name}")
            checks[name] = new
        base = self.version.split("+")[0]
        return ThresholdTable(f"{base}+site", checks, self.path)

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version,
                "checks": {n: {"kind": t.kind, "unit": t.unit, "warn": t.warn, "fail": t.fail,
                               "method": t.method, "source": t.source}
                           for n, t in self.checks.items()}}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _validate(t: Threshold, where: str) -> None:
    if t.kind not in _KINDS:
        raise ConfigError(f"{where}: kind: expected one of {', '.join(_KINDS)}, got {t.kind!r}")
    if t.kind in ("max", "min"):
        if not (_number(t.warn) and _number(t.fail)):
            raise ConfigError(f"{where}: warn/fail: expected numbers, got {t.warn!r}/{t.fail!r}")
        if (t.kind == "max" and t.warn > t.fail) or (t.kind == "min" and t.warn < t.fail):
            raise ConfigError(f"{where}: warn {t.warn:g} must be "
                              f"{'<=' if t.kind == 'max' else '>='} fail {t.fail:g} "
                              f"(kind {t.kind})")
    elif t.kind == "range":
        ok = all(isinstance(x, (list, tuple)) and len(x) == 2 and all(map(_number, x))
                 and x[0] <= x[1] for x in (t.warn, t.fail))
        if not ok or not (t.fail[0] <= t.warn[0] and t.warn[1] <= t.fail[1]):
            raise ConfigError(f"{where}: warn/fail: expected [lo, hi] ranges with the warn "
                              f"range inside the fail range, got {t.warn!r}/{t.fail!r}")


def load_thresholds(path: str | Path | None = None,
                    overrides: Mapping[str, Any] | None = None) -> ThresholdTable:
    """Load the threshold table (default: the shipped one) with optional site overrides.

    Raises
    ------
    ConfigError
        Unreadable file, invalid YAML, an unknown check or kind, limits of the wrong form.
    """
    p = Path(path) if path is not None else DEFAULT_TABLE
    if not p.is_file():
        raise ConfigError(f"{p}: cannot read the threshold table: no such file")
    doc = load_yaml(p, what="threshold table")   # the one YAML reader: one-line errors
    if not isinstance(doc, dict) or not isinstance(doc.get("checks"), dict) \
            or not isinstance(doc.get("version"), str):
        # a site file with only limits: overrides of the shipped table
        if isinstance(doc, dict) and "checks" not in doc and path is not None:
            return load_thresholds(None, doc).with_overrides(overrides)
        raise ConfigError(f"{p}: expected a mapping with 'version' (string) and 'checks'")
    checks = {}
    for name, spec in doc["checks"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{p}: checks.{name}: expected a mapping")
        t = Threshold(name=str(name), kind=str(spec.get("kind", "")),
                      unit=str(spec.get("unit", "")), method=str(spec.get("method", "")),
                      source=str(spec.get("source", "proposal")), fix=str(spec.get("fix", "")),
                      warn=spec.get("warn"), fail=spec.get("fail"))
        _validate(t, f"{p}: checks.{name}")
        checks[str(name)] = t
    return ThresholdTable(str(doc["version"]), checks, str(p)).with_overrides(
        overrides, "calibration.thresholds")


@dataclass
class CheckResult:
    """One check: measured value, verdict and the limits it was judged against."""

    name: str
    value: Any
    unit: str
    verdict: str
    warn: Any
    fail: Any
    kind: str
    method: str
    source: str
    fix: str = ""
    detail: str = ""
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        """One line for a person: ``FAIL white_dirt: 2.9 % (PASS <= 0.5 ...): clean ...``."""
        if isinstance(self.value, bool) or self.value is None:
            shown = "yes" if self.value else "no"
        elif isinstance(self.value, (int, float)):
            shown = f"{self.value:.4g} {self.unit}".strip()
        else:
            shown = str(self.value)
        text = f"{self.verdict} {self.name}: {shown}"
        if self.detail:
            text += f" ({self.detail})"
        if self.fix:
            text += f": {self.fix}"
        return text

    def as_dict(self, with_data: bool = False) -> dict[str, Any]:
        d = {"name": self.name, "value": self.value, "unit": self.unit,
             "verdict": self.verdict, "warn": self.warn, "fail": self.fail, "kind": self.kind,
             "method": self.method, "source": self.source, "fix": self.fix,
             "detail": self.detail}
        if with_data:
            d["data"] = self.data
        return d
