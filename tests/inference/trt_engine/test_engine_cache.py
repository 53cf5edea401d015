"""Engine cache: keying, atomic writes, rebuild rules, verdicts — without TensorRT.

The "builder" here is a plain function returning bytes: the seam ``EngineCache.get_or_build``
offers for any builder, not a stand-in for TensorRT's API.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.errors import ConfigError, EngineError
from edge.inference.engine_cache import (MAGIC, EngineCache, EngineKey, default_cache_dir,
                                         write_atomic)

SHAPE = (1, 7, 8, 12)


def make_key(**over) -> EngineKey:
    base = dict(model="demo", onnx_sha256="a" * 64, trt_version="10.3.0.30", gpu_name="Orin",
                compute_capability="8.7", precision="fp16", typing="weak",
                shapes=(("input", SHAPE, SHAPE, SHAPE),))
    base.update(over)
    return EngineKey(**base)


class CountingBuilder:
    """Returns a distinct payload per call and counts the calls."""

    def __init__(self, size: int = 4096):
        self.calls, self.size = 0, size

    def __call__(self) -> bytes:
        self.calls += 1
        return bytes([self.calls % 256]) * self.size


@pytest.mark.parametrize("field,value", [
    ("onnx_sha256", "b" * 64), ("trt_version", "10.3.0.31"), ("gpu_name", "NVIDIA H100"),
    ("compute_capability", "9.0"), ("precision", "fp32"), ("typing", "strong"),
    ("shapes", (("input", (1, 7, 8, 16), (1, 7, 8, 16), (1, 7, 8, 16)),)),
    ("build", {"optimization_level": 4}), ("build", {"hardware_compatibility": "ampere+"}),
    ("build", {"gpu_sm_count": 8}), ("build", {"tf32": False}),
])
def test_every_key_field_changes_the_digest_and_file(tmp_path, field, value):
    a, b = make_key(), make_key(**{field: value})
    cache = EngineCache(tmp_path)
    assert a.digest() != b.digest()
    assert cache.path_for(a) != cache.path_for(b)


def test_model_name_is_not_part_of_validity_and_digest_is_stable():
    a, b = make_key(), make_key(model="renamed")
    assert a.digest() == b.digest()
    # Lists (as read back from JSON) and tuples give the same key.
    c = make_key(shapes=[["input", list(SHAPE), list(SHAPE), list(SHAPE)]])
    assert c == a and c.digest() == a.digest()
    assert a.digest() == hashlib.sha256(json.dumps(
        a.validity(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_timing_cache_is_keyed_on_trt_and_gpu_only(tmp_path):
    cache = EngineCache(tmp_path)
    a = make_key()
    assert cache.timing_cache_path(a) == cache.timing_cache_path(
        make_key(onnx_sha256="c" * 64, precision="fp32"))
    assert cache.timing_cache_path(a) != cache.timing_cache_path(make_key(gpu_name="Thor"))
    assert cache.load_timing_cache(a) == b""
    cache.save_timing_cache(a, b"tactics")
    assert cache.load_timing_cache(a) == b"tactics"


@pytest.mark.parametrize("over,match", [
    ({"precision": "int8"}, r"precision: expected one of fp32, fp16, got 'int8'"),
    ({"typing": "mixed"}, r"typing: expected one of weak, strong, got 'mixed'"),
    ({"onnx_sha256": "XYZ"}, r"onnx_sha256: expected 64 lowercase hex digits, got 'XYZ'"),
])
def test_bad_keys_are_rejected(over, match):
    with pytest.raises(ConfigError, match=match):
        make_key(**over)


def test_first_call_builds_second_call_hits(tmp_path, caplog):
    cache, key, build = EngineCache(tmp_path / "c"), make_key(), CountingBuilder()
    with caplog.at_level(logging.INFO, logger="edge.inference.engine_cache"):
        payload, built = cache.get_or_build(key, build)
        assert built and build.calls == 1 and payload == b"\x01" * 4096
        payload2, built2 = cache.get_or_build(key, build)
    assert not built2 and build.calls == 1 and payload2 == payload
    text = caplog.text
    assert "a first build can take minutes" in text and re.search(r"built engine .* in \d", text)
    header = cache.entries()[0].header
    assert header["payload_bytes"] == 4096 and header["key"] == key.validity()
    assert header["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert isinstance(header["build_seconds"], float)


def test_foreign_engine_is_rebuilt_not_loaded(tmp_path, caplog):
    """An engine from another TensorRT version copied under this key's name is rejected."""
    cache = EngineCache(tmp_path)
    here, other = make_key(), make_key(trt_version="10.7.0.23")
    cache.store(other, b"engine-from-elsewhere")
    os.replace(cache.path_for(other), cache.path_for(here))
    build = CountingBuilder()
    with caplog.at_level(logging.WARNING):
        payload, built = cache.get_or_build(here, build)
    assert built and build.calls == 1 and payload != b"engine-from-elsewhere"
    assert ("built for a different configuration (trt_version: file '10.7.0.23', here "
            "'10.3.0.30')") in caplog.text
    assert cache.load(here) == payload


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated payload":
        path.write_bytes(data[:-100])
    elif how == "flipped payload byte":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif how == "bad magic":
        path.write_bytes(b"PLAN" + data[4:])
    elif how == "truncated header":
        path.write_bytes(data[:len(MAGIC) + 6])
    elif how == "garbage header":
        path.write_bytes(MAGIC + (5).to_bytes(4, "big") + b"{oops" + b"x" * 50)
    elif how == "empty file":
        path.write_bytes(b"")


@pytest.mark.parametrize("how,reason", [
    ("truncated payload", r"payload is 3996 bytes, header says 4096"),
    ("flipped payload byte", r"payload sha256 does not match"),
    ("bad magic", r"bad magic"),
    ("truncated header", r"truncated header"),
    ("garbage header", r"header is not JSON"),
    ("empty file", r"bad magic"),
])
def test_damaged_engine_is_rebuilt(tmp_path, caplog, how, reason):
    cache, key, build = EngineCache(tmp_path), make_key(), CountingBuilder()
    cache.get_or_build(key, build)
    _corrupt(cache.path_for(key), how)
    (entry,) = cache.entries()
    assert re.search(reason, entry.problem)
    with caplog.at_level(logging.WARNING):
        payload, built = cache.get_or_build(key, build)
    assert built and build.calls == 2 and payload == b"\x02" * 4096
    assert re.search(reason, caplog.text) and "it will be rebuilt" in caplog.text
    assert cache.entries()[0].problem is None


def test_builder_that_returns_nothing_is_an_error(tmp_path):
    cache = EngineCache(tmp_path)
    with pytest.raises(EngineError, match=r"engine build for 'demo' produced no engine "
                                          r"\(got NoneType\)"):
        cache.get_or_build(make_key(), lambda: None)
    with pytest.raises(EngineError, match=r"refusing to cache an empty engine"):
        cache.store(make_key(), b"")
    assert cache.entries() == []


def test_exception_mid_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "x.engine"
    write_atomic(target, [b"old"])

    def chunks():
        yield b"new-partial"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, chunks())
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.engine"]


def test_process_killed_mid_write_leaves_no_partial_engine(tmp_path):
    """A real crash (os._exit inside the write): no engine file, cache rebuilds, clear
    removes the leftover temp file."""
    cache, key = EngineCache(tmp_path), make_key()
    script = textwrap.dedent(f"""
        import os
        from edge.inference.engine_cache import EngineCache, EngineKey, write_atomic
        import edge.inference.engine_cache as ec
        key = EngineKey(**{dataclasses.asdict(key)!r})
        def dying(chunks):
            for i, c in enumerate(chunks):
                yield c
                if i == 2:
                    os._exit(9)   # killed after the header, before the payload
        real = ec.write_atomic
        ec.write_atomic = lambda path, chunks: real(path, dying(chunks))
        EngineCache({str(tmp_path)!r}).store(key, b"P" * 100000)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert not cache.path_for(key).exists()
    leftovers = list(tmp_path.glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size < 100000
    assert cache.entries() == [] and cache.load(key) is None
    payload, built = cache.get_or_build(key, CountingBuilder())
    assert built and cache.load(key) == payload
    removed = cache.clear()
    assert leftovers[0] in removed and not leftovers[0].exists()


def test_parity_verdict_lifecycle(tmp_path):
    cache, key = EngineCache(tmp_path), make_key()
    with pytest.raises(EngineError, match=r"no valid engine for 'demo' .* build it first"):
        cache.record_parity(key, True, {})
    cache.get_or_build(key, CountingBuilder())
    assert not cache.is_verified(key) and cache.entries()[0].verified is None
    cache.record_parity(key, True, {"max_abs_err": 0.001})
    assert cache.is_verified(key) and cache.entries()[0].verified is True
    cache.record_parity(key, False, {"reason": "argmax"})
    assert not cache.is_verified(key) and cache.entries()[0].verified is False
    cache.record_parity(key, True, {})
    cache.store(key, b"rebuilt engine")  # new bytes are unverified again
    assert not cache.is_verified(key)


def test_verdict_for_other_bytes_does_not_count(tmp_path):
    cache, key = EngineCache(tmp_path), make_key()
    cache.store(key, b"first")
    cache.record_parity(key, True, {})
    sidecar = cache.path_for(key).with_name(cache.path_for(key).name + ".parity.json")
    saved = sidecar.read_text()
    cache.store(key, b"second")
    sidecar.write_text(saved)  # a stale verdict copied back in
    assert not cache.is_verified(key)


def test_entries_and_clear_by_model(tmp_path):
    cache = EngineCache(tmp_path)
    a, b = make_key(model="alpha"), make_key(model="beta", precision="fp32")
    cache.store(a, b"A" * 10)
    cache.store(b, b"B" * 20)
    cache.record_parity(a, True, {})
    cache.save_timing_cache(a, b"t")
    assert [(e.model, e.verified, e.problem) for e in cache.entries()] == [
        ("alpha", True, None), ("beta", None, None)]
    removed = cache.clear("alpha")
    assert sorted(p.name for p in removed) == sorted(
        [cache.path_for(a).name, cache.path_for(a).name + ".parity.json"])
    assert [e.model for e in cache.entries()] == ["beta"]
    cache.clear(timing=True)
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HSI_EDGE_ENGINE_CACHE", str(tmp_path / "eng"))
    assert default_cache_dir() == tmp_path / "eng"
    monkeypatch.delenv("HSI_EDGE_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "hsi-edge" / "engines"
    assert EngineCache().root == tmp_path / "xdg" / "hsi-edge" / "engines"


def test_build_settings_are_order_free_and_json_round_trip(tmp_path):
    a = make_key(build={"tf32": True, "gpu_sm_count": 16})
    b = make_key(build=(("gpu_sm_count", 16), ("tf32", True)))
    assert a == b and a.digest() == b.digest()
    cache = EngineCache(tmp_path)
    cache.store(a, b"plan")
    header = cache.entries()[0].header
    assert EngineKey.from_json(a.model, header["key"]) == a
    with pytest.raises(ConfigError, match=r"build: setting 'x' must be str, int or bool, "
                                          r"got \[1\]"):
        make_key(build={"x": [1]})


def test_engine_without_build_settings_in_its_header_is_rebuilt(tmp_path, caplog):
    old, new = make_key(), make_key(build={"gpu_sm_count": 16})
    cache = EngineCache(tmp_path)
    # An engine written before the key had build settings lands under another file name;
    # even forced under the new name its header key differs, so it is not loaded.
    cache.store(old, b"old plan")
    os.replace(cache.path_for(old), cache.path_for(new))
    with caplog.at_level(logging.WARNING):
        assert cache.load(new) is None
    assert "build: file {}, here {'gpu_sm_count': 16}" in caplog.text


def test_timing_cache_scope_includes_gpu_build_properties_only():
    base = make_key(build={"gpu_sm_count": 16, "tf32": True})
    assert base.device_digest() == make_key(build={"gpu_sm_count": 16,
                                                   "tf32": False}).device_digest()
    assert base.device_digest() != make_key(build={"gpu_sm_count": 8}).device_digest()


def test_discard_removes_only_that_key(tmp_path):
    cache = EngineCache(tmp_path)
    fp16, fp32 = make_key(), make_key(precision="fp32")
    cache.store(fp16, b"a")
    cache.store(fp32, b"b")
    cache.record_parity(fp32, True, {})
    cache.record_parity(fp16, True, {})
    removed = cache.discard(fp16)
    assert sorted(p.name for p in removed) == sorted(
        [cache.path_for(fp16).name, cache.path_for(fp16).name + ".parity.json"])
    assert cache.load(fp16) is None and cache.is_verified(fp32)
    assert cache.discard(fp16) == []
