"""The comparison report: ``comparison.json`` and a self-contained ``report.html``.

The HTML holds the verdict and its reasons, the thresholds, the pooled per-class table (IoU,
StO2 means and shift), index shifts, status changes, timings and the per-recording table;
plots (matplotlib, Agg backend) are embedded as base64 PNGs: IoU per class, StO2 shift per
class, the per-recording mean IoU and StO2 MAE, and task time A against B.  Nothing is loaded
from the network, so the file can be archived with a CI run.

Without matplotlib (extra ``corpus``), the JSON is still written and :func:`write_report`
raises BackendUnavailable naming ``pip install 'hsi-edge[corpus]'``.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from edge.core.fileio import atomic_write_bytes
from edge.core.plots import img_tag, require_pyplot

__all__ = ["write_report"]

_CSS = ("body{font-family:sans-serif;margin:2em;max-width:75em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.2em .5em;text-align:right}th{background:#eee}td.l,th.l{text-align:left}"
        ".PASS{color:#080}.FAIL{color:#c00}img{max-width:48%;margin:.5em}")


def _pyplot():
    return require_pyplot("corpus compare", "corpus")


def _png(plt, fig, alt: str) -> str:
    return img_tag(fig, alt, dpi=80)


def _f(v: Any, fmt: str = ".4f") -> str:
    return "–" if v is None else format(v, fmt)


def _table(head: list[str], rows: list[list[Any]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>'
                 for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">'
                                    f"{html.escape(str(c))}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _plots(plt, res: dict[str, Any]) -> list[str]:
    out = []
    classes = res["classes"]
    if classes:
        names = list(classes)
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(names, [classes[n]["iou"] or 0.0 for n in names], color="#1f77b4")
        if res["thresholds"].get("min_class_iou") is not None:
            ax.axhline(res["thresholds"]["min_class_iou"], color="#c00", ls="--", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("IoU (pooled)")
        ax.set_title("Segmentation agreement per class")
        ax.tick_params(axis="x", rotation=45)
        out.append(_png(plt, fig, "IoU per class"))
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(names, [classes[n]["sto2_shift_pp"] or 0.0 for n in names], color="#d62728")
        lim = res["thresholds"].get("max_class_sto2_shift_pp")
        if lim is not None:
            for s in (lim, -lim):
                ax.axhline(s, color="#c00", ls="--", lw=1)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("Δ mean StO2 (pp, B − A)")
        ax.set_title("StO2 shift per class")
        ax.tick_params(axis="x", rotation=45)
        out.append(_png(plt, fig, "StO2 shift per class"))
    recs = [e for e in res["recordings"].values() if e.get("comparable")]
    if recs:
        ids = [e["id"] for e in recs]
        fig, ax1 = plt.subplots(figsize=(6, 3))
        ax1.plot(range(len(ids)), [e.get("mean_iou") or 0.0 for e in recs], "o-",
                 color="#1f77b4", label="mean IoU")
        ax1.set_ylim(0, 1.02)
        ax1.set_ylabel("mean IoU")
        ax2 = ax1.twinx()
        ax2.plot(range(len(ids)), [e.get("sto2_mae_pp") or 0.0 for e in recs], "s--",
                 color="#d62728", label="StO2 MAE")
        ax2.set_ylabel("StO2 MAE (pp)")
        ax1.set_xticks(range(len(ids)))
        ax1.set_xticklabels(ids if len(ids) <= 30 else [""] * len(ids), rotation=90)
        ax1.set_title("Per recording")
        out.append(_png(plt, fig, "Per-recording mean IoU and StO2 MAE"))
        ta = [e.get("task_s_a") for e in recs]
        tb = [e.get("task_s_b") for e in recs]
        pts = [(x, y) for x, y in zip(ta, tb) if x and y]
        if pts:
            fig, ax = plt.subplots(figsize=(4, 4))
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=12)
            hi = max(max(xs), max(ys)) * 1.05
            ax.plot([0, hi], [0, hi], "k:", lw=1)
            ax.set_xlabel("task time A (s)")
            ax.set_ylabel("task time B (s)")
            ax.set_title("Timings per recording")
            out.append(_png(plt, fig, "Task time A against B"))
    return out


def write_report(out_dir: str | os.PathLike, res: dict[str, Any]) -> Path:
    """Write ``comparison.json`` and ``report.html`` into ``out_dir``; returns the HTML path."""
    from edge.pipeline.app import prepare_out_dir, write_json

    out = prepare_out_dir(out_dir)
    write_json(out / "comparison.json", res)
    plt = _pyplot()
    v = res["verdict"]
    o = res["overall"]
    th = res["thresholds"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>corpus comparison: {v}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Corpus comparison: <span class='{v}'>{v}</span></h1>",
             f"<p>A (baseline): <code>{html.escape(res['a'])}</code><br>B (candidate): "
             f"<code>{html.escape(res['b'])}</code></p>"]
    if res["reasons"]:
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in res["reasons"])
                     + "</ul>")
    else:
        parts.append("<p>No threshold crossed.</p>")
    parts.append("<h2>Overall</h2>" + _table(
        ["recordings compared", "in A", "in B", "mean IoU", "pixel agreement",
         "StO2 MAE (pp)", "task time A (s)", "task time B (s)", "B/A"],
        [[o["recordings"], o["recordings_a"], o["recordings_b"], _f(o["mean_iou"]),
          _f(o["pixel_agreement"]), _f(o["sto2_mae_pp"], ".3f"),
          _f(res["timings"]["task_s_a"], ".2f"), _f(res["timings"]["task_s_b"], ".2f"),
          _f(res["timings"]["ratio"], ".2f")]], left=0))
    parts.extend(_plots(plt, res))
    inames = sorted({i for c in res["classes"].values() for i in c.get("index_shift", {})})
    parts.append("<h2>Per class (pooled)</h2>" + _table(
        ["class", "IoU", "union px", "mean StO2 A", "mean StO2 B", "StO2 shift (pp)"]
        + [f"Δ {i}" for i in inames],
        [[n, _f(c["iou"]), c["union_px"], _f(c["sto2_mean_a"]), _f(c["sto2_mean_b"]),
          _f(c["sto2_shift_pp"], "+.3f")]
         + [_f(c.get("index_shift", {}).get(i), "+.4f") for i in inames]
         for n, c in res["classes"].items()]))
    parts.append("<h2>Indices (pooled means)</h2>" + _table(
        ["map", "mean A", "mean B", "shift"],
        [[n, _f(d["mean_a"]), _f(d["mean_b"]), _f(d["shift"], "+.4f")]
         for n, d in res["indices"].items()]))
    parts.append("<h2>Status changes</h2>" + (_table(
        ["recording", "A", "B", "error in B"],
        [[c["id"], c["from"], c["to"], c["error"] or ""] for c in res["status_changes"]])
        if res["status_changes"] else "<p>None.</p>"))
    parts.append("<h2>Per recording</h2>" + _table(
        ["recording", "A", "B", "mean IoU", "agreement", "StO2 MAE (pp)", "StO2 max (pp)",
         "task A (s)", "task B (s)"],
        [[e["id"], e["status_a"], e["status_b"], _f(e.get("mean_iou")),
          _f(e.get("pixel_agreement")), _f(e.get("sto2_mae_pp"), ".3f"),
          _f(e.get("sto2_max_pp"), ".2f"), _f(e.get("task_s_a"), ".2f"),
          _f(e.get("task_s_b"), ".2f")] for e in res["recordings"].values()]))
    parts.append("<h2>Thresholds</h2>" + _table(
        ["threshold", "value"], [[k, "off" if val is None else val] for k, val in th.items()]))
    parts.append("</body></html>\n")
    path = out / "report.html"
    atomic_write_bytes(path, "".join(parts).encode("utf-8"))
    return path
