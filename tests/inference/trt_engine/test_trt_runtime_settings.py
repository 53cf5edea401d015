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


# ---- timing cache merged under a lock (item 15) --------------------------------------------
class _Store:
    """In-memory TimingStore whose disk content changes while the build runs (another
    process saved its timings meanwhile); records the order of lock/load/save."""

    def __init__(self, on_disk: bytes):
        self.on_disk, self.log = on_disk, []

    def load(self):
        self.log.append("load")
        return self.on_disk

    def save(self, blob):
        self.log.append("save")
        self.on_disk = blob

    def locked(self):
        import contextlib

        @contextlib.contextmanager
        def cm():
            self.log.append("lock")
            yield
            self.log.append("unlock")
        return cm()


@pytest.mark.parametrize("disk,saved,warned", [
    (b"", b"TIMING:old+new", None),
    (b"TIMING:other", b"TIMING:old+new&TIMING:other", None),      # both builds' timings kept
    (b"corrupt", b"TIMING:old+new", "unreadable"),
    (b"foreign:x", b"TIMING:old+new", "another device"),
])
def test_timing_cache_is_combined_with_the_one_on_disk_under_the_lock(tmp_path, caplog, disk,
                                                                      saved, warned):
    import logging
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    shape = (1, 4, 8, 12)
    store = _Store(disk)
    with caplog.at_level(logging.WARNING):
        _, timing = tb.build_serialized_engine(
            make_fake_trt(10), onnx, shapes=(("input", shape, shape, shape),), precision="fp16",
            typing="weak", workspace_bytes=64 << 20, timing_cache=b"old", progress=False,
            timing_store=store)
    assert timing == saved == store.on_disk
    assert store.log == ["lock", "load", "save", "unlock"]
    if warned:
        assert warned in caplog.text


def test_timing_store_saves_beside_the_engines_with_a_lock_file(fake_gpu, card, tmp_path):
    trt = fake_gpu(10)
    cache = EngineCache(tmp_path / "c")
    key, _, built = tb.build_engine(card, cache=cache, progress=False)
    assert built
    assert cache.load_timing_cache(key) == b"TIMING:+new"
    assert cache.timing_cache_path(key).with_name(
        cache.timing_cache_path(key).name + ".lock").is_file()
    tb.build_engine(card, cache=cache, progress=False, force=True)   # merges with its own
    assert cache.load_timing_cache(key) == b"TIMING:+new+new&TIMING:+new"
    assert trt.last_config.timing.blob == b"TIMING:+new"
