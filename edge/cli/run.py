"""``hsi-edge run``: the main job — camera -> calibration -> maps -> segmentation -> sinks.

Prints a per-stage latency table on stdout and writes ``DIR/metrics.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys

__all__ = ["register", "run", "format_latency_table"]


def register(sub) -> None:
    p = sub.add_parser("run", help="run the pipeline (default: simulated camera, numpy, ONNX Runtime)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML settings file (see edge/pipeline/config.py)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to process (default 30; with --serve: until Ctrl-C)")
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    p.add_argument("--backend", choices=("auto", "numpy", "native", "cuda"), default=None,
                   help="per-pixel backend (default: from config, auto)")
    p.add_argument("--runtime", choices=("auto", "onnxruntime", "tensorrt"), default=None,
                   help="inference runtime (default: from config, auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous run's outputs in --out (metrics.json, PNG, NPZ)")
    from edge.cli.serve import add_serve_options
    add_serve_options(p, run=True)
    p.set_defaults(func=run)


def format_latency_table(metrics: dict) -> str:
    """A fixed-width table of per-stage latency figures (ms)."""
    cols = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
    rows = list(metrics["stages"].items()) + [("end_to_end", metrics["end_to_end"])]
    lines = [f"{'stage':<12}" + "".join(f"{c[:-3]:>10}" for c in cols)]
    for name, s in rows:
        lines.append(f"{name:<12}" + "".join(
            f"{s[c]:>10.2f}" if not math.isnan(s[c]) else f"{'-':>10}" for c in cols))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from edge.errors import ConfigError
    from edge.pipeline.app import run_job
    from edge.pipeline.config import load_app_config

    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"--frames: expected an integer >= 1, got {args.frames}")
    cfg = load_app_config(args.config)
    serve = getattr(args, "serve", None) is not None
    frames = args.frames if args.frames is not None or serve else 30
    with contextlib.ExitStack() as stack:
        live = None
        if serve:   # the service page: a sink and the per-frame record hook, nothing more
            from edge.cli.serve import serving
            live = stack.enter_context(serving(args, cfg))
        job = run_job(cfg, frames=frames, out=args.out, backend=args.backend,
                      runtime=args.runtime, progress=not args.no_progress and not serve,
                      overwrite=args.overwrite, extra_sinks=live.sinks if live else (),
                      on_record=live.on_record if live else None,
                      on_camera=live.on_camera if live else None)
    m = job.metrics
    print(f"processed {m['frames_processed']} frames ({m['frames_dropped']} dropped, "
          f"{m['frames_missed']} missed, {m['frames_flagged']} flagged) at {m['fps']:.2f} fps; "
          f"backend {m['backend']}, runtime {m['runtime'] or '-'}, model {m['model'] or '-'}")
    if m.get("quality"):
        q = m["quality"]
        line = (f"StO2 vs ground truth: MAE {q['sto2_mae_pp']:.2f} pp, bias "
                f"{q['sto2_bias_pp']:+.2f} pp")
        if "sto2_valid_fraction" in q and "sto2_mae_all_pp" in q:
            line += (f" on valid pixels ({100 * q['sto2_valid_fraction']:.0f} % of tissue); "
                     f"all pixels MAE {q['sto2_mae_all_pp']:.2f} pp")
        print(line)
    print(format_latency_table(m))
    if job.metrics_error:
        # the summary above is all the user gets: say so in one line, and fail
        print(f"hsi-edge run: error: {job.metrics_error}", file=sys.stderr)
        return 2
    print(f"metrics: {args.out}/metrics.json")
    return 130 if job.result.interrupted else 0
