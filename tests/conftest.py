"""Shared pytest configuration: marker handling and common fixtures.

- ``gpu`` tests run only where PyCUDA finds an NVIDIA GPU; otherwise they are skipped with the
  reason.
- ``tensorrt`` tests run only where the ``tensorrt`` package imports.
- ``slow`` tests run only with ``-m slow`` (or ``--run-slow``).
"""

from __future__ import annotations

import functools
import importlib.util

import pytest


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption("--port", default=None,
                     help="serial URL of real hardware for the driver contract tests")


@functools.lru_cache(maxsize=None)
def _gpu_reason() -> str | None:
    if importlib.util.find_spec("pycuda") is None:
        return "needs PyCUDA (pip install 'hsi-edge[cuda]') and an NVIDIA GPU"
    try:
        import pycuda.driver as cuda
        cuda.init()
        if cuda.Device.count() < 1:
            return "no NVIDIA GPU found by the CUDA driver"
    except Exception as exc:  # driver missing, no device, ...
        return f"CUDA driver unavailable: {exc}"
    return None


@functools.lru_cache(maxsize=None)
def _tensorrt_present() -> bool:
    # find_spec is not enough: any folder named "tensorrt" on sys.path (e.g. the
    # tensorrt-stubs package) imports as an empty namespace package.
    try:
        import tensorrt
    except Exception:
        return False
    return hasattr(tensorrt, "Builder")


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("-m") or ""
    run_slow = config.getoption("--run-slow") or "slow" in markexpr
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            reason = _gpu_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
        if item.get_closest_marker("tensorrt") is not None and not _tensorrt_present():
            item.add_marker(pytest.mark.skip(
                reason="needs TensorRT (pip install tensorrt; on Jetson it comes with JetPack)"))
        if item.get_closest_marker("slow") is not None and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: run with -m slow or --run-slow"))
