"""The engine cache is loaded by TensorRT: who may write it and who built what (issue 15,
item 1).  Real folders with real modes and owners (tests run as root, so ``os.chown`` hands
a file to another uid); a planted engine is a file with a self-consistent header."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.errors import EngineError
from edge.inference.engine_cache import MAGIC, EngineCache, EngineKey, _LEN

ROOT = Path(__file__).resolve().parents[3]
SHAPE = (1, 7, 8, 12)


def make_key() -> EngineKey:
    return EngineKey(model="demo", onnx_sha256="a" * 64, trt_version="10.3.0.30",
                     gpu_name="Orin", compute_capability="8.7", precision="fp16",
                     typing="weak", shapes=(("input", SHAPE, SHAPE, SHAPE),))


@pytest.fixture(autouse=True)
def config_home(monkeypatch, tmp_path):
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def _plant(path: Path, key: EngineKey, payload: bytes) -> None:
    """An engine file written by someone else: valid magic, key, sizes and sha256."""
    header = {"format": "hsi-edge-engine/1", "model": key.model, "key": key.validity(),
              "key_digest": key.digest(), "payload_bytes": len(payload),
              "payload_sha256": hashlib.sha256(payload).hexdigest(), "created_utc": "x",
              "build_seconds": 1.0}
    blob = json.dumps(header).encode()
    path.write_bytes(MAGIC + _LEN.pack(len(blob)) + blob + payload)


def test_planted_engine_with_consistent_header_is_rebuilt(tmp_path, caplog):
    cache, key = EngineCache(tmp_path / "engines"), make_key()
    (tmp_path / "engines").mkdir(mode=0o700)
    _plant(cache.path_for(key), key, b"planted plan")
    assert cache.load(key) is None
    assert "not signed by this user" in caplog.text
    payload, built = cache.get_or_build(key, lambda: b"genuine plan")
    assert (payload, built) == (b"genuine plan", True)
    assert cache.load(key) == b"genuine plan"                 # a signed engine is a hit
    (entry,) = cache.entries()
    assert entry.problem is None


def test_world_writable_engine_cache_is_refused(tmp_path):
    root = tmp_path / "engines"
    cache, key = EngineCache(root), make_key()
    cache.get_or_build(key, lambda: b"plan")
    root.chmod(0o777)
    with pytest.raises(EngineError) as info:
        cache.load(key)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"engine cache {root} is writable by group and others (mode 0777" in msg
    assert f"chmod go-w {root}" in msg and "HSI_EDGE_ENGINE_CACHE" in msg
    with pytest.raises(EngineError, match="writable by group and others"):
        cache.get_or_build(key, lambda: b"plan")


def test_engine_cache_of_another_user_is_refused(tmp_path):
    root = tmp_path / "engines"
    root.mkdir(mode=0o700)
    os.chown(root, 4242, -1)
    with pytest.raises(EngineError, match=rf"engine cache {root} is owned by uid 4242"):
        EngineCache(root).get_or_build(make_key(), lambda: b"plan")


def test_engine_file_of_another_user_is_rebuilt(tmp_path, caplog):
    cache, key = EngineCache(tmp_path / "engines"), make_key()
    cache.get_or_build(key, lambda: b"plan")
    os.chown(cache.path_for(key), 4242, -1)
    assert cache.load(key) is None
    assert "is owned by uid 4242" in caplog.text


def test_new_engine_cache_is_private(tmp_path):
    old = os.umask(0)
    try:
        root = tmp_path / "a" / "engines"
        EngineCache(root).get_or_build(make_key(), lambda: b"plan")
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


_BUILDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_engine_cache_safety import make_key
from edge.inference.engine_cache import EngineCache
count = Path(sys.argv[3])

def build():
    with open(count, "a") as f:
        f.write("build\\n")
    for _ in range(30):                  # without a lock the other process builds meanwhile
        if len(count.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    return b"plan"

payload, built = EngineCache(Path(sys.argv[1])).get_or_build(make_key(), build)
print(payload.decode(), built)
"""


def test_two_processes_build_an_engine_once(tmp_path):
    count = tmp_path / "builds.log"
    count.touch()
    root = tmp_path / "engines"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(root),
                               str(Path(__file__).parent), str(count)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert sorted(o.split()[1] for o, _ in outs) == ["False", "True"]
    assert count.read_text().splitlines() == ["build"]
