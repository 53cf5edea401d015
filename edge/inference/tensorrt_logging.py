"""The TensorRT logger and build progress monitor of hsi-edge (used by
:mod:`edge.inference.tensorrt_build` and :mod:`edge.inference.tensorrt_runtime`).

Both are Python subclasses of TensorRT interfaces (``trt.ILogger``, ``trt.IProgressMonitor``)
created from the ``tensorrt`` module passed in, so importing this module needs no TensorRT.
Every TensorRT name used here is checked against ``tensorrt-stubs`` in
``tests/inference/trt_engine/test_trt_api_names.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # names for annotations only; the module is passed in at run time
    import tensorrt as trt  # noqa: F401

__all__ = ["_logger", "_make_logger", "_make_progress", "progress_wanted"]

log = logging.getLogger("edge.inference.tensorrt_build")   # the name users already filter on

_LOGGERS: dict[int, Any] = {}


def _logger(trt):
    """The one process-wide logger for this ``tensorrt`` module, created on first use.

    TensorRT keeps a single logger pointer while any Builder/Runtime exists and ignores a
    different logger passed later (warning "The logger passed into createInferRuntime differs
    from one already provided", NVIDIA/TensorRT#1475); a fresh Python logger per call would be
    ignored and could be garbage-collected while TensorRT still calls the first one.
    """
    lg = _LOGGERS.get(id(trt))
    if lg is None:
        lg = _LOGGERS[id(trt)] = _make_logger(trt)
    return lg


def _make_logger(trt):
    """A ``trt.ILogger`` that forwards TensorRT messages to :mod:`logging`."""
    sev = trt.ILogger.Severity
    levels = {sev.INTERNAL_ERROR: logging.CRITICAL, sev.ERROR: logging.ERROR,
              sev.WARNING: logging.WARNING, sev.INFO: logging.DEBUG, sev.VERBOSE: logging.DEBUG}

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)  # pybind11 trampolines need the explicit base init

        def log(self, severity, msg):
            try:  # called from C++ noexcept code: an escaping exception would abort
                log.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)
            except Exception:  # pragma: no cover - logging itself failed
                pass

    return _Logger()


def progress_wanted(progress: bool, stream=None) -> bool:
    """Whether a build should draw progress bars: asked for, and stderr is a terminal that is
    not a systemd service's (``INVOCATION_ID``/``JOURNAL_STREAM`` are set for services; their
    stderr goes to the journal, where tqdm's redraws are noise)."""
    stream = sys.stderr if stream is None else stream
    if not progress or os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def _make_progress(trt, **tqdm_kw):
    """A ``trt.IProgressMonitor`` that shows build phases as tqdm bars on stderr.

    TensorRT may call it from several builder threads ("must be thread-safe"), from noexcept
    C++ (a Python exception escaping would abort the process, so callbacks swallow them), and
    it must outlive the build (the caller holds the reference and calls ``close()`` after).
    ``step`` is 0-based (``[0, num_steps)``), so ``step + 1`` steps are done.
    """
    import threading

    from tqdm import tqdm

    class _Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)  # pybind11 trampolines need the base init
            self.bars: dict[str, Any] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                with self._lock:
                    depth = len(self.bars)  # nested phases stack below their parents
                    self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name,
                                                 position=depth, leave=depth == 0,
                                                 unit="step", **tqdm_kw)
            except Exception:  # pragma: no cover - a display problem must not abort a build
                log.debug("progress: phase_start failed", exc_info=True)

        def step_complete(self, phase_name, step):
            try:
                with self._lock:
                    bar = self.bars.get(phase_name)
                    if bar is not None:
                        bar.update(max(0, step + 1 - bar.n))
            except Exception:  # pragma: no cover
                log.debug("progress: step_complete failed", exc_info=True)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            try:
                with self._lock:
                    bar = self.bars.pop(phase_name, None)
                    if bar is not None:
                        bar.close()
            except Exception:  # pragma: no cover
                log.debug("progress: phase_finish failed", exc_info=True)

        def close(self):
            """Close bars of phases TensorRT never finished (a failed build)."""
            with self._lock:
                for bar in self.bars.values():
                    bar.close()
                self.bars.clear()

    return _Progress()
