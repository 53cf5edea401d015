"""Pipeline frame rate with the service page open against without it, on this machine.

Usage::

    python tools/serve_bench.py [--rows 240] [--cols 320] [--frames 60] [--rounds 4]
                                [--serve-fps 4] [--clients 2] [--json FILE]

The job of ``hsi-edge run`` (simulated camera as fast as it can deliver, NumPy backend, maps
only, null sink, ``block`` policy: throughput, not pacing) runs in alternating rounds,
``off`` then ``on``, ``--rounds`` times each.  ``on`` adds what ``hsi-edge run --serve`` adds:
the live sink (one frame in ``1/serve-fps`` s copied into the slot and the spectrum ring),
the per-frame record hook, the JPEG encoder thread and uvicorn on 127.0.0.1 (port 0), with
``--clients`` WebSocket clients reading every frame and one client that never reads (a
stalled browser tab).  Reported: the median frame rate of each arm, their ratio (the margin
the README states), the sink stage's median time per frame in each arm (what the pipeline
thread pays), the encoder thread's CPU time per kept frame, per-round figures, what the page did (frames encoded, sent and skipped
per client) and the load average before and after (a shared machine distorts every figure).

A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _config(tmp: Path, rows: int, cols: int):
    import yaml

    from edge.pipeline.config import load_app_config

    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump({
        "camera": {"rows": rows, "cols": cols, "seed": 1},
        "calibration": {"frames": 2}, "model": {"card": "none"},
        "processing": {"backend": "numpy"}, "sinks": {"png_every": 0, "npz_every": 0}}))
    return load_app_config(str(path))


class Readers:
    """``n`` WebSocket clients that read every message, and one raw socket that never reads."""

    def __init__(self, url: str, n: int):
        from websockets.sync.client import connect

        self._stop = threading.Event()
        self.received = [0] * n
        self._stack = contextlib.ExitStack()
        self._conns = [self._stack.enter_context(connect(url, open_timeout=10))
                       for _ in range(n)]
        self._threads = [threading.Thread(target=self._read, args=(i,), daemon=True)
                         for i in range(n)]
        host, port = url.removeprefix("ws://").split("/")[0].split(":")
        self._stalled = socket.create_connection((host, int(port)))
        self._stalled.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\n"
                               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Key: c2VydmUtYmVuY2gta2V5IQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        for t in self._threads:
            t.start()

    def _read(self, i: int) -> None:
        ws = self._conns[i]
        while not self._stop.is_set():
            try:
                ws.recv(timeout=0.5)
                self.received[i] += 1
            except TimeoutError:
                continue
            except Exception:
                return

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._stack.close()
        self._stalled.close()


def _round(cfg, frames: int, serve: bool, serve_fps: float, clients: int) -> dict:
    from edge.pipeline.job import run_job

    if not serve:
        job = run_job(cfg, frames=frames, out=None, null_sink=True)
        return {"arm": "off", "fps": job.result.fps,
                "sink_p50_ms": job.result.stages["sink"]["p50_ms"]}
    from edge.serve.app import ServeState, create_app
    from edge.serve.latency import RollingLatency
    from edge.serve.live import FrameHub, LiveSink
    from edge.serve.server import ServerThread

    hub = FrameHub().start()
    sink = LiveSink(hub, fps=serve_fps)
    latency = RollingLatency(then=lambda rec, ms: hub.note_stages(int(rec["seq"]), ms))
    server = ServerThread(create_app(ServeState(hub=hub, latency=latency)), "127.0.0.1", 0)
    server.start()
    readers = Readers(f"ws://127.0.0.1:{server.port}/ws", clients)
    try:
        job = run_job(cfg, frames=frames, out=None, null_sink=True, extra_sinks=[sink],
                      on_record=latency.add)
        page = hub.summary()
    finally:
        readers.close()
        server.stop()
        hub.stop()
    return {"arm": "on", "fps": job.result.fps, "kept": page["kept"],
            "sink_p50_ms": job.result.stages["sink"]["p50_ms"],
            "encoded": page["encoded"], "encode_cpu_ms": page["encode_cpu_ms_mean"],
            "clients": page["clients"], "messages_read": readers.received}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=240)
    p.add_argument("--cols", type=int, default=320)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--serve-fps", type=float, default=4.0)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)

    load0 = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(Path(tmp), a.rows, a.cols)
        _round(cfg, 5, False, a.serve_fps, a.clients)          # imports, caches, warm-up
        for r in range(a.rounds):
            for serve in (False, True):
                t0 = time.monotonic()
                res = _round(cfg, a.frames, serve, a.serve_fps, a.clients)
                res["round"], res["wall_s"] = r, time.monotonic() - t0
                rounds.append(res)
                print(f"round {r} {res['arm']:>3}: {res['fps']:7.2f} fps, sink p50 "
                      f"{res['sink_p50_ms']:.2f} ms"
                      + (f"  (encoded {res['encoded']}, {res['encode_cpu_ms']:.1f} ms CPU "
                         f"each; clients "
                         + ", ".join(f"sent {c['sent']}/skipped {c['skipped']}"
                                     for c in res['clients']) + ")" if serve else ""),
                      flush=True)
    off = statistics.median(r["fps"] for r in rounds if r["arm"] == "off")
    on = statistics.median(r["fps"] for r in rounds if r["arm"] == "on")
    sink_off = statistics.median(r["sink_p50_ms"] for r in rounds if r["arm"] == "off")
    sink_on = statistics.median(r["sink_p50_ms"] for r in rounds if r["arm"] == "on")
    enc = statistics.median(r["encode_cpu_ms"] for r in rounds if r["arm"] == "on")
    doc = {"rows": a.rows, "cols": a.cols, "frames": a.frames, "rounds": a.rounds,
           "serve_fps": a.serve_fps, "clients": a.clients, "fps_off": off, "fps_on": on,
           "ratio_on_off": on / off, "sink_p50_ms_off": sink_off, "sink_p50_ms_on": sink_on,
           "encode_cpu_ms": enc, "cpus": os.cpu_count(), "loadavg_before": load0,
           "loadavg_after": os.getloadavg(), "per_round": rounds}
    print(f"median fps without the page {off:.2f}, with it {on:.2f}: ratio {on / off:.3f} "
          f"({a.rows}x{a.cols}, {a.clients} reading clients + 1 stalled, page at "
          f"{a.serve_fps:g} fps; load average {load0[0]:.1f} -> {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs)")
    print(f"sink stage p50 {sink_off:.2f} -> {sink_on:.2f} ms per frame (views into the "
          f"slot); render + JPEG {enc:.1f} ms CPU per kept frame in the encoder thread = "
          f"{enc * a.serve_fps / 10:.1f} % of one core at {a.serve_fps:g} fps")
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
