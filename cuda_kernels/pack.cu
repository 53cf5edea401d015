// pack.cu -- network input: L1-normalised reflectance of the selected bands (FACTS.md "htc
// models": x / sum|x| over those bands, 0/0 -> 0, a non-finite spectrum packs as 0), then the
// selected maps (non-finite -> 0), written as NCHW planes (1, channels, rows, cols) straight
// into the engine's input binding, float32 or float16.
// edge.processing.pack.pack_input (flags == NULL) and NumpyBackend.run's pack step
// (flags given, zero_flagged set).
// Inputs: refl (npix, nb) float32; maps (n_maps, npix) float32 in channel order; flags (npix)
// uint8 or NULL (with zero_flagged, a flagged pixel packs as all zeros).
// Launch (Python wrapper only): as unmix.cu (tile of block pixels, stride = nb | 1).
#include <cuda_fp16.h>
#include "staging.cuh"

__constant__ ChainParams c_params;

__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(__half* p, float v) { *p = __float2half_rn(v); }

template <class OutT>
__device__ __forceinline__ void pack_impl(const float* __restrict__ refl,
                                          const float* __restrict__ maps,
                                          const unsigned char* __restrict__ flags,
                                          long long npix, int stride, OutT* __restrict__ out) {
    extern __shared__ float tile[];
    const ChainParams& P = c_params;
    long long p0;
    const int np = tile_pixels(npix, &p0);
    if (P.n_spec > 0) stage_f32(refl, p0, np, P.nb, stride, tile);
    __syncthreads();
    if ((int)threadIdx.x >= np) return;
    const long long p = p0 + threadIdx.x;
    const bool zero = P.zero_flagged && flags && pack_zeroed(flags[p]);
    const float* row = tile + threadIdx.x * stride;
    const float inv = P.n_spec > 0 ? l1_inverse(row, P, zero) : 0.0f;
    for (int i = 0; i < P.n_spec; ++i) store_out(out + i * npix + p, pack_spec_value(row[P.spec_bands[i]], inv));
    for (int j = 0; j < P.n_maps; ++j)
        store_out(out + (P.n_spec + j) * npix + p, zero ? 0.0f : pack_map_value(__ldg(maps + j * npix + p)));
}

extern "C" __global__ void pack_f32(const float* __restrict__ refl, const float* __restrict__ maps,
                                    const unsigned char* __restrict__ flags, long long npix,
                                    int stride, float* __restrict__ out) {
    pack_impl(refl, maps, flags, npix, stride, out);
}

extern "C" __global__ void pack_f16(const float* __restrict__ refl, const float* __restrict__ maps,
                                    const unsigned char* __restrict__ flags, long long npix,
                                    int stride, __half* __restrict__ out) {
    pack_impl(refl, maps, flags, npix, stride, out);
}
