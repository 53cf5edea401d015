"""``hsi-edge corpus``: validate a release on a recorded corpus, on one machine or a cluster.

``corpus run CORPUS --config FILE --out DIR``
    Every recording of CORPUS (a folder of recordings as ``hsi-edge simulate`` writes them,
    or a manifest YAML listing recordings and calibration records) through the ``hsi-edge
    run`` job, one Dask task per recording; a rerun resumes.  Writes ``DIR/records/``,
    ``DIR/maps/``, ``DIR/results.parquet`` (CSV without pyarrow) and ``DIR/summary.json``.
``corpus compare A B``
    Two runs of the same corpus: IoU per class, StO2 and index shifts, status changes,
    timings; an HTML report and a verdict.  Exit 0 PASS, 1 FAIL (regression), 2 error.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run", "compare"]


def register(sub) -> None:
    p = sub.add_parser("corpus", help="release validation on a recorded corpus (Dask)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    r = csub.add_parser("run", help="process every recording of a corpus")
    r.add_argument("corpus", metavar="CORPUS", help="folder of recordings or manifest .yaml")
    r.add_argument("--config", help="YAML settings of `hsi-edge run` (camera source, "
                                    "recording and calibration are set per recording)")
    r.add_argument("--model", metavar="CARD", help="model card (overrides model.card)")
    r.add_argument("--out", required=True, help="output folder (a rerun resumes)")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running Dask scheduler (default: a local cluster)")
    r.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per CPU core; 0: serial, "
                        "no Dask)")
    r.add_argument("--redo-failed", action="store_true",
                   help="process recordings that failed in a previous run again (a rerun "
                        "otherwise keeps every current result)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=run)
    c = csub.add_parser("compare", help="compare two runs of a corpus (exit 0 pass, 1 fail)")
    c.add_argument("a", metavar="A", help="output folder of the baseline run")
    c.add_argument("b", metavar="B", help="output folder of the candidate run")
    c.add_argument("--out", metavar="REPORT_DIR",
                   help="folder for report.html and comparison.json (default: B/compare)")
    c.add_argument("--thresholds", metavar="FILE", help="YAML overriding the verdict thresholds")
    c.set_defaults(func=compare)


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from edge.corpus.runner import run_corpus
    from edge.pipeline.config import load_app_config

    cfg = load_app_config(args.config)
    s = run_corpus(args.corpus, cfg, args.out, card=args.model, scheduler=args.scheduler,
                   workers=args.workers, progress=not args.no_progress,
                   redo_failed=args.redo_failed, announce=_say)
    rate = s["recordings_per_min"]
    print(f"{s['recordings']} recording(s): {s['ok']} ok, {s['failed']} failed "
          f"({s['computed']} processed, {s['skipped_done']} already done) in {s['wall_s']:.1f} s"
          + (f", {rate:.1f} recordings/min" if rate else ""))
    for f in s["failures"]:
        print(f"  failed {f['id']}: {f['error']}")
    print(f"table: {s['table']['path']} ({s['table']['format']}); summary: "
          f"{args.out}/summary.json")
    return 0


def compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.corpus.compare import compare_runs, load_thresholds
    from edge.corpus.report import write_report

    thresholds = load_thresholds(args.thresholds)
    result = compare_runs(args.a, args.b, thresholds)
    out = Path(args.out) if args.out else Path(args.b) / "compare"
    report = write_report(out, result)
    o = result["overall"]
    print(f"verdict: {result['verdict']}  ({o['recordings']} recording(s) compared, "
          f"mean IoU {_fmt(o['mean_iou'])}, pixel agreement {_fmt(o['pixel_agreement'])}, "
          f"{len(result['status_changes'])} status change(s))")
    for reason in result["reasons"]:
        print(f"  {reason}")
    print(f"report: {report}")
    return 0 if result["verdict"] == "PASS" else 1


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"
