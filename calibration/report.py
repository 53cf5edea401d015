"""The field calibration report: one self-contained HTML file with PNG plots, and a JSON twin.

Contents (``../shared/research/field_calibration.md`` section 3): the verdict table (every
check with value, limits, method, source and what to fix); warm-up curve; dark statistics per
band and the hot-pixel map; the white spectrum against the previous calibration; the white
uniformity map; SNR per band against the baseline; linearity residuals; measured against
certified reflectance with the tolerance band; wavelength shift per region; MTF; the drift
trend of the camera's history.  Plots are PNG (matplotlib, Agg backend) embedded as data URIs,
so the file opens anywhere without a network or other files.  Without matplotlib the report
has the tables only (said in the file and the log).
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

import numpy as np

from edge.core.fileio import json_safe
from edge.core.plots import png_base64, pyplot_or_none
from calibration.thresholds import CheckResult

__all__ = ["render", "REPORT_HTML", "REPORT_JSON"]

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
_COLOURS = {"PASS": "#1b7f3b", "WARN": "#b36b00", "FAIL": "#b00020"}


def _plt():
    return pyplot_or_none()


def _png(fig) -> str:
    fig.tight_layout()
    return png_base64(fig, dpi=72, tight=False)


def _figures(plt, record, by: dict[str, CheckResult], qc: dict, extras: dict) -> list[tuple]:
    wl = np.asarray(record.wavelengths)
    figs: list[tuple[str, str]] = []

    def add(title: str, draw) -> None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        draw(fig, ax)
        ax.set_title(title, fontsize=10)
        figs.append((title, _png(fig)))

    if "warmup" in extras:
        w = extras["warmup"]
        add("Warm-up: white level (central mean)", lambda f, a: (
            a.plot(np.asarray(w["t_s"]) / 60, w["level"], "o-"), a.set_xlabel("minutes"),
            a.set_ylabel("counts")))
    if "dark_level" in by:
        d = by["dark_level"].data

        def dark(f, a):
            a.plot(wl, d["band_mean"], label="mean")
            a.set_xlabel("nm"), a.set_ylabel("mean counts")
            if "band_noise" in d:
                b = a.twinx()
                b.plot(wl, d["band_noise"], "--", c="tab:orange", label="temporal noise")
                b.set_ylabel("noise counts rms")
        add("Dark level (solid) and temporal noise (dashed) per band", dark)
    if "hot_map" in extras:
        def hot(f, a):
            im = a.imshow(np.asarray(extras["hot_map"], float), cmap="Reds", vmin=0, vmax=1)
            a.set_xlabel(f"{int(np.sum(extras['hot_map']))} hot pixel(s)")
            f.colorbar(im, ax=a)
        add("Hot-pixel map", hot)
    if "white_band" in extras:
        def white(f, a):
            a.plot(wl, extras["white_band"], label="this calibration")
            if "previous_white" in extras:
                a.plot(wl, extras["previous_white"], "--", label="previous")
            a.set_xlabel("nm"), a.set_ylabel("counts above dark"), a.legend(fontsize=8)
        add("White spectrum against the previous calibration", white)
    if "uniformity_bands" in extras:
        maps = extras["uniformity_bands"]
        fig, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 2.6))
        for a, (nm, m) in zip(np.atleast_1d(axes), maps.items()):
            im = a.imshow(100 * (np.asarray(m, float) - 1), cmap="coolwarm")
            a.set_title(f"{nm:.0f} nm", fontsize=9)
            a.set_xticks([]), a.set_yticks([])
            fig.colorbar(im, ax=a, label="% from median")
        figs.append(("White uniformity maps (three bands)", _png(fig)))
    if "white_map" in extras:
        def uni(f, a):
            m = 100 * np.asarray(extras["white_map"], float)
            lim = max(float(np.nanmax(np.abs(m))), 0.5)
            im = a.imshow(m, cmap="coolwarm", vmin=-lim, vmax=lim)
            f.colorbar(im, ax=a, label="% deviation")
        add("White uniformity / dirt map (band average)", uni)
    if "snr" in by:
        def snr(f, a):
            a.plot(wl, by["snr"].data["snr"], label="now")
            if "baseline" in by["snr"].data:
                base = np.asarray(by["snr"].data["baseline"])
                a.plot(wl, base, "--", label="baseline")
                a.plot(wl, 0.8 * base, ":", label="FAIL limit")
            a.set_xlabel("nm"), a.set_ylabel("SNR"), a.legend(fontsize=8)
        add("SNR per band", snr)
    if "linearity" in by:
        d = by["linearity"].data
        add("Linearity residuals (worst band)", lambda f, a: (
            a.plot(np.asarray(d["exposures"]) / 1000, d["residual_pct"], "o-"),
            a.axhline(by["linearity"].fail, ls=":", c="r"),
            a.axhline(-by["linearity"].fail, ls=":", c="r"),
            a.set_xlabel("exposure ms"), a.set_ylabel("% from line")))
    for name, tol in (("reflectance_accuracy", "fail"), ("colour_angle", None)):
        if name in by:
            d = by[name].data

            def refl(f, a, d=d, name=name):
                c = np.asarray(d["certified"])
                a.plot(wl, d["measured"], label="measured")
                a.plot(wl, c, "--", label="certified")
                if name == "reflectance_accuracy":
                    lim = by[name].fail
                    a.fill_between(wl, c - lim, c + lim, alpha=0.2, label="tolerance")
                a.set_xlabel("nm"), a.set_ylabel("reflectance"), a.legend(fontsize=8)
            add("Grey tile: measured against certified" if name == "reflectance_accuracy"
                else "Colour tile: measured against certified", refl)
    if "wavelength_shift" in by:
        reg = by["wavelength_shift"].data["regions"]
        add("Wavelength shift per region", lambda f, a: (
            a.bar(list(reg), list(reg.values())), a.set_ylabel("nm"),
            a.tick_params(axis="x", labelsize=7),
            a.axhline(by["wavelength_shift"].fail, ls=":", c="r"),
            a.axhline(-by["wavelength_shift"].fail, ls=":", c="r")))
    if "mtf50" in by:
        d = by["mtf50"].data
        add(f"MTF (slanted edge), MTF50 {d['mtf50']:.3f} cycles/px", lambda f, a: (
            a.plot(d["freq"], d["mtf"]), a.axhline(0.5, ls=":"), a.set_xlabel("cycles/px"),
            a.set_ylabel("MTF")))
    for t in qc.get("trend", []):
        d = t.get("data") or {}
        if "series" in d:
            add(f"Drift trend: {t['name']} ({t['verdict']})", lambda f, a, d=d: (
                a.plot(d["days"], d["series"], "o-"), a.set_xlabel("days since commissioning"),
                a.set_ylabel(d.get("metric", ""))))
    return figs


def _row(c: dict) -> str:
    v = c["value"]
    shown = ("yes" if v else "no") if isinstance(v, bool) or v is None else (
        f"{v:.4g}" if isinstance(v, (int, float)) else html.escape(str(v)))
    if c["kind"] == "range":
        limits = (f"PASS {c['warn'][0]:g}–{c['warn'][1]:g}; "
                  f"WARN {c['fail'][0]:g}–{c['fail'][1]:g}")
    elif c["kind"] in ("max", "min"):
        op = "≤" if c["kind"] == "max" else "≥"
        limits = f"PASS {op} {c['warn']:g}; WARN {op} {c['fail']:g}"
    else:
        limits = "must hold" if c["kind"] == "match" else "shown only"
    colour = _COLOURS.get(c["verdict"], "#444")
    return (f"<tr><td>{html.escape(c['name'])}</td><td style='color:{colour};font-weight:bold'>"
            f"{c['verdict']}</td><td>{shown} {html.escape(c['unit'])}</td><td>{limits}</td>"
            f"<td>{html.escape(c['detail'])}</td><td>{html.escape(c['method'])}</td>"
            f"<td>{html.escape(c['source'])}</td><td>{html.escape(c['fix'])}</td></tr>")


def render(record, results: list[CheckResult], qc: dict[str, Any],
           extras: dict[str, Any], plots: bool = True) -> dict[str, bytes]:
    """The report files of a signed calibration: ``{"report.html": ..., "report.json": ...}``
    (``plots`` False: tables only, e.g. on a slow bench)."""
    by = {r.name: r for r in results}
    doc = json_safe({"serial": record.camera_serial, "qc": qc,
                 "checks": [r.as_dict(with_data=True) for r in results
                            if not isinstance(r.data.get("map"), np.ndarray)],
                 "warmup": extras.get("warmup"), "white_band": extras.get("white_band"),
                 "previous_white": extras.get("previous_white"),
                 "wavelengths_nm": [float(v) for v in record.wavelengths]})
    plt = _plt() if plots else None
    figs = [] if plt is None else _figures(plt, record, by, qc, extras)
    if plt is None and plots:
        log.warning("report: matplotlib is not installed (pip install 'hsi-edge[report]'); "
                    "the report has tables only")
    verdict = qc["verdict"]
    tiles = "".join(f"<li>{html.escape(role)}: {html.escape(t['tile_id'])}, certificate "
                    f"{html.escape(t['certificate'])}, expires {html.escape(t['expires'])}</li>"
                    for role, t in qc.get("tiles", {}).items())
    fails = [c for c in qc["checks"] if c["verdict"] != "PASS"]
    todo = "".join(f"<li><b>{c['verdict']} {html.escape(c['name'])}</b>: "
                   f"{html.escape(c['fix'])}</li>" for c in fails) or "<li>nothing</li>"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Calibration report {html.escape(record.camera_serial)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}"
        "img{margin:6px;border:1px solid #ddd}</style></head><body>",
        f"<h1>Field calibration of camera {html.escape(record.camera_serial)}: "
        f"<span id='verdict' style='color:{_COLOURS.get(verdict)}'>{verdict}</span></h1>",
        f"<p>Signed {html.escape(qc['signed'])} by {html.escape(qc['operator'])}; valid until "
        f"<b>{html.escape(qc['valid_until'])}</b>. Software {html.escape(qc['software_version'])}"
        f", threshold table {html.escape(qc['thresholds_version'])}. "
        + ("Commissioning (this calibration sets the baseline)." if qc.get("commissioning")
           else "") +
        "</p>",
        f"<p>Exposure {record.exposure_us:g} µs (white {record.white_exposure_us:g} µs), gain "
        f"{record.gain:g}, {record.shape[0]}×{record.shape[1]} px, {record.shape[2]} bands "
        f"{record.wavelengths[0]:g}–{record.wavelengths[-1]:g} nm.</p>",
        f"<h2>Tiles</h2><ul>{tiles}</ul><h2>To do</h2><ul>{todo}</ul>",
        "<h2>Checks</h2><table id='checks'><tr><th>check</th><th>verdict</th><th>value</th>"
        "<th>limits</th><th>detail</th><th>method</th><th>source</th><th>fix</th></tr>",
        *(_row(c) for c in qc["checks"]), "</table>",
    ]
    if qc.get("trend"):
        parts += ["<h2>Drift trend (history of this camera)</h2><table id='trend'><tr>"
                  "<th>check</th><th>verdict</th><th>value</th><th>limits</th><th>detail</th>"
                  "<th>method</th><th>source</th><th>fix</th></tr>",
                  *(_row(c) for c in qc["trend"]), "</table>"]
    parts.append("<h2>Plots</h2>" if figs else "<p>No plots (matplotlib not installed or "
                 "plots switched off).</p>")
    for title, b64 in figs:
        parts.append(f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,"
                     f"{b64}'><figcaption>{html.escape(title)}</figcaption></figure>")
    # says on the page whether every plot decoded (read by the headless-browser test)
    parts.append("<script>window.addEventListener('load',function(){var i=document.images,"
                 "n=0;for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}"
                 "document.body.setAttribute('data-images',i.length);"
                 "document.body.setAttribute('data-images-ok',n);});</script>")
    parts.append("</body></html>")
    return {REPORT_HTML: "\n".join(parts).encode("utf-8"),
            REPORT_JSON: (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8")}
