// chain_tail.cuh -- what one thread of chain.cu does after its tile is staged: the fused
// per-pixel chain on its row of the tile and the stores of the six maps, the flags and the
// packed input (planes: consecutive threads, consecutive pixels, coalesced).
//
// Separate from chain.cu so the host emulation of the tiled kernels (tests/cuda/
// host_emulation.cpp) runs the very same code after the very same staging (staging.cuh) on
// the CPU; chain.cu keeps only the barriers and the kernel entry points.
#pragma once
#include "pixel_math.cuh"

HSI_HD void store_out(float* p, float v) { *p = v; }

// m[id] with compile-time indexing: a run-time index would put m[] in local memory.
HSI_HD float select_map(const float* m, int id) {
    float v = 0.0f;
#pragma unroll
    for (int j = 0; j < HSI_N_MAPS; ++j) v = (id == j) ? m[j] : v;
    return v;
}

// row: this pixel's staged reflectance (nb floats); sflag: its calibration flags; p: its
// global index. maps (6, npix), flags (npix), packed (channels, npix) or NULL.
template <class OutT>
HSI_HD void chain_thread(const float* row, unsigned sflag, long long p, long long npix,
                         const ChainParams& P, float* __restrict__ maps,
                         unsigned char* __restrict__ flags, OutT* __restrict__ packed) {
    float m[HSI_N_MAPS];
    const unsigned f = chain_pixel(AbsFromR{row}, sflag, P, m);
    flags[p] = (unsigned char)f;
#pragma unroll
    for (int j = 0; j < HSI_N_MAPS; ++j) maps[j * npix + p] = m[j];
    if (!packed) return;
    const bool zero = P.zero_flagged && pack_zeroed(f);
    const float inv = P.n_spec > 0 ? l1_inverse(row, P, zero) : 0.0f;
    for (int i = 0; i < P.n_spec; ++i)
        store_out(packed + i * npix + p, pack_spec_value(row[P.spec_bands[i]], inv));
    for (int j = 0; j < P.n_maps; ++j)
        store_out(packed + (P.n_spec + j) * npix + p,
                  zero ? 0.0f : pack_map_value(select_map(m, P.map_ids[j])));
}
