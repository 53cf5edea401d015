"""``hsi-edge serve [ADDR]``: the service page with the unit's status, without a run.

``hsi-edge run --serve [ADDR]`` adds the live view, pixel spectra and latency of the run.
The page binds to 127.0.0.1:8765 unless told otherwise; any other address needs a token
(``--token``, or one generated and printed once).  It is read-only: no endpoint moves a device
or changes a setting.  Open it on a unit through an SSH tunnel:
``ssh -L 8765:127.0.0.1:8765 unit`` then http://127.0.0.1:8765/ (README, "Service page").
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["register", "run", "add_serve_options", "add_status_options", "serving",
           "LiveService"]


def add_status_options(p: argparse.ArgumentParser) -> None:
    """Options naming where the unit status comes from (all optional)."""
    g = p.add_argument_group("service page: unit status sources")
    g.add_argument("--selftest-report", metavar="JSON",
                   help="last self-test report (hsi-edge selftest --json > FILE), or a folder "
                        "of them (default with --unit-root: ROOT/unit/selftest)")
    g.add_argument("--unit-root", metavar="DIR",
                   help="install root of a deployed unit (shows the installed release)")
    g.add_argument("--calibration-max-age-days", type=float, metavar="DAYS",
                   help="calibration expiry = record creation + DAYS (when the record states "
                        "none)")


def add_serve_options(p: argparse.ArgumentParser, *, run: bool) -> None:
    """The page's address, token and limits (``run``: ``--serve [ADDR]``, else ``ADDR``)."""
    if run:
        p.add_argument("--serve", nargs="?", const="", default=None, metavar="ADDR",
                       help="also serve the live service page on ADDR (HOST:PORT, default "
                            "127.0.0.1:8765); without --frames the run lasts until Ctrl-C")
    else:
        p.add_argument("addr", nargs="?", default="", metavar="ADDR",
                       help="HOST:PORT to bind (default 127.0.0.1:8765; port 0: any free)")
    p.add_argument("--token", help="access token (>= 16 characters of A-Z a-z 0-9 - _ . ~); "
                                   "required off loopback, generated and printed when not given")
    p.add_argument("--max-clients", type=int, default=4,
                   help="live streams at once (default 4); the next one is refused")
    if run:
        p.add_argument("--serve-fps", type=float, default=4.0,
                       help="frames per second kept for the page (default 4)")
        p.add_argument("--deadline-ms", type=float, default=None,
                       help="end-to-end deadline of the latency panel (default: one frame "
                            "period)")
    add_status_options(p)


def register(sub) -> None:
    p = sub.add_parser("serve", help="the service page (unit status) in a browser, without a "
                                     "run", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serve_options(p, run=False)
    p.add_argument("--calibration", metavar="RECORD",
                   help="calibration record folder whose verdict and expiry to show")
    p.set_defaults(func=run)


@dataclass
class LiveService:
    """What ``hsi-edge run --serve`` hands to the job: the sink and the record hook."""

    sinks: list = field(default_factory=list)
    on_record: Any = None
    server: Any = None
    on_camera: Any = None


def _sources(args: argparse.Namespace, calibration: str | None, run_info: dict):
    from edge.serve.status import StatusSources
    return StatusSources(calibration_record=calibration,
                         calibration_max_age_days=args.calibration_max_age_days,
                         selftest_report=args.selftest_report, unit_root=args.unit_root,
                         run=run_info)


def _start(args: argparse.Namespace, addr: str | None, state) -> Any:
    """Check the address and token, start uvicorn, print the URL (with the token) once."""
    from edge.serve.app import create_app
    from edge.serve.server import ServerThread, parse_addr, resolve_token

    option = "--serve" if hasattr(args, "serve") else "ADDR"
    host, port = parse_addr(addr, option)
    token, generated = resolve_token(host, args.token)
    state.token = token
    server = ServerThread(create_app(state), host, port, option=option).start()
    url = server.url + (f"?token={token}" if token else "")
    shown = url if host not in ("0.0.0.0", "::") else url.replace(
        f"//{host}:" if host == "0.0.0.0" else "//[::]:", "//<this-unit>:")
    note = " (token generated; shown once)" if generated else ""
    print(f"service page: {shown}{note}", file=sys.stderr, flush=True)
    return server


def _max_clients(args) -> int:
    from edge.errors import ConfigError
    if args.max_clients < 1:
        raise ConfigError(f"--max-clients: expected an integer >= 1, got {args.max_clients}")
    return args.max_clients


@contextlib.contextmanager
def serving(args: argparse.Namespace, cfg) -> Iterator[LiveService]:
    """For ``hsi-edge run --serve``: the live sink and record hook, the server running.

    Raises
    ------
    BackendUnavailable
        Starlette/uvicorn missing (names ``pip install 'hsi-edge[serve]'``).
    ConfigError
        A bad address, token, fps, client limit or deadline (names the option).
    """
    from edge.serve import require_serve

    require_serve()
    from edge.serve.app import ServeState
    from edge.serve.latency import RollingLatency
    from edge.serve.live import FrameHub, LiveSink
    from edge.serve.spectrum import UnmixerCache

    colors, names = _card_colours(cfg)
    hub = FrameHub(max_clients=_max_clients(args), colors=colors, class_names=names)
    sink = LiveSink(hub, fps=args.serve_fps)
    latency = RollingLatency(deadline_ms=args.deadline_ms,
                             then=lambda rec, ms: hub.note_stages(int(rec["seq"]), ms))
    p = cfg.processing
    unmixers = UnmixerCache(p.chromophores, p.baseline, cfg.camera.fwhm_nm)
    state = ServeState(hub=hub, latency=latency, unmixers=unmixers,
                       sources=_sources(args, cfg.calibration.record,
                                        {"config": args.config or "defaults",
                                         "camera": cfg.camera.source,
                                         "backend": args.backend or p.backend}))
    server = _start(args, args.serve, state)
    hub.start()
    try:
        yield LiveService(sinks=[sink], on_record=latency.add, server=server,
                          on_camera=unmixers.use_camera)
    finally:
        server.stop()
        hub.stop()


def _card_colours(cfg):
    """Class colours and names of the run's model card (None, () when there is none)."""
    from edge.pipeline.job import resolve_model_card

    try:
        path = resolve_model_card(cfg.model.card, cfg.camera.preset)
        if path is None:
            return None, ()
        from edge.inference import load_model_card
        card = load_model_card(path)
        return card.colors, tuple(card.class_names)
    except Exception:  # the job reports a bad card itself, in one line, before devices move
        return None, ()


def run(args: argparse.Namespace) -> int:
    from edge.serve import require_serve

    require_serve()
    from edge.serve.app import ServeState
    from edge.serve.live import FrameHub

    hub = FrameHub(max_clients=_max_clients(args))
    state = ServeState(hub=hub, sources=_sources(args, args.calibration, {}))
    server = _start(args, args.addr, state)
    stop = threading.Event()
    try:
        while not stop.wait(1.0):   # until Ctrl-C / SIGTERM (the CLI turns it into one)
            pass
    except KeyboardInterrupt:      # the normal way to stop a server: not an error
        pass
    finally:
        server.stop()
    return 0
