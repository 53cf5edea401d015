"""Building and caching the native library (edge.backends.native_build).

Compiler failures are produced with real executables (shell scripts written into tmp_path
and named by ``$CXX``), not mocks: the build module runs them as it would run g++.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat

import numpy as np
import pytest

from edge.backends.native_build import (build_flags, find_compiler, library_path,
                                        load_library)
from edge.errors import BackendUnavailable


def _script(path, body: str):
    """An executable /bin/sh script at ``path``."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# A compiler that answers --version and otherwise writes a partial output file, complains
# like g++ and fails: the build must leave neither a library nor the temporary file behind.
_FAILING = """\
if [ "$1" = "--version" ]; then echo "fakecc 1.0 (tests/native)"; exit 0; fi
out=""
while [ $# -gt 0 ]; do
    if [ "$1" = "-o" ]; then out="$2"; fi
    shift
done
[ -n "$out" ] && printf 'partial' > "$out"
echo "In file included from cpu_chain.cpp:1:" >&2
echo "cpu_chain.cpp:1: error: boom" >&2
exit 1
"""


def test_cxx_that_is_not_an_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "/nonexistent")
    with pytest.raises(BackendUnavailable,
                       match=r"CXX='/nonexistent' is not an executable on PATH"):
        find_compiler()
    with pytest.raises(BackendUnavailable, match=r"CXX='/nonexistent'"):
        load_library(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()        # nothing created before the compiler


def test_no_compiler_on_path(monkeypatch, tmp_path):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(BackendUnavailable, match=r"no C\+\+ compiler found \(looked for \$CXX, "
                                                 r"g\+\+, c\+\+, clang\+\+\)"):
        load_library(tmp_path / "cache")


def test_failing_compiler_reports_its_error_and_leaves_nothing(monkeypatch, tmp_path):
    cxx = _script(tmp_path / "fakecc", _FAILING)
    monkeypatch.setenv("CXX", str(cxx))
    cache = tmp_path / "cache"
    with pytest.raises(BackendUnavailable, match=r"could not compile cpu_chain\.cpp: "
                                                 r"cpu_chain\.cpp:1: error: boom") as info:
        load_library(cache)
    assert str(cxx) in str(info.value)
    # both attempts (OpenMP, then OpenMP SIMD only) failed; their keys differ, neither exists
    with_omp, without = library_path(str(cxx), True, cache), library_path(str(cxx), False, cache)
    assert with_omp != without and with_omp.parent == without.parent == cache
    assert sorted(os.listdir(cache)) == [".lock"], "a failed build left files in the cache"


def test_unwritable_cache_dir_names_the_variable(native, monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(BackendUnavailable, match=r"cannot create the build cache .*a_file/native"
                                                 r".*set HSI_EDGE_NATIVE_CACHE to a writable"):
        load_library(blocker / "native")
    # the same through the environment variable (the default cache folder)
    monkeypatch.setenv("HSI_EDGE_NATIVE_CACHE", str(blocker / "env"))
    load_library.cache_clear()
    try:
        with pytest.raises(BackendUnavailable, match="HSI_EDGE_NATIVE_CACHE"):
            load_library()
    finally:
        load_library.cache_clear()


def test_second_load_uses_the_cached_library(native, caplog):
    libs = [p for p in native.cache_dir.iterdir() if p.suffix == ".so"]
    assert len(libs) == 1, sorted(os.listdir(native.cache_dir))
    cxx = find_compiler()
    assert libs[0] == library_path(cxx, native.openmp, native.cache_dir)
    mtime = libs[0].stat().st_mtime_ns
    load_library.cache_clear()              # force the disk path, not the in-process cache
    with caplog.at_level(logging.INFO, logger="edge.backends.native_build"):
        lib, openmp = load_library(native.cache_dir)
    assert openmp == native.openmp and lib.hsi_cpu_params_size() > 0
    assert libs[0].stat().st_mtime_ns == mtime
    assert not any("compiling" in r.getMessage() for r in caplog.records)
    # no temporary files next to it, only its build record and the build lock
    assert sorted(os.listdir(native.cache_dir)) == [".lock", libs[0].name,
                                                    libs[0].name + ".record"]


def test_library_path_keys(native, tmp_path):
    cxx = find_compiler()
    a, b = library_path(cxx, True, tmp_path), library_path(cxx, False, tmp_path)
    assert a != b and a.name.startswith("cpu_chain-") and a.suffix == ".so"
    assert library_path(cxx, True, tmp_path) == a          # deterministic
    assert "-fopenmp" in build_flags(True) and "-fopenmp-simd" in build_flags(False)
    assert "-ffp-contract=off" in build_flags(True)        # the flat field's bit-identity


def test_openmp_failure_falls_back_to_one_thread(native, monkeypatch, tmp_path, caplog):
    """A compiler without OpenMP (e.g. clang without libomp): the SIMD-only build is used and
    the backend runs on one thread, with a warning."""
    from edge.backends.native import NativeBackend
    from edge.backends.numpy_backend import NumpyBackend
    from hsi_cuda_scenes import make_scene

    real = find_compiler()
    cxx = _script(tmp_path / "no-omp-cxx", f"""\
for a in "$@"; do
    if [ "$a" = "-fopenmp" ]; then echo "cpu_chain.cpp: error: unsupported option '-fopenmp'" >&2; exit 1; fi
done
exec {real} "$@"
""")
    monkeypatch.setenv("CXX", str(cxx))
    cache = tmp_path / "cache"
    lib, openmp = load_library(cache)
    assert openmp is False
    name = library_path(str(cxx), False, cache).name
    assert sorted(os.listdir(cache)) == [".lock", name, name + ".record"]
    s = make_scene(5, 6, 31, seed=3)
    kw = dict(flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
              baseline=s.unmixer.baseline, calibration=s.calibration)
    with caplog.at_level(logging.WARNING, logger="edge.backends.native"):
        nat = NativeBackend(s.wl, threads=2, cache_dir=cache, **kw)
    assert nat.threads == 1 and not nat.openmp
    assert any("built without OpenMP" in r.getMessage() for r in caplog.records)
    res, ref = nat.run(s.raw, exposure_us=1000.0), NumpyBackend(s.wl, **kw).run(
        s.raw, exposure_us=1000.0)
    assert np.array_equal(res.reflectance, ref.reflectance, equal_nan=True)
    np.testing.assert_array_equal(res.flags, ref.flags)


def test_native_available(native, monkeypatch):
    from edge.backends.native import native_available

    monkeypatch.setenv("HSI_EDGE_NATIVE_CACHE", str(native.cache_dir))
    load_library.cache_clear()
    try:
        assert native_available() is None
        load_library.cache_clear()
        monkeypatch.setenv("CXX", "/nonexistent")
        reason = native_available()
        assert reason is not None and "CXX='/nonexistent'" in reason
    finally:
        load_library.cache_clear()


def test_compiler_found_on_path_is_an_absolute_path(native):
    path = find_compiler()
    assert os.path.isabs(path) and shutil.which(path) == path


def test_corrupt_cached_library_is_rebuilt(native, tmp_path, caplog):
    """A damaged cached library (truncated by a full disk) is rebuilt, never loaded: dlopen
    maps a truncated ELF and the process dies of SIGBUS on first use."""
    cache = tmp_path / "cache"
    shutil.copytree(native.cache_dir, cache)
    (lib_path,) = [p for p in cache.iterdir() if p.suffix == ".so"]
    lib_path.write_bytes(lib_path.read_bytes()[:1000])          # truncated ELF
    load_library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="edge.backends.native_build"):
            lib, _ = load_library(cache)
        assert lib.hsi_cpu_params_size() > 0
        assert lib_path.stat().st_size > 1000
        assert any("does not match its build record" in r.getMessage()
                   and "rebuilding" in r.getMessage() for r in caplog.records)
    finally:
        load_library.cache_clear()


def test_kernels_cpu_cli_reports_the_build(native, capsys):
    from edge.cli import main

    assert main(["kernels", "cpu", "--cache", str(native.cache_dir)]) == 0
    out = capsys.readouterr().out
    (lib_path,) = [p for p in native.cache_dir.iterdir() if p.suffix == ".so"]
    assert f"native CPU chain: {lib_path}" in out
    assert "-march=native" in out or "-mcpu=native" in out
    assert "threads:" in out


def test_kernels_cpu_cli_without_compiler_is_one_line(monkeypatch, capsys):
    from edge.cli import main

    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert main(["kernels", "cpu"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CXX='/nonexistent/c++' is not an executable" in err[0]
