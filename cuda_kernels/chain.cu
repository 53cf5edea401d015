// chain.cu -- the fused per-pixel chain (edge.backends.numpy_backend.NumpyBackend.run):
// flat field -> absorbance -> unmixing -> calibrated StO2 -> TIVITA-style indices -> L1 pack,
// in ONE pass over memory (MEMORY.md gives the byte count that makes this the design: every
// unfused split writes and re-reads the cube).
//
// A block stages blockDim.x consecutive pixels (one contiguous run of raw, dark and scale)
// through shared memory with coalesced loads, applying the flat field on the way in; then
// each thread runs chain_pixel on its own row and writes the six maps and the flags as planes
// (consecutive threads, consecutive pixels: coalesced) and the packed NCHW input.
// Inputs: raw (npix, nb) uint16 or float32; dark, scale (npix, nb) float32 or NULL (float32
// recording passes through); static_flags (npix) uint8 or NULL; factor = t_ref / t_I.
// Outputs: maps (6, npix) float32 in MAP_* order, flags (npix) uint8, packed (channels, npix)
// float32/float16 or NULL, refl (npix, nb) float32 or NULL (only when the caller wants it).
// Launch (Python wrapper only): block = pixels per tile (multiple of 32), grid =
// ceil(npix / block), dynamic shared = 4 * block * (stride + 1) bytes, stride = nb | 1.
#include <cuda_fp16.h>
#include "staging.cuh"

__constant__ ChainParams c_params;

// (Declared before chain_tail.cuh: its template finds this overload at instantiation.)
__device__ __forceinline__ void store_out(__half* p, float v) { *p = __float2half_rn(v); }
#include "chain_tail.cuh"

template <class T, class OutT>
__device__ __forceinline__ void chain_impl(
    const T* __restrict__ raw, const float* __restrict__ dark, const float* __restrict__ scale,
    const unsigned char* __restrict__ static_flags, long long npix, int stride, float factor,
    float* __restrict__ maps, unsigned char* __restrict__ flags, OutT* __restrict__ packed,
    float* __restrict__ refl) {
    extern __shared__ float smem[];
    const ChainParams& P = c_params;
    float* tile = smem;
    unsigned* sflags = reinterpret_cast<unsigned*>(smem + blockDim.x * stride);
    long long p0;
    const int np = tile_pixels(npix, &p0);
    const int nb = P.nb;
    init_flags(static_flags, p0, np, sflags);
    __syncthreads();
    stage_calibrated(raw, dark, scale, factor, P.sat_level, p0, np, nb, stride, tile, sflags);
    __syncthreads();
    if (refl) write_reflectance(tile, sflags, p0, np, nb, stride, refl);
    if ((int)threadIdx.x >= np) return;
    chain_thread(tile + threadIdx.x * stride, sflags[threadIdx.x], p0 + threadIdx.x, npix, P,
                 maps, flags, packed);
}

#define HSI_CHAIN_KERNEL(NAME, T, OUT)                                                        \
    extern "C" __global__ void NAME(                                                          \
        const T* __restrict__ raw, const float* __restrict__ dark,                            \
        const float* __restrict__ scale, const unsigned char* __restrict__ static_flags,      \
        long long npix, int stride, float factor, float* __restrict__ maps,                   \
        unsigned char* __restrict__ flags, OUT* __restrict__ packed, float* __restrict__ refl) { \
        chain_impl(raw, dark, scale, static_flags, npix, stride, factor, maps, flags, packed, \
                   refl);                                                                     \
    }

HSI_CHAIN_KERNEL(chain_u16_f32, unsigned short, float)
HSI_CHAIN_KERNEL(chain_u16_f16, unsigned short, __half)
HSI_CHAIN_KERNEL(chain_f32_f32, float, float)
HSI_CHAIN_KERNEL(chain_f32_f16, float, __half)
