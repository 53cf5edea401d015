"""Compare two corpus runs (baseline A, candidate B) and give a verdict against thresholds.

Per recording present in both runs with status ok in both, from the stored maps
(``maps/<name>.npz``):

- ``iou``: per class id, intersection over union of the two label maps over every frame
  (withheld pixels, class 255, belong to no class); ``mean_iou`` over the classes present in
  either run; ``pixel_agreement``: fraction of pixels with the same label (withheld
  included);
- ``sto2_mae_pp`` / ``sto2_max_pp``: mean and largest |StO2 B - StO2 A| over pixels valid in
  both, in percentage points (maps stored to 0.01 pp);

and from the records: per class the shift of the mean StO2 (pp, B - A) and of each index
mean, and the timings.  Overall figures pool the recordings (IoU: summed intersections over
summed unions; shifts: pixel-weighted means).  ``status_changes`` lists recordings that
changed status or exist in one run only.

The verdict is FAIL when any threshold of :data:`DEFAULT_THRESHOLDS` is crossed (each crossing
is one line in ``reasons``), else PASS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.corpus.stats import FRACTION_MAPS
from edge.corpus.task import STO2_NAN, STO2_SCALE, maps_path
from edge.errors import ConfigError, DataFormatError

__all__ = ["compare_runs", "load_thresholds", "DEFAULT_THRESHOLDS", "load_run"]

#: Verdict thresholds (README "Validating a release on a corpus" explains each).  None
#: disables a check (the figure is still reported).
DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "min_class_iou": 0.95,            # pooled IoU of every class seen in >= min_class_pixels
    "min_class_pixels": 100,          # ... pixels (A or B); rarer classes are reported only
    "min_recording_mean_iou": 0.90,   # mean IoU of each recording
    "max_sto2_mae_pp": 1.0,           # per recording, mean |ΔStO2| over pixels valid in both
    "max_class_sto2_shift_pp": 1.0,   # pooled |Δ mean StO2| of each class
    "max_index_shift": 0.01,          # pooled |Δ mean| of each index (sto2_index, nir, thi, twi)
    "max_new_failures": 0,            # recordings ok in A and failed (or missing) in B
    "max_time_ratio": None,           # B/A summed task time; timings are reported, not gated
}


def load_thresholds(path: str | os.PathLike | None) -> dict[str, float | None]:
    """The default thresholds updated from a YAML mapping (None: defaults).

    Raises
    ------
    ConfigError
        Not a mapping, an unknown key, or a value that is not a number >= 0 or null.
    """
    out = dict(DEFAULT_THRESHOLDS)
    if path is None:
        return out
    from edge.core.config import load_yaml

    doc = load_yaml(path, what="thresholds file")
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of threshold names to numbers, got "
                          f"{type(doc).__name__}")
    for key, value in doc.items():
        if key not in DEFAULT_THRESHOLDS:
            raise ConfigError(f"{path}: {key}: unknown threshold; allowed: "
                              f"{', '.join(DEFAULT_THRESHOLDS)}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not np.isfinite(value) or value < 0):
            raise ConfigError(f"{path}: {key}: expected a number >= 0 or null, got {value!r}")
        out[key] = value
    return out


def load_run(run: str | os.PathLike, option: str) -> dict[str, dict[str, Any]]:
    """The records of a run folder by recording id.

    Raises
    ------
    ConfigError
        The folder holds no corpus run (names the option and the folder).
    """
    records = Path(run) / "records"
    files = sorted(records.glob("*.json")) if records.is_dir() else []
    if not files:
        raise ConfigError(f"{option}: {str(run)!r} holds no corpus run (no records/*.json; "
                          "make one with `hsi-edge corpus run`)")
    out = {}
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"{f}: unreadable result record: {exc}") from exc
        if not isinstance(doc, dict) or "id" not in doc:
            raise DataFormatError(f"{f}: not a corpus result record (expected a mapping with "
                                  f"'id')")
        out[doc["id"]] = doc
    return out


def _maps(run: Path, rec_id: str) -> dict[str, np.ndarray]:
    path = maps_path(run, rec_id)
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: unreadable maps: {exc}") from exc


def _pair(a_run: Path, b_run: Path, ra: dict, rb: dict, n_classes: int) -> dict[str, Any]:
    """Pixel figures of one recording in both runs (both ok)."""
    ma, mb = _maps(a_run, ra["id"]), _maps(b_run, rb["id"])
    doc: dict[str, Any] = {"comparable": True}
    ca, cb = ma.get("classes"), mb.get("classes")
    if ca is not None and cb is not None:
        if ca.shape != cb.shape:
            return {"comparable": False,
                    "why": f"label maps differ in shape: A {ca.shape}, B {cb.shape}"}
        inter, union = np.zeros(n_classes, np.int64), np.zeros(n_classes, np.int64)
        for c in range(n_classes):
            ia, ib = ca == c, cb == c
            inter[c] = int(np.count_nonzero(ia & ib))
            union[c] = int(np.count_nonzero(ia | ib))
        doc.update(inter=inter.tolist(), union=union.tolist(), pixels=int(ca.size),
                   agree=int(np.count_nonzero(ca == cb)))
        iou = [None if u == 0 else i / u for i, u in zip(inter, union)]
        doc["iou"] = iou
        present = [v for v in iou if v is not None]
        doc["mean_iou"] = float(np.mean(present)) if present else None
        doc["pixel_agreement"] = doc["agree"] / ca.size if ca.size else None
    elif (ca is None) != (cb is None):
        return {"comparable": False, "why": "one run has label maps, the other none"}
    sa, sb = ma.get("sto2_q"), mb.get("sto2_q")
    if sa is not None and sb is not None and sa.shape == sb.shape:
        both = (sa != STO2_NAN) & (sb != STO2_NAN)
        d = np.abs(sa[both].astype(np.int64) - sb[both].astype(np.int64)) * (100.0 / STO2_SCALE)
        doc["sto2_n"] = int(d.size)
        doc["sto2_mae_pp"] = float(d.mean()) if d.size else None
        doc["sto2_max_pp"] = float(d.max()) if d.size else None
    return doc


def _weighted(pairs: list[tuple[float, int]]) -> float | None:
    n = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / n if n else None


def compare_runs(a: str | os.PathLike, b: str | os.PathLike,
                 thresholds: dict[str, float | None] | None = None) -> dict[str, Any]:
    """Compare run folders ``a`` (baseline) and ``b`` (candidate); see the module docstring.

    Returns
    -------
    dict
        ``verdict`` ("PASS"/"FAIL"), ``reasons``, ``thresholds``, ``recordings`` (per id),
        ``overall``, ``classes`` (pooled per class), ``status_changes``, ``timings``.
    """
    th = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    a_run, b_run = Path(a), Path(b)
    recs_a, recs_b = load_run(a_run, "A"), load_run(b_run, "B")
    names: list[str] = []
    for r in list(recs_a.values()) + list(recs_b.values()):
        cn = r.get("class_names") or []
        if len(cn) > len(names):
            names = names + list(cn[len(names):])
    n_classes = len(names)
    per: dict[str, Any] = {}
    changes: list[dict[str, Any]] = []
    inter = np.zeros(n_classes, np.int64)
    union = np.zeros(n_classes, np.int64)
    agree = pixels = 0
    sto2_pairs: list[tuple[float, int]] = []
    class_shift: dict[str, dict[str, list]] = {n: {"a": [], "b": []} for n in names}
    # (class, index) -> run -> [(mean, n)] for the pooled per-class index means
    class_index: dict[tuple[str, str], dict[str, list]] = {}
    index_shift: dict[str, dict[str, list]] = {}
    time_a = time_b = 0.0
    for rid in sorted(set(recs_a) | set(recs_b)):
        ra, rb = recs_a.get(rid), recs_b.get(rid)
        sa = ra["status"] if ra else "missing"
        sb = rb["status"] if rb else "missing"
        entry: dict[str, Any] = {"id": rid, "status_a": sa, "status_b": sb,
                                 "error_a": ra and ra.get("error"),
                                 "error_b": rb and rb.get("error")}
        if sa != sb:
            changes.append({"id": rid, "from": sa, "to": sb,
                            "error": (rb or {}).get("error") if sb != "ok" else None})
        if ra and rb and sa == sb == "ok":
            pair = _pair(a_run, b_run, ra, rb, n_classes)
            entry.update(pair)
            if pair.get("comparable") and "inter" in pair:
                inter += np.asarray(pair["inter"])
                union += np.asarray(pair["union"])
                agree += pair["agree"]
                pixels += pair["pixels"]
            if pair.get("sto2_mae_pp") is not None:
                sto2_pairs.append((pair["sto2_mae_pp"], pair["sto2_n"]))
            entry["class_sto2_shift_pp"] = {}
            for name in names:
                sa_, sb_ = ((ra.get("classes") or {}).get(name, {}).get("sto2") or {},
                            (rb.get("classes") or {}).get(name, {}).get("sto2") or {})
                if sa_.get("mean") is not None and sb_.get("mean") is not None:
                    entry["class_sto2_shift_pp"][name] = 100 * (sb_["mean"] - sa_["mean"])
                if sa_.get("n"):
                    class_shift[name]["a"].append((sa_["mean"], sa_["n"]))
                if sb_.get("n"):
                    class_shift[name]["b"].append((sb_["mean"], sb_["n"]))
                for run, r in (("a", ra), ("b", rb)):
                    c = (r.get("classes") or {}).get(name) or {}
                    for iname, mean in (c.get("index_means") or {}).items():
                        n = (c.get("index_n") or {}).get(iname) or 0
                        if mean is not None and n:
                            class_index.setdefault((name, iname), {"a": [], "b": []})[run] \
                                .append((mean, n))
            entry["index_shift"] = {}
            for iname, ia in (ra.get("indices") or {}).items():
                ib = (rb.get("indices") or {}).get(iname)
                if ib and ia.get("mean") is not None and ib.get("mean") is not None:
                    entry["index_shift"][iname] = ib["mean"] - ia["mean"]
                    acc = index_shift.setdefault(iname, {"a": [], "b": []})
                    acc["a"].append((ia["mean"], ia["n"]))
                    acc["b"].append((ib["mean"], ib["n"]))
            ta = (ra.get("timings") or {}).get("task_s")
            tb = (rb.get("timings") or {}).get("task_s")
            entry["task_s_a"], entry["task_s_b"] = ta, tb
            if ta and tb:
                time_a += ta
                time_b += tb
        per[rid] = entry
    classes = {}
    for c, name in enumerate(names):
        ma, mb = _weighted(class_shift[name]["a"]), _weighted(class_shift[name]["b"])
        classes[name] = {
            "id": c, "inter_px": int(inter[c]), "union_px": int(union[c]),
            "iou": None if union[c] == 0 else float(inter[c] / union[c]),
            "sto2_mean_a": ma, "sto2_mean_b": mb,
            "sto2_shift_pp": None if ma is None or mb is None else 100 * (mb - ma),
            "index_shift": {}}
        for (cname, iname), acc in sorted(class_index.items()):
            if cname == name:
                ia, ib = _weighted(acc["a"]), _weighted(acc["b"])
                classes[name]["index_shift"][iname] = \
                    None if ia is None or ib is None else ib - ia
    indices = {}
    for iname, acc in sorted(index_shift.items()):
        ma, mb = _weighted(acc["a"]), _weighted(acc["b"])
        indices[iname] = {"mean_a": ma, "mean_b": mb,
                          "shift": None if ma is None or mb is None else mb - ma}
    ious = [v["iou"] for v in classes.values() if v["iou"] is not None]
    compared = [e for e in per.values() if e.get("comparable")]
    overall = {"recordings": len(compared), "recordings_a": len(recs_a),
               "recordings_b": len(recs_b),
               "mean_iou": float(np.mean(ious)) if ious else None,
               "pixel_agreement": agree / pixels if pixels else None,
               "sto2_mae_pp": _weighted(sto2_pairs)}
    timings = {"task_s_a": time_a, "task_s_b": time_b,
               "ratio": time_b / time_a if time_a > 0 else None}
    reasons = _verdict(th, per, classes, indices, changes, timings)
    return {"verdict": "FAIL" if reasons else "PASS", "reasons": reasons, "thresholds": th,
            "a": str(a_run), "b": str(b_run), "class_names": names, "recordings": per,
            "overall": overall, "classes": classes, "indices": indices,
            "status_changes": changes, "timings": timings}


def _verdict(th, per, classes, indices, changes, timings) -> list[str]:
    reasons: list[str] = []
    new_fail = [c for c in changes if c["from"] == "ok"]
    if th["max_new_failures"] is not None and len(new_fail) > th["max_new_failures"]:
        reasons.append(f"{len(new_fail)} recording(s) ok in A are {'/'.join(sorted({c['to'] for c in new_fail}))} "
                       f"in B (allowed {th['max_new_failures']:g}): "
                       + ", ".join(c["id"] for c in new_fail[:5])
                       + (" ..." if len(new_fail) > 5 else ""))
    for e in per.values():
        if e.get("comparable") is False:
            reasons.append(f"{e['id']}: not comparable: {e['why']}")
    if th["min_class_iou"] is not None:
        for name, c in classes.items():
            big = c["union_px"] >= (th["min_class_pixels"] or 0)
            if big and c["iou"] is not None and c["iou"] < th["min_class_iou"]:
                reasons.append(f"class {name}: IoU {c['iou']:.4f} < {th['min_class_iou']:g}")
    if th["min_recording_mean_iou"] is not None:
        low = [e for e in per.values() if e.get("mean_iou") is not None
               and e["mean_iou"] < th["min_recording_mean_iou"]]
        if low:
            worst = min(low, key=lambda e: e["mean_iou"])
            reasons.append(f"{len(low)} recording(s) with mean IoU < "
                           f"{th['min_recording_mean_iou']:g} (worst {worst['id']}: "
                           f"{worst['mean_iou']:.4f})")
    if th["max_sto2_mae_pp"] is not None:
        high = [e for e in per.values() if e.get("sto2_mae_pp") is not None
                and e["sto2_mae_pp"] > th["max_sto2_mae_pp"]]
        if high:
            worst = max(high, key=lambda e: e["sto2_mae_pp"])
            reasons.append(f"{len(high)} recording(s) with StO2 MAE > {th['max_sto2_mae_pp']:g} "
                           f"pp (worst {worst['id']}: {worst['sto2_mae_pp']:.3f} pp)")
    if th["max_class_sto2_shift_pp"] is not None:
        for name, c in classes.items():
            if c["sto2_shift_pp"] is not None and abs(c["sto2_shift_pp"]) > th["max_class_sto2_shift_pp"]:
                reasons.append(f"class {name}: mean StO2 shifted {c['sto2_shift_pp']:+.3f} pp "
                               f"(allowed ±{th['max_class_sto2_shift_pp']:g})")
    if th["max_index_shift"] is not None:
        for iname, d in indices.items():
            if iname in FRACTION_MAPS and iname != "sto2" and d["shift"] is not None \
                    and abs(d["shift"]) > th["max_index_shift"]:
                reasons.append(f"index {iname}: mean shifted {d['shift']:+.4f} "
                               f"(allowed ±{th['max_index_shift']:g})")
    if th["max_time_ratio"] is not None and timings["ratio"] is not None \
            and timings["ratio"] > th["max_time_ratio"]:
        reasons.append(f"task time B/A {timings['ratio']:.2f} > {th['max_time_ratio']:g}")
    return reasons
