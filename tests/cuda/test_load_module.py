"""How the CUDA backend gets its kernels (edge.backends.cuda_ops.load_module), on the CPU.

Real nvcc builds the prebuilt directory; ``pycuda`` is fake_pycuda (driver version, module
loads and the run-time compiler recorded, failures injected), so these test the choice and
the error mapping only -- loading on a GPU is tests/gpu's job.
"""

from __future__ import annotations

import shutil
import stat
import sys

import pytest

import cuda_kernels as ck
from cuda_kernels import build as kb
from edge.backends.cuda_ops import load_module
from edge.errors import BackendUnavailable
from fake_pycuda import make_fake_pycuda

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="needs nvcc (the CUDA toolkit) on PATH")


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory):
    out = tmp_path_factory.mktemp("prebuilt")
    kb.build(["sm_87"], out)
    return out


def _install(monkeypatch, **kw):
    pkg = make_fake_pycuda(**kw)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", pkg.driver)
    monkeypatch.setitem(sys.modules, "pycuda.compiler", pkg.compiler)
    return pkg.driver


def _nvcc_elsewhere(tmp_path, monkeypatch):
    """nvcc only under $CUDA_HOME (as on JetPack), not on PATH."""
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    fake = home / "bin" / "nvcc"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return str(fake)


def test_a_current_driver_loads_the_cubin(prebuilt, monkeypatch):
    drv = _install(monkeypatch, driver_version=13000)
    assert load_module("chain", "sm_87", prebuilt) == ("module", str(prebuilt / "chain.sm_87.cubin"))
    assert drv.compiled == []


def test_an_old_driver_skips_nvcc13_binaries_and_compiles_with_find_nvcc(prebuilt, tmp_path,
                                                                         monkeypatch):
    """CUDA 12.6 driver (JetPack 6.1), nvcc 13 binaries: not loaded; nvcc from $CUDA_HOME."""
    nvcc = _nvcc_elsewhere(tmp_path, monkeypatch)
    drv = _install(monkeypatch, driver_version=12060)
    assert load_module("chain", "sm_87", prebuilt) == ("source-module", nvcc)
    assert drv.loaded == [] and drv.compiled[0]["nvcc"] == nvcc
    assert drv.compiled[0]["include_dirs"] == [str(ck.KERNEL_DIR)]


def test_a_binary_the_driver_refuses_falls_back_to_a_run_time_compile(prebuilt, tmp_path,
                                                                      monkeypatch, caplog):
    nvcc = _nvcc_elsewhere(tmp_path, monkeypatch)
    drv = _install(monkeypatch, refuse=("chain.sm_87.cubin",))
    assert load_module("chain", "sm_87", prebuilt) == ("source-module", nvcc)
    assert "the driver refused chain.sm_87.cubin: cuModuleLoad failed" in caplog.text
    assert drv.loaded == []


def test_no_nvcc_is_backend_unavailable_with_both_reasons(prebuilt, tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    _install(monkeypatch, driver_version=12020)
    with pytest.raises(BackendUnavailable, match=r"no loadable prebuilt kernels for chain on "
                                                 r"sm_87 \(the kernels were built by nvcc 13\.0, "
                                                 r"newer than this driver's CUDA 12\.2 .*\), and "
                                                 r"no run-time compile: nvcc not found"):
        load_module("chain", "sm_87", prebuilt)


def test_a_failed_run_time_compile_is_backend_unavailable_with_nvccs_error(tmp_path,
                                                                           monkeypatch):
    nvcc = _nvcc_elsewhere(tmp_path, monkeypatch)
    _install(monkeypatch, compile_error="nvcc fatal   : Unsupported gpu architecture "
                                        "'compute_100'\n")
    with pytest.raises(BackendUnavailable, match=rf"no loadable prebuilt kernels for chain on "
                                                 rf"sm_100 \(no prebuilt directory\), and the "
                                                 rf"run-time compile with {nvcc} failed: nvcc "
                                                 rf"fatal   : Unsupported gpu architecture "
                                                 rf"'compute_100'"):
        load_module("chain", "sm_100", None)


# ---- overlay colours uploaded once (item 6) ------------------------------------------------
def test_overlay_uploads_the_palette_once_not_per_call(monkeypatch):
    import numpy as np

    from edge.backends.cuda_ops import CudaOps
    from edge.backends.cuda_params import CHAIN_PARAMS_DTYPE
    from edge.errors import ConfigError
    from fake_pycuda import FakeModule, add_fake_gpuarray
    drv = _install(monkeypatch)
    monkeypatch.setitem(sys.modules, "pycuda.gpuarray", add_fake_gpuarray(sys.modules["pycuda"]))
    launches = []
    ops = CudaOps({"post": FakeModule(launches)}, np.zeros((), CHAIN_PARAMS_DTYPE), None, 8)
    ga_labels = sys.modules["pycuda.gpuarray"].empty(6, np.uint8)
    with pytest.raises(ConfigError, match=r"colours: no class colours uploaded"):
        ops.overlay(ga_labels, None, None, 0.4, 3)
    colours = np.array([[0, 0, 0], [200, 10, 10]], np.uint8)
    for _ in range(10):
        ops.overlay(ga_labels, None, colours, 0.4, 3)
    assert drv.copies == [(0xC0DE, colours.tobytes())]          # one upload for ten calls
    assert [k for k, _, _ in launches] == ["overlay_u8"] * 10
    ops.overlay(ga_labels, None, colours[::-1], 0.4, 3)          # a new palette: uploaded
    assert drv.copies[-1] == (0xC0DE, colours[::-1].tobytes()) and len(drv.copies) == 2
    ops.set_colours(colours)
    ops.overlay(ga_labels, None, None, 0.4, 3)
    assert len(drv.copies) == 3 and len(launches) == 12
