"""The memory-traffic count shared by the CPU benchmarks and cuda_kernels/MEMORY.md."""

from edge.backends.base import PackSpec, chain_bytes


def test_matches_the_kernel_memory_count():
    # cuda_kernels/MEMORY.md: fused chain, uint16 raw, float16 pack of 100 bands + 2 maps,
    # no reflectance written: 1230 B per pixel, 377.9 MB per 480x640x100 frame
    pack = PackSpec(spectra_bands=tuple(range(100)), maps=("sto2", "thb"), dtype="float16")
    moved = chain_bytes((480, 640, 100), pack=pack, reflectance=False)
    assert moved == 1230 * 480 * 640
    assert round(moved / 1e6, 1) == 377.9


def test_optional_parts():
    base = chain_bytes((2, 3, 4), flatfield=False, reflectance=False, maps=0)
    assert base == 2 * 24 + 6                       # raw in, flags out
    assert chain_bytes((2, 3, 4), flatfield=False, reflectance=True, maps=0) == base + 4 * 24
    assert chain_bytes((2, 3, 4), raw_itemsize=4, flatfield=False, reflectance=False,
                       maps=0) == base + 2 * 24
