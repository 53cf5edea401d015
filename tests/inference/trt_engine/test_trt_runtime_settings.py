"""Settings that reach a TensorRT build from the runtime and the CLI: progress bars, precision
per TensorRT major version, the timing-cache merge, the cache key's GPU properties.

CPU tests: ``tensorrt`` is fake_trt and ``pycuda.driver`` is fake_cuda (device identity and
the primary context's push/pop only).  They test the logic around the TensorRT API; nothing
here builds or runs an engine (tests/tensorrt_real does, where TensorRT is installed).
"""

from __future__ import annotations

import io
import sys

import pytest

import edge.inference.tensorrt_build as tb
import edge.inference.tensorrt_runtime as tr
from edge.inference import load_model_card
from edge.inference.engine_cache import EngineCache
from edge.inference.tensorrt_logging import progress_wanted
from fake_cuda import make_fake_cuda
from fake_trt import make_fake_trt
from onnx_models import write_pixel_classifier


@pytest.fixture
def fake_gpu(monkeypatch):
    """Install a fake tensorrt (major chosen by the caller) and a fake pycuda.driver."""
    cuda = make_fake_cuda()
    monkeypatch.setattr(tb, "_import_cuda", lambda: cuda)
    monkeypatch.setattr(tr, "_import_cuda", lambda: cuda)

    def install(major=10, **kw):
        trt = make_fake_trt(major, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    install.cuda = cuda
    return install


@pytest.fixture
def card(tmp_path):
    return load_model_card(write_pixel_classifier(tmp_path / "m", wavelengths=[500, 600, 700],
                                                  maps=("sto2",))[0])


class _Tty(io.StringIO):
    def isatty(self):
        return True


# ---- progress bars (item 16) -------------------------------------------------------------
def test_progress_only_when_asked_on_a_terminal_outside_systemd(monkeypatch):
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert progress_wanted(True, _Tty()) is True
    assert progress_wanted(False, _Tty()) is False
    assert progress_wanted(True, io.StringIO()) is False      # piped / redirected
    monkeypatch.setenv("INVOCATION_ID", "5a1c0ffee")           # a systemd service
    assert progress_wanted(True, _Tty()) is False


@pytest.mark.parametrize("progress,tty,bars", [(True, True, True), (False, True, False),
                                               (True, False, False)])
def test_runtime_build_passes_the_progress_setting(fake_gpu, card, tmp_path, monkeypatch,
                                                   progress, tty, bars):
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(sys, "stderr", _Tty() if tty else io.StringIO())
    trt = fake_gpu(10)
    rt = tr.TensorRTRuntime(card, cache_dir=tmp_path / "c", progress=progress)
    rt.load()
    try:
        assert (trt.last_config.progress_monitor is not None) is bars
    finally:
        rt.close()
