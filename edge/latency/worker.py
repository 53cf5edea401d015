"""Arm B of ``hsi-edge latency ab --python-b PYTHON``: another installed build, in a worker.

Two builds cannot share one process, so arm B runs in a subprocess of the other install's
interpreter (``PYTHON -I -m edge.latency.worker``: ``-I`` keeps this build's working tree and
``PYTHONPATH`` out of its ``sys.path``, so it imports its own ``edge``).  The worker opens its
own :class:`~edge.latency.session.LatencySession` from the config and runs one round per
request; the rounds stay ABBA-interleaved with arm A's in this process
(:func:`edge.latency.ab.run_ab` sees a :class:`WorkerArm` like a session).  The worker reads
the clock state itself (its session's :func:`~edge.latency.clocks.default_watch`, in its own
process): once per boundary between two of its rounds in a row (B B), and afresh at the start
of its first round after A's, where this process has read the end of A's round; the clock
states come back with the round's records (compact in the NPZ, full once loaded).

Protocol (:data:`PROTOCOL`), one JSON object per line; requests on the worker's stdin,
answers on its stdout (its logs go to stderr):

=============================================  ================================================
request                                        answer
=============================================  ================================================
(none: the worker starts)                      ``{"protocol": PROTOCOL, "hsi_edge": version}``
``{"op": "open", "config", "overrides",``      ``{"ok": true, "info", "fingerprint", "fps"}``
``"backend", "runtime", "slow", "label",``
``"dir"}``
``{"op": "round", "frames", "warmup",``        ``{"ok": true, "records": PATH}`` (an NPZ of
``"index", "arm"}``                            :class:`~edge.latency.records.FrameRecords`
                                               in ``dir``)
``{"op": "close"}``                            ``{"ok": true}``, then the worker exits
=============================================  ================================================

A failure in the worker answers ``{"ok": false, "error": LINE, "type": NAME}``.  A worker that
dies, hangs (no answer within ``timeout_s``), prints something that is not a JSON object or
speaks another protocol raises :class:`WorkerError`: one line, and the worker is stopped.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from edge.errors import HsiEdgeError
from edge.latency.records import FrameRecords

__all__ = ["PROTOCOL", "WorkerArm", "WorkerError", "main", "DEFAULT_TIMEOUT_S"]

log = logging.getLogger(__name__)

#: The worker protocol; a worker of another version is refused (one line).
PROTOCOL = "hsi-edge-latency-worker/1"
#: Seconds to wait for any answer (opening a session may build a TensorRT engine).
DEFAULT_TIMEOUT_S = 600.0


class WorkerError(HsiEdgeError):
    """Arm B's worker died, hung, spoke garbage or another protocol, or failed."""


# -- this build's side ---------------------------------------------------------------------------
class WorkerArm:
    """Arm B in a worker subprocess of ``python`` (a context manager; the session's interface
    as far as :func:`edge.latency.ab.run_ab` uses it: ``run_round``, ``fps``, ``period_ns``,
    ``info``, ``fingerprint()``).

    Parameters
    ----------
    python : str
        The other install's interpreter (e.g. ``/opt/release-1.4/venv/bin/python``).
    config : str, optional
        The config file (made absolute: the worker's paths are this process's).
    overrides : dict
        preset, rows, cols, fps, model (:func:`edge.latency.session.config_with_overrides`).
    slow : dict
        Parsed ``--slow-b`` (:func:`edge.latency.slow.parse_slow`).
    timeout_s : float
        Longest wait for one answer.
    """

    def __init__(self, python: str, *, config: str | None = None,
                 overrides: dict[str, Any] | None = None, backend: str | None = None,
                 runtime: str | None = None, slow: dict | None = None, label: str = "B",
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        self.python = str(python)
        self.config = None if config is None else str(Path(config).resolve())
        self.overrides = dict(overrides or {})
        self.backend, self.runtime = backend, runtime
        self.slow = {k: list(v) for k, v in (slow or {}).items()}
        self.label = label
        self.timeout_s = float(timeout_s)
        self.info: dict[str, Any] = {}
        self.fps = 0.0
        self._fingerprint: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._stderr: collections.deque = collections.deque(maxlen=20)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._err_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "WorkerArm":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="hsi-edge-latency-b-")
        cmd = [self.python, "-I", "-m", "edge.latency.worker"]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, bufsize=1)
        except OSError as exc:
            raise WorkerError(f"--python-b {self.python}: cannot start it ({exc.strerror or exc}"
                              f"); give the python of another hsi-edge install") from exc
        threading.Thread(target=self._pump, args=(self._proc.stdout, self._lines.put, True),
                         daemon=True).start()
        self._err_thread = threading.Thread(target=self._pump,
                                            args=(self._proc.stderr, self._on_stderr, False),
                                            daemon=True)
        self._err_thread.start()
        hello = self._answer("the start")
        got = hello.get("protocol")
        if got != PROTOCOL:
            raise WorkerError(f"--python-b {self.python}: its latency worker speaks protocol "
                              f"{got!r}, this build {PROTOCOL!r}; install builds with the same "
                              f"worker protocol (or compare stored results with `hsi-edge "
                              f"latency compare`)")
        reply = self._request({"op": "open", "config": self.config,
                               "overrides": self.overrides, "backend": self.backend,
                               "runtime": self.runtime, "slow": self.slow, "label": self.label,
                               "dir": self._tmp.name}, "open")
        self.info = dict(reply.get("info") or {})
        self._fingerprint = dict(reply.get("fingerprint") or {})
        try:
            self.fps = float(reply.get("fps"))
        except (TypeError, ValueError):
            self.fps = float("nan")
        if not self.fps > 0:
            raise WorkerError(f"--python-b {self.python}: its answer to open gives no frame "
                              f"rate (fps {reply.get('fps')!r})")
        log.info("arm %s: worker %s, hsi-edge %s", self.label, self.python,
                 hello.get("hsi_edge"))

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                    proc.stdin.flush()
                    proc.stdin.close()      # end of requests, also for a worker that ignores
                    proc.wait(timeout=min(self.timeout_s, 30.0))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- the session's interface ------------------------------------------------------------
    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.fps))

    def fingerprint(self) -> dict[str, Any]:
        """The worker's fingerprint: its hsi-edge version, commit, dirty flag, libraries."""
        return dict(self._fingerprint)

    def run_round(self, frames: int, *, warmup: int = 0, index: int = 0,
                  arm: str = "") -> FrameRecords:
        reply = self._request({"op": "round", "frames": int(frames), "warmup": int(warmup),
                               "index": int(index), "arm": arm}, f"round {index}")
        path = reply.get("records")
        if not isinstance(path, str):
            raise WorkerError(f"--python-b {self.python}: its answer to round {index} names "
                              f"no records file")
        rec = FrameRecords.load(path)
        os.unlink(path)
        return rec

    # -- wire ------------------------------------------------------------------------------
    @staticmethod
    def _pump(stream, put, end: bool) -> None:
        """Lines of ``stream`` to ``put``; then None (the worker's stdout ended) if ``end``."""
        try:
            for line in stream:
                put(line)
        except (OSError, ValueError):
            pass
        if end:
            put(None)

    def _on_stderr(self, line: str | None) -> None:
        if line:
            line = line.rstrip()
            self._stderr.append(line)
            # the worker's own warnings (its log format, see main) are shown as arm B's
            level = (logging.WARNING if line.startswith(("worker WARNING", "worker ERROR"))
                     else logging.DEBUG)
            log.log(level, "arm %s: %s", self.label, line)

    def _request(self, msg: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):
            pass                      # a dead worker: _answer says how it ended
        reply = self._answer(what)
        if reply.get("ok") is not True:
            err = reply.get("error") or f"unexpected answer {json.dumps(reply)[:120]}"
            raise WorkerError(f"arm {self.label} (--python-b {self.python}): {err}")
        return reply

    def _answer(self, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self._stop()
            raise WorkerError(f"--python-b {self.python}: no answer to {what} within "
                              f"{self.timeout_s:g} s (--worker-timeout); the worker was "
                              f"stopped") from None
        if line is None:
            status = self._stop()
            self._err_thread.join(timeout=5.0)      # its last words, before they are named
            last = self._stderr[-1] if self._stderr else "nothing on stderr"
            raise WorkerError(f"--python-b {self.python}: the worker ended (exit status "
                              f"{status}) before answering {what}: {last}")
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self._stop()
            raise WorkerError(f"--python-b {self.python}: its answer to {what} is not a JSON "
                              f"object of the worker protocol: {line.strip()[:80]!r}")
        return reply

    def _stop(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


# -- the worker's side ---------------------------------------------------------------------------
def _send(out, msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg, default=str) + "\n")
    out.flush()


def _open(req: dict[str, Any]):
    from edge.latency.session import LatencySession, config_with_overrides

    cfg = config_with_overrides(req.get("config"), **(req.get("overrides") or {}))
    slow = {k: (float(v[0]), int(v[1])) for k, v in (req.get("slow") or {}).items()}
    return LatencySession(cfg, backend=req.get("backend"), runtime=req.get("runtime"),
                          slow=slow, label=req.get("label") or "B").__enter__()


def serve(inp, out) -> int:
    """Answer requests from ``inp`` on ``out`` until ``close`` or the end of ``inp``."""
    from edge import __version__

    _send(out, {"protocol": PROTOCOL, "hsi_edge": __version__})
    session, folder = None, tempfile.gettempdir()
    try:
        for line in inp:
            try:
                req = json.loads(line)
                op = req.get("op")
                if op == "close":
                    _send(out, {"ok": True})
                    return 0
                if op == "open":
                    if session is not None:
                        session.close()
                    session = _open(req)
                    folder = req.get("dir") or folder
                    _send(out, {"ok": True, "info": session.info,
                                "fingerprint": session.fingerprint(), "fps": session.fps})
                    continue
                if op == "round":
                    if session is None:
                        raise ValueError("round before open")
                    rec = session.run_round(req["frames"], warmup=req.get("warmup", 0),
                                            index=req.get("index", 0), arm=req.get("arm", ""))
                    path = Path(folder) / f"round_{req.get('index', 0)}.npz"
                    rec.save(path)
                    _send(out, {"ok": True, "records": str(path)})
                    continue
                raise ValueError(f"unknown op {op!r}")
            except Exception as exc:  # noqa: BLE001 - every failure is one answer line
                _send(out, {"ok": False, "type": type(exc).__name__,
                            "error": " ".join(str(exc).split()) or type(exc).__name__})
        return 0
    finally:
        if session is not None:
            session.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="worker %(levelname)s %(name)s: %(message)s")
    out = sys.stdout
    sys.stdout = sys.stderr       # a stray print must not corrupt the protocol
    return serve(sys.stdin, out)


if __name__ == "__main__":
    sys.exit(main())
