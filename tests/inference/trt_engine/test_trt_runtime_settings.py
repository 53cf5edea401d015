"""Settings that reach a TensorRT build from the runtime and the CLI: progress bars, precision
per TensorRT major version, the timing-cache merge, the cache key's GPU properties.

CPU tests: ``tensorrt`` is fake_trt and ``pycuda.driver`` is fake_pycuda.make_fake_cuda
(device identity and the primary context's push/pop only).  They test the logic around the TensorRT API; nothing
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
from fake_pycuda import make_fake_cuda
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


# ---- precision per TensorRT major version (item 10) ----------------------------------------
def _card_with_fp16(tmp_path):
    import yaml

    from edge.inference.fp16 import convert_fp16
    card_path = write_pixel_classifier(tmp_path / "m16", wavelengths=[500, 600, 700],
                                       maps=("sto2",))[0]
    convert_fp16(card_path.parent / "model.onnx", card_path.parent / "model.fp16.onnx")
    data = yaml.safe_load(card_path.read_text())
    data["onnx_fp16"] = "model.fp16.onnx"
    card_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_model_card(card_path)


def test_resolve_precision_per_major_and_card(card, tmp_path, caplog):
    import logging
    c16 = _card_with_fp16(tmp_path)
    # 10.x weak: the FP16 flag on the fp32 ONNX, whatever the card declares
    assert tb.resolve_precision(10, "auto", "weak", c16) == ("fp16", c16.onnx_path)
    assert tb.resolve_precision(10, "fp32", "weak", c16) == ("fp32", c16.onnx_path)
    # strong (11.x): fp16 needs an fp16 graph -- the card's onnx_fp16
    assert tb.resolve_precision(11, "auto", "strong", c16) == ("fp16", c16.onnx_fp16_path)
    assert tb.resolve_precision(11, "fp16", "strong", c16) == ("fp16", c16.onnx_fp16_path)
    assert tb.resolve_precision(11, "fp32", "strong", c16) == ("fp32", c16.onnx_path)
    # no fp16 model declared: auto is fp32 on 11.x, with a warning saying how to get fp16
    with caplog.at_level(logging.WARNING):
        assert tb.resolve_precision(11, "auto", "strong", card) == ("fp32", card.onnx_path)
    assert "model.onnx is an fp32 graph (the card declares no onnx_fp16)" in caplog.text
    with pytest.raises(tb.ConfigError, match=r"precision: expected one of auto, fp16, fp32, "
                                             r"got 'int8'"):
        tb.resolve_precision(10, "int8", "weak", card)


def test_default_runtime_on_trt11_builds_fp32_from_an_fp32_card(fake_gpu, card, tmp_path):
    """TensorRT 11 has no FP16 flag: the default used to fail at load for every fp32 card."""
    trt = fake_gpu(11, layer_dtypes=("FLOAT",))
    with tr.TensorRTRuntime(card, cache_dir=tmp_path / "c", progress=False) as rt:
        assert (rt.key.precision, rt.key.typing) == ("fp32", "strong")
    assert trt.last_config.flags == set()            # fp32: TF32 off, no FP16 flag on 11.x
    assert ("parse", str(card.onnx_path)) in trt.events


def test_trt11_fp16_builds_the_card_declared_fp16_onnx(fake_gpu, tmp_path):
    c16 = _card_with_fp16(tmp_path)
    trt = fake_gpu(11, layer_dtypes=("HALF", "FLOAT"))
    with tr.TensorRTRuntime(c16, cache_dir=tmp_path / "c", progress=False) as rt:
        assert (rt.key.precision, rt.key.typing) == ("fp16", "strong")
    assert ("parse", str(c16.onnx_fp16_path)) in trt.events


def test_trt11_fp16_without_an_fp16_model_says_how_to_make_one(fake_gpu, card, tmp_path):
    fake_gpu(11, layer_dtypes=("FLOAT",))
    rt = tr.TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp16", progress=False)
    with pytest.raises(tb.EngineError, match=r"graph, which is fp32, but precision='fp16'.*"
                                             r"convert-fp16"):
        rt.load()


def test_card_fp16_model_must_exist(tmp_path):
    from edge.errors import EngineError
    card_path = write_pixel_classifier(tmp_path / "m", maps=("sto2",),
                                       card_overrides={"onnx_fp16": "missing.onnx"})[0]
    with pytest.raises(EngineError, match=r"onnx_fp16: model file .*missing\.onnx not found"):
        load_model_card(card_path)


# ---- the cache key tells Orin modules apart (item 14) ---------------------------------------
@pytest.mark.parametrize("module,memory,clock", [
    ("Orin NX 16GB", 16 << 30, 918_000), ("Orin NX 8GB", 8 << 30, 765_000),
    ("Orin Nano 8GB", 8 << 30, 625_000)])
def test_key_holds_total_memory_and_clock(monkeypatch, card, tmp_path, module, memory, clock):
    cuda = make_fake_cuda("Orin", (8, 7), sm_count=8, total_memory=memory, clock_khz=clock)
    monkeypatch.setattr(tb, "_import_cuda", lambda: cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(10))
    key, _, _ = tb.build_engine(card, cache=EngineCache(tmp_path / "c"), progress=False)
    assert dict(key.build)["gpu_total_memory_mib"] == memory >> 20
    assert dict(key.build)["gpu_clock_khz"] == clock


def test_orin_modules_get_their_own_engines_and_timing_caches(monkeypatch, card, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(10))
    cache, keys = EngineCache(tmp_path / "c"), []
    for memory, clock in ((16 << 30, 918_000), (8 << 30, 765_000), (8 << 30, 625_000)):
        cuda = make_fake_cuda("Orin", (8, 7), sm_count=8, total_memory=memory, clock_khz=clock)
        monkeypatch.setattr(tb, "_import_cuda", lambda cuda=cuda: cuda)
        key, _, built = tb.build_engine(card, cache=cache, progress=False)
        assert built                      # nothing reused from another module
        keys.append(key)
    assert len({cache.path_for(k) for k in keys}) == 3
    assert len({cache.timing_cache_path(k) for k in keys}) == 3


# ---- the primary context is shared, never released per build (item 8) -----------------------
def test_builds_push_and_pop_the_one_retained_primary_context(fake_gpu, card, tmp_path):
    fake_gpu(10)
    cuda = fake_gpu.cuda
    for force in (False, True):
        tb.build_engine(card, cache=EngineCache(tmp_path / "c"), progress=False, force=force)
    assert cuda.events.count("retain") == 1 and "detach" not in cuda.events
    assert cuda.events.count("push") == cuda.events.count("pop") == 2


# ---- hsi-edge run --runtime auto falls back to ONNX Runtime (item 10) -------------------------
def test_auto_falls_back_to_onnxruntime_when_the_engine_cannot_be_built(fake_gpu, card,
                                                                        tmp_path, monkeypatch,
                                                                        caplog):
    import logging

    from edge.pipeline.runtime_choice import load_runtime
    monkeypatch.setenv("HSI_EDGE_ENGINE_CACHE", str(tmp_path / "c"))
    fake_gpu(10, parse_errors=("No importer registered for op: FancyOp",))
    with caplog.at_level(logging.WARNING):
        rt = load_runtime("auto", card, gpu_chain=True, progress=False)
    try:
        assert rt.name == "onnxruntime"
        assert (f"runtime auto: TensorRT cannot run model 'test-pixel-classifier' here "
                f"({card.onnx_path}: TensorRT cannot parse the ONNX model: No importer "
                f"registered for op: FancyOp); falling back to onnxruntime") in caplog.text
    finally:
        rt.close()
    # named explicitly, the failure is the answer
    with pytest.raises(tb.EngineError, match=r"cannot parse the ONNX model: No importer"):
        load_runtime("tensorrt", card, gpu_chain=True, progress=False)


def test_auto_keeps_tensorrt_when_it_loads(fake_gpu, card, tmp_path, monkeypatch):
    from edge.pipeline.runtime_choice import load_runtime
    monkeypatch.setenv("HSI_EDGE_ENGINE_CACHE", str(tmp_path / "c"))
    fake_gpu(11, layer_dtypes=("FLOAT",))
    rt = load_runtime("auto", card, gpu_chain=True, precision="auto", progress=False)
    try:
        assert rt.name == "tensorrt" and rt.key.precision == "fp32"
    finally:
        rt.close()
    assert load_runtime("auto", card, gpu_chain=False).name == "onnxruntime"


# ---- a cached engine this TensorRT cannot deserialize is rebuilt once (item 13) ---------------
def test_a_cached_engine_that_does_not_deserialize_is_rebuilt_once(fake_gpu, card, tmp_path,
                                                                   caplog):
    import logging
    trt = fake_gpu(10)
    cache = EngineCache(tmp_path / "c")
    key, _, _ = tb.build_engine(card, cache=cache, progress=False)
    cache.store(key, b"STALE")     # a valid cache entry this TensorRT cannot deserialize
    with caplog.at_level(logging.WARNING):
        with tr.TensorRTRuntime(card, cache_dir=tmp_path / "c", progress=False) as rt:
            assert [t.name for t in rt.outputs()] == ["logits"]
    assert "could not deserialize the cached engine" in caplog.text
    assert cache.load(key) == b"PLAN"                 # replaced: later loads just work
    assert len([e for e in trt.events if e[0] == "parse"]) == 2   # first build + one rebuild


def test_an_engine_that_never_deserializes_fails_after_one_rebuild(fake_gpu, card, tmp_path):
    trt = fake_gpu(10)
    cache = EngineCache(tmp_path / "c")
    tb.build_engine(card, cache=cache, progress=False)
    trt.Runtime.deserialize_cuda_engine = lambda self, plan: None   # e.g. a plugin missing
    with pytest.raises(tb.EngineError, match=r"could not deserialize .*even as just built.*"
                                             r"engine clear"):
        tr.TensorRTRuntime(card, cache_dir=tmp_path / "c", progress=False).load()
    assert len([e for e in trt.events if e[0] == "parse"]) == 2   # rebuilt once, not looped
    assert fake_gpu.cuda.events.count("push") == fake_gpu.cuda.events.count("pop")


def test_runtime_close_pops_and_keeps_the_shared_primary_context(fake_gpu, card, tmp_path):
    fake_gpu(10)
    cuda = fake_gpu.cuda
    for _ in range(2):
        with tr.TensorRTRuntime(card, cache_dir=tmp_path / "c", progress=False):
            pass
    assert "detach" not in cuda.events and cuda.events.count("retain") == 1
    assert cuda.events.count("push") == cuda.events.count("pop")
