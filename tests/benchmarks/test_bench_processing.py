"""Benchmark: the chain (calibrate -> unmix -> indices -> pack) vs the memory floor, for the
NumPy reference and the native CPU backend (compiled ``cuda_kernels/cpu_chain.cpp``).

Floor (DESIGN.md, "Performance method"): the bytes that must move -- the raw uint16 frame and
the float32 dark and scale references read once, the float32 reflectance, the packed input, six
float32 maps and the flags written once (``edge.backends.base.chain_bytes``) --
divided by a copy bandwidth measured in the same run (``np.copyto`` of input-sized float32
arrays, counted as read + write).  The ratio chain_time / floor_time is printed and stored in
``benchmark.extra_info``.  The native backend's multi-threaded figure is also given against a
copy made with its own threads (``NativeBackend.copy``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge.backends.base import PackSpec, chain_bytes
from edge.backends.numpy_backend import NumpyBackend
from edge.processing.flatfield import FlatField

ROWS, COLS, BANDS = 480, 640, 100


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _backend(name, wl, ff, spec):
    if name == "numpy":
        return NumpyBackend(wl, flatfield=ff, fwhm_nm=10.0, pack=spec)
    from edge.backends.native import NativeBackend, native_available

    reason = native_available()
    if reason:
        pytest.skip(reason)
    return NativeBackend(wl, flatfield=ff, fwhm_nm=10.0, pack=spec)


@pytest.mark.benchmark
@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_bench_chain(benchmark, dtype, backend):
    rng = np.random.default_rng(0)
    wl = np.linspace(500, 1000, BANDS)
    shape = (ROWS, COLS, BANDS)
    dark = np.full(shape, 40.0, np.float32)
    white = np.full(shape, 900.0, np.float32)
    ff = FlatField.from_references(dark, white, exposure_us=1000, white_exposure_us=1000)
    # Plausible tissue-like reflectance 0.2-0.6 with a blood-like dip, as counts
    refl = rng.uniform(0.2, 0.6, shape).astype(np.float32)
    raw = np.rint(40 + refl * 860).astype(np.uint16)
    spec = PackSpec(spectra_bands=tuple(range(BANDS)), maps=(), dtype=dtype)
    be = _backend(backend, wl, ff, spec)

    src = np.ones(shape, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t_copy = _best(lambda: np.copyto(dst, src))
    copy_gbps = 2 * src.nbytes / t_copy / 1e9
    moved = chain_bytes(raw.shape, flatfield=True, pack=spec)
    floor_s = moved / (copy_gbps * 1e9)

    be.run(raw, exposure_us=1000)                             # warm-up (page faults)
    t_chain = _best(lambda: be.run(raw, exposure_us=1000))
    res = benchmark(be.run, raw, exposure_us=1000)
    ratio = t_chain / floor_s
    benchmark.extra_info.update({
        "copy_GBps": round(copy_gbps, 2), "floor_ms": round(floor_s * 1e3, 2),
        "chain_ms": round(t_chain * 1e3, 1), "ratio_to_floor": round(ratio, 1),
        "substeps_ms": {k: round(v, 1) for k, v in res.timings_ms.items()}})
    print(f"\n{backend} chain ({dtype} pack): {t_chain * 1e3:.1f} ms; floor {floor_s * 1e3:.1f} "
          f"ms at {copy_gbps:.1f} GB/s copy; ratio {ratio:.1f}x; substeps {res.timings_ms}")
    if getattr(be, "threads", 1) > 1:
        t_copy_n = _best(lambda: be.copy(src, dst))
        floor_n = moved / (2 * src.nbytes / t_copy_n)
        benchmark.extra_info["ratio_to_floor_threads"] = round(t_chain / floor_n, 1)
        print(f"  against a {be.threads}-thread copy: floor {floor_n * 1e3:.1f} ms, ratio "
              f"{t_chain / floor_n:.1f}x")
    assert res.input.shape == (1, BANDS, ROWS, COLS)
