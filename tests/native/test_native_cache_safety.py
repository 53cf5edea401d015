"""The native build cache is loaded as code: who may write it, who built what, and builds
that run at once (issue 15, items 1 and 2).

Everything here is real: folders and files with real modes and owners (the tests run as
root, so ``os.chown`` gives a file to another uid), a planted shared library compiled with the
host's compiler whose constructor leaves a marker file when it is mapped, and two real
processes building into one folder.  "Compilers" that copy the session's library (shell
scripts named by ``$CXX``) keep the builds fast; the library they produce is the real one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.backends.native_build import build_key, find_compiler, library_path, load_library
from edge.errors import BackendUnavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_loads():
    load_library.cache_clear()
    yield
    load_library.cache_clear()


@pytest.fixture
def config_home(monkeypatch, tmp_path):
    """A private ``$XDG_CONFIG_HOME`` so the per-user key of these tests is their own."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def _copy_compiler(path: Path, library: Path, count: Path, wait_for: int = 1) -> Path:
    """A "compiler" that copies ``library`` to its ``-o`` output, logs each build in ``count``
    and waits (at most 3 s) until ``wait_for`` builds have started: without a build lock two
    processes then both build; with it the second never gets here."""
    path.write_text(f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "copycc 1.0 (tests/native)"; exit 0; fi
out=""
while [ $# -gt 0 ]; do
    if [ "$1" = "-o" ]; then out="$2"; fi
    shift
done
echo $$ >> "{count}"
i=0
while [ $i -lt 30 ] && [ "$(wc -l < "{count}")" -lt {wait_for} ]; do sleep 0.1; i=$((i+1)); done
cp "{library}" "$out"
""")
    path.chmod(0o755)
    return path


def _session_library(native) -> Path:
    (lib,) = [p for p in native.cache_dir.iterdir() if p.suffix == ".so"]
    return lib


def _planted_library(tmp_path: Path, marker: Path) -> Path:
    """A shared library whose constructor writes ``marker`` the moment it is mapped."""
    src = tmp_path / "planted.cpp"
    src.write_text('#include <cstdio>\n'
                   '__attribute__((constructor)) static void planted() {\n'
                   f'    FILE *f = std::fopen("{marker}", "w"); if (f) std::fclose(f);\n'
                   '}\n'
                   'extern "C" long long hsi_cpu_params_size() { return 1; }\n')
    out = tmp_path / "planted.so"
    subprocess.run([find_compiler(), "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out


def test_planted_library_with_matching_checksum_is_rebuilt_not_loaded(
        native, config_home, monkeypatch, tmp_path, caplog):
    marker = tmp_path / "planted-code-ran"
    planted = _planted_library(tmp_path, marker)          # with the real compiler
    count = tmp_path / "builds.log"
    cxx = _copy_compiler(tmp_path / "copycc", _session_library(native), count)
    monkeypatch.setenv("CXX", str(cxx))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    lib = library_path(str(cxx), True, cache)
    # The attacker places a library at the predictable path with every checksum they can
    # compute: the old .sha256 file and a build record (all but its signature).  Not loaded
    # into this process before: dlopen would hand back an already mapped library by name.
    shutil.copyfile(planted, lib)
    digest = hashlib.sha256(planted.read_bytes()).hexdigest()
    lib.with_name(lib.name + ".sha256").write_text(digest + "\n")
    lib.with_name(lib.name + ".record").write_text(json.dumps(
        {"format": "hsi-edge-native-build/1", "build_key": build_key(str(cxx), True),
         "sha256": digest, "hmac": "0" * 64}))
    load_library.cache_clear()
    with caplog.at_level(logging.WARNING, logger="edge.backends.native_build"):
        got, _ = load_library(cache)
    assert not marker.exists(), "the planted library was loaded (its constructor ran)"
    assert got.hsi_cpu_params_size() > 1
    assert len(count.read_text().splitlines()) == 1, "the planted library was not rebuilt"
    assert lib.read_bytes() == _session_library(native).read_bytes()
    assert any("was not built by this user" in r.getMessage() and "rebuilding" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_world_writable_cache_folder_is_refused_in_one_line(native, config_home, tmp_path):
    cache = tmp_path / "shared"
    shutil.copytree(native.cache_dir, cache)
    cache.chmod(0o777)
    with pytest.raises(BackendUnavailable) as info:
        load_library(cache)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"build cache {cache} is writable by group and others (mode 0777, owner uid 0" in msg
    assert f"chmod go-w {cache}" in msg and "HSI_EDGE_NATIVE_CACHE" in msg
    cache.chmod(0o757)                                    # others only
    with pytest.raises(BackendUnavailable, match=r"is writable by others \(mode 0757"):
        load_library(cache)


def test_cache_folder_of_another_user_is_refused(native, config_home, tmp_path):
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o700)
    os.chown(cache, 4242, -1)
    with pytest.raises(BackendUnavailable,
                       match=rf"build cache {cache} is owned by uid 4242.*not by you \(uid 0"):
        load_library(cache)
    assert list(cache.iterdir()) == []                    # nothing built, nothing loaded


def test_library_owned_by_another_user_is_rebuilt(native, config_home, monkeypatch, tmp_path,
                                                  caplog):
    count = tmp_path / "builds.log"
    cxx = _copy_compiler(tmp_path / "copycc", _session_library(native), count)
    monkeypatch.setenv("CXX", str(cxx))
    cache = tmp_path / "cache"
    load_library(cache)
    lib = library_path(str(cxx), True, cache)
    os.chown(lib, 4242, -1)
    load_library.cache_clear()
    with caplog.at_level(logging.WARNING, logger="edge.backends.native_build"):
        load_library(cache)
    assert lib.stat().st_uid == os.geteuid()
    assert len(count.read_text().splitlines()) == 2
    assert any("is owned by uid 4242" in r.getMessage() for r in caplog.records)


def test_new_cache_and_key_are_private(native, config_home, monkeypatch, tmp_path):
    count = tmp_path / "builds.log"
    cxx = _copy_compiler(tmp_path / "copycc", _session_library(native), count)
    monkeypatch.setenv("CXX", str(cxx))
    old = os.umask(0)                                     # the modes must not rely on umask
    try:
        cache = tmp_path / "new" / "cache"
        load_library(cache)
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    lib = library_path(str(cxx), True, cache)
    assert stat.S_IMODE(lib.stat().st_mode) & 0o022 == 0
    key = config_home / "hsi-edge" / "cache.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    # a key others can read is refused, not used
    key.chmod(0o644)
    load_library.cache_clear()
    with pytest.raises(BackendUnavailable, match=r"cache key .*cache\.key: must be a file of "
                                                 r"yours readable by you only.*mode 0644"):
        load_library(cache)


_BUILDER = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
from edge.backends.native_build import load_library
lib, openmp = load_library(Path(sys.argv[1]))
print("params", lib.hsi_cpu_params_size())
"""


def test_two_processes_building_at_once_build_once(native, config_home, monkeypatch, tmp_path):
    count = tmp_path / "builds.log"
    count.touch()
    cxx = _copy_compiler(tmp_path / "copycc", _session_library(native), count, wait_for=2)
    cache = tmp_path / "cache"
    env = {**os.environ, "CXX": str(cxx), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(cache)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "params" in out
        assert "rebuilding" not in err and "deleting" not in err, err
    assert len(count.read_text().splitlines()) == 1, "both processes compiled"
    lib = library_path(str(cxx), True, cache)
    assert sorted(os.listdir(cache)) == [".lock", lib.name, lib.name + ".record"]
