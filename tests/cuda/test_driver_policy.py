"""The driver a PyCUDA build and the kernels need, and the one-line errors when it is not
there (cuda_kernels/driver.py, the TensorRT runtime's PyCUDA import) -- on the CPU.

The ``undefined symbol`` text is the one Python gives for an extension module linked against
a newer ``libcuda`` (reproduced in research/cuda_review.md item 1 with a PyCUDA wheel built
against CUDA 13 headers and an older libcuda stand-in).
"""

from __future__ import annotations

import sys

import pytest

from cuda_kernels.driver import driver_problems, explain_pycuda_import_error, release
from edge.errors import BackendUnavailable
from fake_pycuda import make_fake_pycuda

SO = "/home/u/site/pycuda/_driver.cpython-312-x86_64-linux-gnu.so"


@pytest.mark.parametrize("symbol,need", [("cuCtxCreate_v4", "CUDA 12.5+ driver (R555+)"),
                                         ("cuEventElapsedTime_v2", "CUDA 13.0+ driver (R580+)"),
                                         ("cuFutureThing", "newer driver")])
def test_undefined_symbol_is_an_old_driver_not_a_missing_pycuda(symbol, need):
    msg = explain_pycuda_import_error(ImportError(f"{SO}: undefined symbol: {symbol}"))
    assert msg.startswith(f"cuda backend: the NVIDIA driver is too old for this PyCUDA build "
                          f"(undefined symbol {symbol}: needs a {need}")
    assert "not installed" not in msg and "\n" not in msg


def test_missing_pycuda_or_libcuda_say_so():
    assert explain_pycuda_import_error(ModuleNotFoundError("No module named 'pycuda'")) \
        .startswith("cuda backend: PyCUDA is not installed (No module named 'pycuda'); pip "
                    "install 'hsi-edge[cuda]' (pycuda>=2025.1.2")
    assert "NVIDIA driver library is not" in explain_pycuda_import_error(
        ImportError("libcuda.so.1: cannot open shared object file: No such file or directory"))


def test_driver_problems_compare_the_builds_with_the_driver():
    assert release(12060) == (12, 6) and release((13, 0, 0)) == (13, 0)
    assert release("13.0.88") == (13, 0)
    assert driver_problems(13000, pycuda_built=(13, 0, 0), nvcc="13.0.88") == []
    assert driver_problems(12060, pycuda_built=(12, 6, 0), nvcc="12.6.77") == []
    problems = driver_problems(12020, pycuda_built=(13, 0, 0), nvcc="13.0.88")
    assert problems == [
        "PyCUDA was built against CUDA 13.0 headers but the driver is CUDA 12.2: rebuild it "
        "against the unit's CUDA (CUDA_ROOT=... bash ../shared/tools/gpu-wheels.sh) or update "
        "the driver",
        "nvcc 13.0 writes PTX the CUDA 12.2 driver cannot load: use the unit's own toolkit "
        "(CUDA_HOME) or update the driver"]


class _Refuse:
    """A meta-path finder that fails ``import pycuda.driver`` the way an old libcuda does."""

    def __init__(self, text):
        self.text = text

    def find_spec(self, name, path=None, target=None):
        if name in ("pycuda", "pycuda.driver"):
            raise ImportError(self.text)
        return None


def test_tensorrt_runtime_pycuda_import_says_the_driver_is_too_old(monkeypatch):
    from edge.inference.tensorrt_build import _import_cuda
    monkeypatch.delitem(sys.modules, "pycuda", raising=False)
    monkeypatch.delitem(sys.modules, "pycuda.driver", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Refuse(f"{SO}: undefined symbol: cuCtxCreate_v4")]
                        + sys.meta_path)
    with pytest.raises(BackendUnavailable, match=r"^the tensorrt runtime: the NVIDIA driver is "
                                                 r"too old for this PyCUDA build"):
        _import_cuda()


def test_tensorrt_runtime_maps_a_failing_cuda_init(monkeypatch):
    from edge.inference.tensorrt_build import _import_cuda
    pkg = make_fake_pycuda(init_error="cuInit failed: no CUDA-capable device is detected")
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", pkg.driver)
    with pytest.raises(BackendUnavailable, match=r"the tensorrt runtime: the CUDA driver is not "
                                                 r"usable \(cuInit failed: no CUDA-capable "
                                                 r"device is detected\); needs an NVIDIA GPU"):
        _import_cuda()
