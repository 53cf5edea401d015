"""Fixtures of the native CPU backend tests: the library, built once per session.

The build (``edge.backends.native_build``) goes into a temporary cache folder so the tests
neither read nor fill the user's ``~/.cache/hsi-edge/native``.  Tests are skipped only where
no C++ compiler exists; a compiler that fails to build the library is a test failure.

The reference scenes of the CUDA tests (``tests/cuda/hsi_cuda_scenes.py``: Beer-Lambert
spectra through a random 10-bit flat field with saturated, bad, under-exposed and non-finite
pixels) are imported from their folder, not copied.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

_CUDA_TESTS = str(Path(__file__).resolve().parents[1] / "cuda")
if _CUDA_TESTS not in sys.path:          # pytest adds it only when tests/cuda is collected
    sys.path.append(_CUDA_TESTS)


@dataclass
class NativeBuild:
    lib: object          # ctypes.CDLL with the signatures set by load_library
    openmp: bool
    cache_dir: Path


@pytest.fixture(scope="session")
def native(tmp_path_factory) -> NativeBuild:
    """The native chain library built once into a session temporary cache folder."""
    from edge.backends.native_build import find_compiler, load_library
    from edge.errors import BackendUnavailable

    try:
        find_compiler()
    except BackendUnavailable as exc:
        pytest.skip(f"native backend tests need a C++ compiler: {exc}")
    cache = tmp_path_factory.mktemp("native_cache")
    lib, openmp = load_library(cache)
    return NativeBuild(lib, openmp, cache)
