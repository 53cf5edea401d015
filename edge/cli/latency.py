"""``hsi-edge latency``: latency regression testing (measure, A/B gate, compare, baselines).

  run       measure a unit: paced rounds, per-frame records (latency.npz) and a summary
            with the unit's fingerprint (latency.json) in --out
  ab        two configs, or two installed builds (--python-b: arm B in a worker of the other
            install's python), or a test-only --slow-b, interleaved in ABBA rounds, then
            the gate; a round whose clocks changed voids the run (INCONCLUSIVE)
  compare   gate two stored results (refused across hardware keys unless
            --allow-different-hardware)
  baseline  add|check|history: stored baselines per hardware key, trend plot

Exit status of ab, compare and baseline check: 0 PASS, 1 REGRESSION, 3 INCONCLUSIVE (never a
pass: run more rounds), 2 an error.  Thresholds: edge/latency/gate.py (README, "Latency
regression testing").
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def _measure_options(p: argparse.ArgumentParser, *, suffix: str = "") -> None:
    p.add_argument("--frames", type=int, default=None,
                   help="measured frames per round (default: run 300, ab 10)")
    p.add_argument("--warmup", type=int, default=None, help="frames left out at the start of "
                   "every round (counted; default: run 10, ab 4)")
    p.add_argument("--deadline-ms", type=float, default=None,
                   help="end-to-end deadline (default: the frame period)")
    p.add_argument("--preset", choices=("tivita", "snapshot16", "snapshot25"), default=None,
                   help="override camera.preset")
    p.add_argument("--rows", type=int, default=None, help="override camera.rows")
    p.add_argument("--cols", type=int, default=None, help="override camera.cols")
    p.add_argument("--fps", type=float, default=None,
                   help="camera frame rate (default: camera.fps, else 25)")
    p.add_argument("--backend", choices=("auto", "numpy", "native", "cuda"), default=None)
    p.add_argument("--runtime", choices=("auto", "onnxruntime", "tensorrt"), default=None)
    p.add_argument("--model", default=None, help="model card, 'demo' or 'none' (default: "
                   "model.card of the config)")
    p.add_argument("--out", required=True, help="result folder (latency.json, latency.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace a result in --out")
    p.add_argument("--report", help="also write the HTML report to this file")


def register(sub) -> None:
    p = sub.add_parser("latency", help="latency regression testing (run, ab, compare, baseline)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION")

    r = lsub.add_parser("run", help="measure and store a result")
    r.add_argument("--config", help="YAML settings file (as for hsi-edge run)")
    r.add_argument("--rounds", type=int, default=1, help="rounds (default 1)")
    r.add_argument("--marker-every", type=int, default=0, metavar="N",
                   help="glass to glass (simulated camera): the marker LED lights every N-th "
                   "trigger and is found in the output (default 0: off)")
    r.add_argument("--slow", default=None, help="TEST ONLY: slow stages, e.g. chain=10%% or "
                   "chain=2ms (default: $HSI_EDGE_LATENCY_SLOW)")
    _measure_options(r)
    r.set_defaults(func=run)

    a = lsub.add_parser("ab", help="A/B in interleaved ABBA rounds, then the gate")
    a.add_argument("--config", help="settings of arm A (and of B unless --config-b)")
    a.add_argument("--config-b", help="settings of arm B")
    a.add_argument("--backend-b", choices=("auto", "numpy", "native", "cuda"), default=None)
    a.add_argument("--runtime-b", choices=("auto", "onnxruntime", "tensorrt"), default=None)
    a.add_argument("--python-b", metavar="PYTHON", default=None,
                   help="arm B is another installed build: the python of its install (e.g. "
                   "another venv's bin/python); B runs in a worker of it, rounds stay "
                   "interleaved")
    a.add_argument("--worker-timeout", type=float, default=600.0, metavar="S",
                   help="--python-b: longest wait for the worker's answer (default 600 s; "
                   "opening may build a TensorRT engine)")
    a.add_argument("--slow-a", default=None, help="TEST ONLY: slow stages of arm A")
    a.add_argument("--slow-b", default=None, help="TEST ONLY: slow stages of arm B, e.g. "
                   "chain=10%% (default: $HSI_EDGE_LATENCY_SLOW)")
    a.add_argument("--rounds", type=int, default=48, help="rounds before the first verdict "
                   "(whole ABBA blocks; default 48)")
    a.add_argument("--max-rounds", type=int, default=288,
                   help="cap when INCONCLUSIVE adds rounds, 16 at a time (default 288)")
    a.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    _measure_options(a)
    a.set_defaults(func=run)

    c = lsub.add_parser("compare", help="gate two stored results")
    c.add_argument("a", help="result folder (or latency.json) of A, the reference")
    c.add_argument("b", help="result folder (or latency.json) of B, the candidate")
    c.add_argument("--allow-different-hardware", action="store_true",
                   help="compare results of different hardware keys (the report says so)")
    c.add_argument("--report", help="write the HTML report to this file")
    c.add_argument("--json", dest="json_path", help="write the comparison to this JSON file")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=run)

    b = lsub.add_parser("baseline", help="stored baselines per hardware key")
    b.add_argument("action", choices=("add", "check", "history"))
    b.add_argument("result", nargs="?", help="result folder (add, check)")
    b.add_argument("--store", default=None, help="baseline store (default: "
                   "$HSI_EDGE_LATENCY_STORE, else ./latency-baselines)")
    b.add_argument("--key", help="hardware key (history; default: every key)")
    b.add_argument("--plot", help="history: write a PNG trend plot here")
    b.add_argument("--report", help="check: write the HTML report here")
    b.add_argument("--allow-different-hardware", action="store_true", help=argparse.SUPPRESS)
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run(args: argparse.Namespace) -> int:
    action = args.latency_command
    return {"run": _run, "ab": _ab, "compare": _compare, "baseline": _baseline}[action](args)


# -- helpers -----------------------------------------------------------------------------------
def _overrides(args: argparse.Namespace) -> dict:
    return {"preset": args.preset, "rows": args.rows, "cols": args.cols, "fps": args.fps,
            "model": args.model}


def _config(path: str | None, args: argparse.Namespace):
    from edge.latency.session import config_with_overrides
    return config_with_overrides(path, **_overrides(args))


def _check(args: argparse.Namespace, frames: int, max_rounds: int | None = None) -> None:
    """Options checked before any device moves; a missing matplotlib fails here too."""
    from edge.latency.ab import check_settings
    check_settings(frames, args.warmup, args.rounds, max_rounds, args.deadline_ms)
    if args.report:
        from edge.latency.report import pyplot
        pyplot()


def _out(args: argparse.Namespace) -> Path:
    from edge.errors import ConfigError
    from edge.latency.store import JSON_NAME
    from edge.pipeline.app import prepare_out_dir

    out = prepare_out_dir(args.out)
    if (out / JSON_NAME).exists() and not args.overwrite:
        raise ConfigError(f"--out: {str(out)!r} already holds a latency result; choose another "
                          f"folder or add --overwrite")
    return out


def _progress(args: argparse.Namespace):
    return None if args.debug else (lambda msg: log.info("%s", msg))


def _report(path: str | None, doc: dict, records) -> None:
    if path:
        from edge.latency.report import write_report
        write_report(path, doc, records)
        print(f"report: {path}")


def _print_summary(label: str, summary: dict) -> None:
    e = summary["end_to_end"]
    dl = e["deadline"]
    print(f"{label}end to end over {summary['frames']} frames (warm-up {summary['warmup_excluded']} "
          f"excluded): p50 {e['p50_ms']:.2f} ms, p99 {e['p99_ms']:.2f}, p99.9 "
          f"{e['p99_9_ms']:.2f}, max {e['max_ms']:.2f}; deadline {summary['deadline_ms']:g} ms: "
          f"{dl['misses']}/{dl['slots']} missed ({dl['rate']:.2%}, 95% CI "
          f"{dl['ci'][0]:.2%}-{dl['ci'][1]:.2%}); {summary['frames_dropped']} dropped, "
          f"{summary['frames_missed']} missed by the camera")


def _print_gate(gate: dict) -> int:
    from edge.latency.gate import EXIT_CODES
    print(f"verdict: {gate['verdict']} ({gate['reason']})")
    return EXIT_CODES[gate["verdict"]]


def _slow(spec: str | None, option: str):
    from edge.latency.slow import ENV_VAR, parse_slow
    if spec is None and os.environ.get(ENV_VAR):
        spec = os.environ[ENV_VAR]
        option = f"{option} (from ${ENV_VAR})"
        log.warning("test-only slowdown from $%s: %s", ENV_VAR, spec)
    return parse_slow(spec, option)


# -- actions -----------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from edge.latency.ab import measure
    from edge.latency.session import LatencySession
    from edge.latency.store import save_result

    frames = 300 if args.frames is None else args.frames
    if args.warmup is None:
        args.warmup = 10
    _check(args, frames)
    cfg = _config(args.config, args)
    slow = _slow(args.slow, "--slow")
    out = _out(args)
    if args.marker_every < 0:
        from edge.errors import ConfigError
        raise ConfigError(f"--marker-every: expected an integer >= 0, got {args.marker_every}")
    with LatencySession(cfg, backend=args.backend, runtime=args.runtime, slow=slow,
                        marker_every=args.marker_every) as s:
        doc, rec = measure(s, frames=frames, warmup=args.warmup,
                           rounds=args.rounds, deadline_ms=args.deadline_ms,
                           progress=_progress(args))
    path = save_result(out, doc, rec)
    _print_summary("", doc["summary"])
    g2g = doc["summary"].get("glass_to_glass")
    if g2g:
        print(f"glass to glass (marker LED -> found in the output): {g2g['detected']} of "
              f"{g2g['flashes']} markers seen, p50 {g2g['p50_ms']:.2f} ms, max "
              f"{g2g['max_ms']:.2f} ms")
    if doc.get("void"):
        from edge.latency.ab import void_reason
        print(f"warning: {void_reason(doc['void'])}; `compare` and `baseline add` will not "
              f"accept it", file=sys.stderr)
    print(f"hardware key: {doc['fingerprint']['hardware_key']}")
    print(f"result: {path}")
    _report(args.report, doc, rec)
    return 0


def _ab(args: argparse.Namespace) -> int:
    from edge.latency.ab import run_ab
    from edge.latency.session import LatencySession
    from edge.latency.store import save_result

    frames = 10 if args.frames is None else args.frames
    if args.warmup is None:
        args.warmup = 4
    _check(args, frames, args.max_rounds)
    cfg_a = _config(args.config, args)
    # with --python-b, B's config is read by B's build (it may know other keys)
    cfg_b = None if args.python_b else _config(args.config_b or args.config, args)
    slow_a = _slow(args.slow_a, "--slow-a") if args.slow_a else {}
    slow_b = _slow(args.slow_b, "--slow-b")
    out = _out(args)
    if args.python_b is not None and not 0 < args.worker_timeout <= 86400:
        from edge.errors import ConfigError
        raise ConfigError(f"--worker-timeout: expected seconds > 0 and at most 86400 (a day), "
                          f"got {args.worker_timeout}")
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(LatencySession(cfg_a, backend=args.backend,
                                               runtime=args.runtime, slow=slow_a, label="A"))
        backend_b, runtime_b = args.backend_b or args.backend, args.runtime_b or args.runtime
        if args.python_b is not None:
            from edge.latency.worker import WorkerArm
            b = stack.enter_context(WorkerArm(
                args.python_b, config=args.config_b or args.config, overrides=_overrides(args),
                backend=backend_b, runtime=runtime_b, slow=slow_b, label="B",
                timeout_s=args.worker_timeout))
        else:
            b = stack.enter_context(LatencySession(cfg_b, backend=backend_b,
                                                   runtime=runtime_b, slow=slow_b, label="B"))
        doc, rec = run_ab(a, b, frames=frames, warmup=args.warmup,
                          rounds=args.rounds, max_rounds=args.max_rounds,
                          deadline_ms=args.deadline_ms, seed=args.seed,
                          progress=_progress(args))
    path = save_result(out, doc, rec)
    _print_summary("A: ", doc["summary"]["A"])
    _print_summary("B: ", doc["summary"]["B"])
    diff = doc["software_differences"]
    if diff:
        print("software differences (A -> B): " + "; ".join(
            f"{k}: {a_!r} -> {b_!r}" for k, (a_, b_) in diff.items()))
    print(f"result: {path}")
    _report(args.report, doc, rec)
    return _print_gate(doc["gate"])


def _compare_docs(doc_a: dict, doc_b: dict, args: argparse.Namespace, report: str | None) -> int:
    from edge.latency.ab import compare

    cmp = compare(doc_a, doc_b, allow_different_hardware=args.allow_different_hardware,
                  seed=args.seed)
    if cmp["hardware_warning"]:
        print(f"warning: {cmp['hardware_warning']}", file=sys.stderr)
    cmp.update(settings=doc_b.get("settings", {}), summary={"A": doc_a["summary"],
                                                            "B": doc_b["summary"]},
               fingerprint=doc_a["fingerprint"], fingerprint_b=doc_b["fingerprint"])
    if getattr(args, "json_path", None):
        from edge.pipeline.app import write_json
        write_json(args.json_path, cmp)
    _report(report, cmp, None)
    return _print_gate(cmp["gate"])


def _compare(args: argparse.Namespace) -> int:
    from edge.latency.store import load_result
    return _compare_docs(load_result(args.a, kind="run", what="compare"),
                         load_result(args.b, kind="run", what="compare"), args, args.report)


def _baseline(args: argparse.Namespace) -> int:
    from edge.errors import ConfigError, DataFormatError
    from edge.latency.store import BaselineStore, history_point, load_result

    store = BaselineStore(args.store)
    if args.action in ("add", "check") and not args.result:
        raise ConfigError(f"baseline {args.action}: give the result folder "
                          f"(from `hsi-edge latency run --out DIR`)")
    if args.action == "add":
        dest = store.add(args.result)
        print(f"baseline stored: {dest}")
        return 0
    if args.action == "check":
        doc_b = load_result(args.result, kind="run", what="baseline check")
        base = store.latest(doc_b["fingerprint"]["hardware_key"])
        print(f"baseline: {base}")
        return _compare_docs(load_result(base), doc_b, args, args.report)
    keys = [args.key] if args.key else store.keys()
    if not keys:
        raise ConfigError(f"--store: no baselines in {store.root}")
    points = []
    damaged = 0
    for key in keys:
        print(key)
        for path in store.history(key):
            try:
                p = history_point(path)
            except DataFormatError as exc:     # one damaged entry does not hide the others
                damaged += 1
                print(f"warning: skipped {exc}", file=sys.stderr)
                continue
            points.append(p)
            print(f"  {path.name}: p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms, "
                  f"miss rate {p['miss_rate']:.2%}")
    if damaged and not points:
        raise DataFormatError(f"--store: no readable baseline in {store.root} ({damaged} "
                              f"damaged)")
    if args.plot:
        from edge.core.fileio import atomic_write_bytes
        from edge.latency.report import history_plot_png
        atomic_write_bytes(args.plot, history_plot_png(points, ", ".join(keys)))
        print(f"plot: {args.plot}")
    return 0
