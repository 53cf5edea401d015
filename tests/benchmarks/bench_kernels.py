"""Kernel benchmark on a GPU: time per kernel and for the fused chain, bandwidth, speed-up.

Run by tests/gpu/run.sh (not collected by pytest)::

    python tests/benchmarks/bench_kernels.py --out DIR [--reps 100]

For one 480x640x100 uint16 frame (the TIVITA format, FACTS.md): CUDA-event times (10 warm-up
launches, median of ``--reps`` >= 50) of every kernel and of the fused chain; the fused
chain's achieved bandwidth (bytes from cuda_kernels/MEMORY.md over time) against a
device-to-device copy measured in the same run; and the speed-up against the same math
written plainly in CuPy (one op per line) on the same GPU in the same run.  Writes
``bench_kernels.json`` to DIR and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "cuda"))


def chain_bytes(npix: int, bands: int, n_spec: int, n_maps: int, pack_bytes: int) -> int:
    """Bytes the fused chain must move (MEMORY.md): raw u16 + dark + scale + static flags in;
    six float32 maps + flags + packed input out."""
    return npix * (bands * (2 + 4 + 4) + 1 + 6 * 4 + 1 + (n_spec + n_maps) * pack_bytes)


def time_ms(cuda, stream, fn, reps: int, warmup: int = 10) -> float:
    """Median of ``reps`` CUDA-event timings of ``fn()`` enqueued on ``stream``."""
    start, end = cuda.Event(), cuda.Event()
    for _ in range(warmup):
        fn()
    stream.synchronize()
    times = []
    for _ in range(reps):
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(end.time_since(start))
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=100)
    args = ap.parse_args(argv)
    args.reps = max(args.reps, 50)
    args.out.mkdir(parents=True, exist_ok=True)

    import pycuda.gpuarray as ga
    import cuda_kernels
    from cuda_kernels import arch_of
    from cuda_kernels.build import build
    from edge.backends.base import PackSpec
    from edge.backends.cuda import CudaBackend, import_pycuda
    from edge.backends.cuda_ops import CudaOps, load_module
    from edge.backends.cuda_params import chain_params
    from hsi_cuda_scenes import make_scene

    cuda = import_pycuda()
    dev = cuda.Device(0)
    arch = arch_of(dev.compute_capability())
    prebuilt = args.out / "prebuilt"
    build([arch], prebuilt)
    rows, cols, bands = 480, 640, 100
    npix = rows * cols
    s = make_scene(rows, cols, bands, seed=1)
    spec = PackSpec(spectra_bands=tuple(range(bands)), maps=("sto2", "thi"), dtype="float16")
    ff = s.flatfield
    be = CudaBackend(s.wl, flatfield=ff, chromophores=s.unmixer.chromophores,
                     baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec,
                     prebuilt_dir=prebuilt, copy_input=False)
    be.run(s.raw, exposure_us=1000.0)               # allocates the buffers
    results: dict[str, float] = {}
    be._ctx.push()
    try:
        stream = be.stream
        mods = {n: load_module(n, arch, prebuilt) for n in cuda_kernels.MODULES}
        ops = CudaOps(mods, chain_params(s.wl, s.unmixer, s.calibration, s.index_params, spec,
                                         saturation=ff.saturation), stream,
                      dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT))
        d_raw = ga.to_gpu(s.raw.reshape(npix, bands))
        d_dark = ga.to_gpu(ff.dark.reshape(npix, bands))
        d_scale = ga.to_gpu(ff.scale.reshape(npix, bands))
        d_static = ga.to_gpu(ff.static_flags.reshape(npix))
        refl, flags = ops.flatfield(d_raw, d_dark, d_scale, d_static, saturation=ff.saturation)
        conc, thb, sraw = ops.unmix(refl)
        maps2 = ga.to_gpu(np.zeros((2, npix), np.float32))
        logits = ga.to_gpu(np.random.default_rng(0).standard_normal((19, npix)).astype(np.float16))
        labels = ops.argmax(logits)
        rgb = ga.to_gpu(np.zeros((npix, 3), np.uint8))
        colours = np.random.default_rng(1).integers(0, 256, (19, 3), dtype=np.uint8)
        per_op = {
            "flatfield": lambda: ops.flatfield(d_raw, d_dark, d_scale, d_static,
                                               saturation=ff.saturation),
            "absorbance": lambda: ops.absorbance(refl, 1e-4),
            "unmix": lambda: ops.unmix(refl),
            "sto2": lambda: ops.sto2(sraw),
            "indices": lambda: ops.indices(refl),
            "pack_f16": lambda: ops.pack(refl, maps2, flags, "float16"),
            "argmax_19cls_f16": lambda: ops.argmax(logits),
            "overlay": lambda: ops.overlay(labels, rgb, colours, 0.4, cols),
        }
        for name, fn in per_op.items():
            results[name] = time_ms(cuda, stream, fn, args.reps)
        ln = be._launch
        kern = be.ops.fn("chain", "chain_u16_f16")
        none = np.uintp(0)

        def fused():
            kern(be._d_raw, be._d_dark, be._d_scale, be._d_static, np.int64(npix),
                 np.int32(ln.stride), np.float32(1.0), be._d_maps, be._d_flags, be._d_input,
                 none, grid=ln.grid, block=ln.block, shared=ln.shared, stream=stream)
        results["fused_chain"] = time_ms(cuda, stream, fused, args.reps)
        nbytes = 512 << 20
        src, dst = cuda.mem_alloc(nbytes), cuda.mem_alloc(nbytes)
        results["d2d_copy_512MiB"] = time_ms(
            cuda, stream, lambda: cuda.memcpy_dtod_async(dst, src, nbytes, stream), args.reps)
        copy_gbs = 2 * nbytes / results["d2d_copy_512MiB"] / 1e6
        moved = chain_bytes(npix, bands, bands, 2, 2)
        fused_gbs = moved / results["fused_chain"] / 1e6
        plain_ms = None
        try:
            plain_ms = _cupy_plain(s, spec, ff, args.reps)
        except ImportError as exc:
            print(f"CuPy not available ({exc}): no plain-GPU baseline", file=sys.stderr)
    finally:
        cuda.Context.pop()
        be.close()
    summary = {
        "gpu": dev.name(), "arch": arch, "frame": [rows, cols, bands], "reps": args.reps,
        "times_ms": results, "fused_bytes": moved, "fused_GBps": fused_gbs,
        "copy_GBps": copy_gbs, "fraction_of_copy": fused_gbs / copy_gbs,
        "plain_cupy_ms": plain_ms,
        "speedup_vs_plain": None if plain_ms is None else plain_ms / results["fused_chain"],
    }
    (args.out / "bench_kernels.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nkernel benchmark on {dev.name()} ({arch}), 480x640x100 uint16, median of "
          f"{args.reps} (CUDA events)")
    for name, ms in results.items():
        print(f"  {name:20s} {ms * 1000:9.1f} us")
    print(f"  fused chain: {moved / 1e6:.1f} MB moved, {fused_gbs:.0f} GB/s = "
          f"{100 * fused_gbs / copy_gbs:.0f} % of d2d copy ({copy_gbs:.0f} GB/s; target >= 80 %)")
    if plain_ms is not None:
        print(f"  plain CuPy chain {plain_ms * 1000:.1f} us -> speed-up "
              f"{plain_ms / results['fused_chain']:.1f}x (target >= 5x)")
    return 0


def _cupy_plain(s, spec, ff, reps: int) -> float:
    """The same chain written plainly in CuPy, one op per line; median ms (CUDA events)."""
    import cupy as cp
    from edge.processing.indices import index_linear_terms

    raw = cp.asarray(s.raw)
    dark, scale = cp.asarray(ff.dark), cp.asarray(ff.scale)
    static = cp.asarray(ff.static_flags)
    pinv_t = cp.asarray(s.unmixer.pinv.T)
    lin, lay = index_linear_terms(s.wl, s.index_params)
    lin = cp.asarray(lin.astype(np.float32))
    ty = cp.asarray(s.calibration.table_y)
    x0, dx, n = s.calibration.x0, s.calibration.dx, s.calibration.table_y.size
    io, ih = s.unmixer.i_hbo2, s.unmixer.i_hb

    def chain():
        refl = (raw.astype(cp.float32) - dark) * scale
        flags = static | cp.where(raw.max(axis=2) >= ff.saturation, 1, 0).astype(cp.uint8)
        refl = cp.where((flags != 0)[..., None], cp.nan, refl)
        a = -cp.log(cp.maximum(refl, 1e-4))
        conc = a @ pinv_t
        thb = conc[..., io] + conc[..., ih]
        sraw = conc[..., io] / thb
        t = cp.clip((sraw - x0) / dx, 0, n - 1)
        i = cp.minimum(cp.floor(t).astype(cp.int32), n - 2)
        sto2 = ty[i] + (t - i) * (ty[i + 1] - ty[i])
        terms = a @ lin
        r1 = terms[..., lay["r1"]].min(axis=-1)
        r2 = terms[..., lay["r2"]].min(axis=-1) / 0.15
        sto2_index = cp.clip(r1 / (r1 + r2), 0, 1)
        nir = cp.clip(terms[..., lay["nir_num"].start] / terms[..., lay["nir_den"].start] / 1.9, 0, 1)
        thi = cp.clip((terms[..., lay["thi_num"].start] / terms[..., lay["thi_den"].start] - 1.3) / 1.7, 0, 1)
        twi = cp.clip((terms[..., lay["twi_num"].start] / terms[..., lay["twi_den"].start] - 0.4) / 1.6, 0, 1)
        norm = cp.abs(refl).sum(axis=2, keepdims=True)
        l1 = cp.where(norm > 0, refl / norm, 0)
        packed = cp.concatenate([l1.transpose(2, 0, 1), sto2[None], thi[None]]).astype(cp.float16)
        return packed, sto2_index, nir, twi, flags

    stream = cp.cuda.get_current_stream()
    for _ in range(5):
        chain()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(reps):
        start.record(stream)
        chain()
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


if __name__ == "__main__":
    sys.exit(main())
