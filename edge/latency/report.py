"""The self-contained HTML report: PNG plots (matplotlib, Agg) embedded as base64.

Sections: the verdict and the gate table (ratios with intervals, p-values, thresholds), a
forest plot of the ratios, per-stage CDFs of A against B, log-scale histograms, the per-frame
end-to-end timeline with the deadline, stacked stage medians, the summary table and the
fingerprint(s).  The file references nothing outside itself (no scripts, fonts or images
from the network), so it can be archived with a CI run or mailed.

matplotlib is the optional extra ``report``; without it :func:`write_report` raises
BackendUnavailable naming ``pip install 'hsi-edge[report]'``.
"""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.fileio import atomic_write_bytes
from edge.core.plots import png_base64, require_pyplot
from edge.latency.records import FrameRecords
from edge.latency.stats import durations

__all__ = ["write_report", "history_plot_png", "pyplot"]

_COLORS = {"A": "#1f77b4", "B": "#d62728", "": "#1f77b4"}


def pyplot():
    """matplotlib.pyplot on the Agg backend, or BackendUnavailable naming the extra."""
    return require_pyplot("latency report")


def _png(fig) -> str:
    return png_base64(fig, dpi=90)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _split(rec: FrameRecords, warmup: int) -> dict[str, FrameRecords]:
    """Records per arm ("A"/"B", or "" for a single run) without warm-up frames."""
    out = {}
    arms = sorted({r.get("arm", "") for r in rec.rounds})
    for arm in arms:
        idx = sorted(r["index"] for r in rec.rounds if r.get("arm", "") == arm)
        keep = np.zeros(len(rec), bool)
        for i in idx:
            pos = np.flatnonzero(rec.fields["round"] == i)
            keep[pos[warmup:]] = True
        out[arm] = rec.select(keep)
    return out


def _stage_grid(arms: dict[str, FrameRecords]):
    """The stage names and a figure with one panel per stage, three to a row."""
    names = list(durations(next(iter(arms.values()))))
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows),
                                  squeeze=False, layout="constrained")
    return names, fig, axes


def _cdfs(arms: dict[str, FrameRecords]) -> str:
    names, fig, axes = _stage_grid(arms)
    for ax, name in zip(axes.flat, names):
        for arm, rec in arms.items():
            x = np.sort(durations(rec)[name] / 1e6)
            if x.size:
                ax.step(x, np.arange(1, x.size + 1) / x.size, where="post",
                        color=_COLORS[arm], label=arm or "run")
        ax.set_title(name)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of frames")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("CDF per stage")
    return _png(fig)


def _histograms(arms: dict[str, FrameRecords]) -> str:
    names, fig, axes = _stage_grid(arms)
    for ax, name in zip(axes.flat, names):
        allx = np.concatenate([durations(r)[name] for r in arms.values()]) / 1e6
        if allx.size == 0:
            continue
        bins = np.linspace(allx.min(), allx.max() + 1e-9, 50)
        for arm, rec in arms.items():
            ax.hist(durations(rec)[name] / 1e6, bins=bins, histtype="step",
                    color=_COLORS[arm], label=arm or "run")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("ms")
        ax.set_ylabel("frames (log)")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Histograms (log count: the tail stays visible)")
    return _png(fig)


def _timeline(rec: FrameRecords, period_ms: float, deadline_ms: float) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(12, 3.5))
    e2e = durations(rec)["end_to_end"] / 1e6
    arm_of = {r["index"]: r.get("arm", "") for r in rec.rounds}
    arms = np.array([arm_of.get(int(i), "") for i in rec.fields["round"]])
    x = np.arange(e2e.size)
    for arm in sorted(set(arms)):
        m = arms == arm
        ax.plot(x[m], e2e[m], ".", ms=3, color=_COLORS[arm], label=arm or "run")
    ax.axhline(deadline_ms, color="k", ls="--", lw=1, label=f"deadline {deadline_ms:g} ms")
    if abs(period_ms - deadline_ms) > 1e-9:
        ax.axhline(period_ms, color="gray", ls=":", lw=1, label=f"period {period_ms:g} ms")
    ax.set_xlabel("frame (in run order, warm-up included)")
    ax.set_ylabel("end to end, ms")
    ax.set_title("Per-frame end-to-end latency")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    return _png(fig)


def _stacked(arms: dict[str, FrameRecords]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    parts = [n for n in durations(next(iter(arms.values())))
             if n not in ("to_overlay", "end_to_end")]
    cmap = plt.get_cmap("tab10")
    labels = [a or "run" for a in arms]
    bottom = np.zeros(len(arms))
    for j, name in enumerate(parts):
        med = np.array([np.median(durations(r)[name]) / 1e6 if len(r) else 0.0
                        for r in arms.values()])
        ax.bar(labels, med, bottom=bottom, color=cmap(j % 10), label=name)
        bottom += med
    ax.set_ylabel("median, ms")
    ax.set_title("Stage medians, stacked")
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _png(fig)


def _forest(gate: dict) -> str:
    plt = pyplot()
    hyps = [h for h in gate["hypotheses"] if np.isfinite(h["median_ratio"])]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(hyps) + 1.2))
    y = np.arange(len(hyps))[::-1]
    for yi, h in zip(y, hyps):
        c = {"REGRESSION": "#d62728", "PASS": "#2ca02c"}.get(h["verdict"], "#7f7f7f")
        ax.plot(h["ci"], [yi, yi], color=c, lw=2)
        ax.plot(h["median_ratio"], yi, "o", color=c)
        ax.plot([1 + h["delta"]] * 2, [yi - 0.4, yi + 0.4], color="k", lw=0.8)
    ax.axvline(1.0, color="gray", lw=0.8)
    ax.set_yticks(y, [f"{h['metric']} {h['statistic']}" for h in hyps])
    ax.set_xlabel("B / A (median of paired rounds, interval; tick: 1 + δ)")
    ax.set_title(f"Ratios: {gate['verdict']}")
    return _png(fig)


def _table(rows: list[list[Any]], head: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows]
    return "\n".join(out) + "</table>"


def _summary_table(summary: dict) -> str:
    keys = ["n", "min_ms", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "std_ms",
            "jitter_ms", "late"]
    rows = [[name] + [s.get(k) for k in keys]
            for name, s in [*summary["stages"].items(), ("end_to_end", summary["end_to_end"])]]
    rows += [[f"({name})"] + [s.get(k) for k in keys]
             for name, s in summary.get("sub_stages", {}).items()]
    if summary.get("glass_to_glass"):
        g = summary["glass_to_glass"]
        rows.append([f"glass to glass ({g['detected']}/{g['flashes']} markers)"]
                    + [g.get(k) for k in keys])
    dl = summary["end_to_end"]["deadline"]
    fp = summary["end_to_end"].get("frame_periods", {})
    extra = (f"<p>frames {summary['frames']} (warm-up excluded: {summary['warmup_excluded']});"
             f" dropped {summary['frames_dropped']}, missed {summary['frames_missed']}, not "
             f"shown {summary['not_shown']}; deadline {summary['deadline_ms']:g} ms: "
             f"{dl['misses']} misses of {dl['slots']} slots (rate {dl['rate']:.4g}, "
             f"{dl['confidence']:.0%} Clopper-Pearson [{dl['ci'][0]:.4g}, {dl['ci'][1]:.4g}]);"
             f" latency in frame periods p50 {fp.get('p50')}, p99 {fp.get('p99')}, max "
             f"{fp.get('max')}</p>")
    return _table(rows, ["metric"] + keys) + extra


_STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1300px}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee} .REGRESSION{color:#b00;font-weight:bold}
.PASS{color:#070;font-weight:bold} .INCONCLUSIVE{color:#a60;font-weight:bold}
.warn{background:#fee;border:1px solid #b00;padding:0.5em} img{max-width:100%}"""


def write_report(path: str | os.PathLike, doc: dict, records: FrameRecords | None) -> Path:
    """Write the HTML report of a result document (run, ab or compare) to ``path``.

    Parameters
    ----------
    doc : dict
        A result from :mod:`edge.latency.ab` (``measure``/``run_ab``/``compare``; a compare
        document carries ``doc_a``/``doc_b``).
    records : FrameRecords, optional
        The raw records (both arms for an A/B run); None leaves out the frame-level plots.
    """
    pyplot()  # fail early, before any work, when matplotlib is missing
    s = doc.get("settings", {})
    warmup = int(s.get("warmup", 0))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>hsi-edge latency "
             f"report</title><style>{_STYLE}</style></head><body>",
             f"<h1>hsi-edge latency report ({html.escape(doc.get('kind', ''))})</h1>",
             f"<p>created {html.escape(str(doc.get('created', '')))}</p>"]
    if doc.get("hardware_warning"):
        parts.append(f"<p class='warn'>{html.escape(doc['hardware_warning'])}</p>")
    if doc.get("void"):
        parts.append("<p class='warn'>Void rounds: the clocks changed during them (governor, "
                     "cpufreq limits, power mode, clock lock, throttling, or a temperature "
                     "rise; edge/latency/clocks.py). The data is never a pass or a "
                     "regression.</p>")
        parts.append(_table([[v["round"], v.get("arm", ""), "; ".join(v["changes"])]
                             for v in doc["void"]], ["round", "arm", "changes"]))
    if doc.get("interleaved") is False:
        parts.append("<p class='warn'>Stored results compared round by round: the runs were "
                     "not interleaved, so drift between them (load, clocks, temperature) is "
                     "not controlled. Prefer <code>hsi-edge latency ab</code>.</p>")
    gate = doc.get("gate")
    if gate:
        parts.append(f"<h2>Verdict: <span class='{gate['verdict']}'>{gate['verdict']}</span>"
                     f"</h2><p>{html.escape(gate['reason'])} ({gate['pairs']} pairs of rounds;"
                     f" alpha {gate['alpha']}, Holm across gated hypotheses; "
                     f"{gate['confidence']:.0%} bootstrap intervals)</p>")
        rows = [[h["metric"], h["statistic"], h["median_ratio"],
                 f"[{h['ci'][0]:.4g}, {h['ci'][1]:.4g}]", h["p"], h["p_holm"],
                 f"{h['delta']:.0%}", h["verdict"]] for h in gate["hypotheses"]]
        parts.append(_table(rows, ["metric", "statistic", "B/A median", "interval", "p",
                                   "p (Holm)", "δ", "verdict"]))
        parts.append(_img(_forest(gate), "ratios with intervals"))
    if records is not None and len(records):
        arms = _split(records, warmup)
        parts.append("<h2>Distributions</h2>")
        parts.append(_img(_cdfs(arms), "per-stage CDFs"))
        parts.append(_img(_histograms(arms), "log-scale histograms"))
        parts.append("<h2>Timeline</h2>")
        parts.append(_img(_timeline(records, s.get("period_ms", float("nan")),
                                    s.get("deadline_ms", float("nan"))), "per-frame timeline"))
        parts.append("<h2>Where the time goes</h2>")
        parts.append(_img(_stacked(arms), "stacked stage medians"))
    summary = doc.get("summary")
    if summary:
        parts.append("<h2>Summary</h2>")
        groups = summary.items() if "A" in summary else [("run", summary)]
        for arm, sm in groups:
            parts.append(f"<h3>{html.escape(str(arm))}</h3>" + _summary_table(sm))
    diffs = doc.get("software_differences")
    if diffs:
        parts.append("<h2>Software and settings that differ</h2>")
        parts.append(_table([[k, a, b] for k, (a, b) in diffs.items()], ["field", "A", "B"]))
    for key, title in (("fingerprint", "Fingerprint (A)"), ("fingerprint_b", "Fingerprint (B)")):
        if doc.get(key):
            fp = doc[key]
            rows = [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in fp.items()]
            parts.append(f"<h2>{title}</h2>" + _table(rows, ["field", "value"]))
    parts.append("</body></html>")
    out = Path(path)
    atomic_write_bytes(out, "\n".join(parts).encode("utf-8"))
    return out


def history_plot_png(points: list[dict[str, Any]], title: str) -> bytes:
    """A trend plot of stored baselines: end-to-end p50/p99 and the miss rate per entry.

    ``points``: dicts with ``label``, ``p50_ms``, ``p99_ms``, ``miss_rate``.
    """
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    x = np.arange(len(points))
    ax.plot(x, [p["p50_ms"] for p in points], "o-", label="p50")
    ax.plot(x, [p["p99_ms"] for p in points], "s-", label="p99")
    ax.set_ylabel("end to end, ms")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax2.plot(x, [p["miss_rate"] for p in points], "d-", color="#d62728")
    ax2.set_ylabel("deadline miss rate")
    ax2.set_xticks(x, [p["label"] for p in points], rotation=30, ha="right", fontsize=7)
    ax2.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
