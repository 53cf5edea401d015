// staging.cuh -- device helpers shared by the tiled kernels (device code only).
//
// Inputs are band-interleaved (rows, cols, bands): the bands of one pixel are contiguous, and
// a tile of consecutive pixels is one contiguous run of memory. A block owns a tile of
// blockDim.x pixels; its threads read that run with consecutive threads on consecutive
// addresses (coalesced) and store it in shared memory as rows of `stride` floats, one row per
// pixel. Then each thread walks its own pixel's row. `stride` is odd (bands, or bands + 1) so
// the 32 threads of a warp reading band b of 32 rows hit 32 different banks.
#pragma once
#include "pixel_math.cuh"

__device__ __forceinline__ float load_f32(const float* p) { return __ldg(p); }
__device__ __forceinline__ float load_f32(const unsigned short* p) { return (float)__ldg(p); }

// Number of pixels of this block's tile and the global index of its first pixel.
__device__ __forceinline__ int tile_pixels(long long npix, long long* p0) {
    *p0 = (long long)blockIdx.x * blockDim.x;
    const long long left = npix - *p0;
    return left < (long long)blockDim.x ? (int)left : (int)blockDim.x;
}

// Walks the np*nb elements of the tile that starts at element `base`, calling f(i, p, b) for
// element i of the run (pixel p of the tile, band b). Keeps (p, b) incrementally so there is
// no integer division per element.
template <class F>
__device__ __forceinline__ void for_tile_elements(int np, int nb, F f) {
    const int n = np * nb;
    const int dp = blockDim.x / nb, db = blockDim.x % nb;
    int p = threadIdx.x / nb, b = threadIdx.x % nb;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        f(i, p, b);
        p += dp;
        b += db;
        if (b >= nb) { b -= nb; ++p; }
    }
}

// Loads a float tile of an (npix, nb) array into shared memory rows (no transform).
__device__ __forceinline__ void stage_f32(const float* __restrict__ src, long long p0, int np,
                                          int nb, int stride, float* tile) {
    const float* s = src + p0 * nb;
    for_tile_elements(np, nb, [&](int i, int p, int b) { tile[p * stride + b] = __ldg(s + i); });
}


// Stages the flat-fielded tile: R = ((I - D) * scale) * factor with the per-band flags OR-ed
// into sflags[p] (shared-memory atomics, only when a band is flagged). dark == NULL means a
// float32 recording that passes through (R = I, non-finite bands flagged), as FlatField.apply.
// sflags must be initialised (static flags) and synchronised before the call.
template <class T>
__device__ __forceinline__ void stage_calibrated(
    const T* __restrict__ raw, const float* __restrict__ dark, const float* __restrict__ scale,
    float factor, float sat_level, long long p0, int np, int nb, int stride, float* tile,
    unsigned* sflags) {
    const long long base = p0 * nb;
    for_tile_elements(np, nb, [&](int i, int p, int b) {
        const long long e = base + i;
        const float x = load_f32(raw + e);
        float r;
        unsigned bits;
        if (dark) {
            r = flatfield_band(x, __ldg(dark + e), __ldg(scale + e), factor);
            bits = band_flags_raw(x, sat_level);
        } else {
            r = x;
            bits = band_flags_refl(x);
        }
        tile[p * stride + b] = r;
        if (bits) atomicOr(&sflags[p], bits);
    });
}

// Writes the staged tile back as (npix, nb) reflectance, all-NaN for flagged pixels.
__device__ __forceinline__ void write_reflectance(const float* tile, const unsigned* sflags,
                                                  long long p0, int np, int nb, int stride,
                                                  float* __restrict__ refl) {
    float* d = refl + p0 * nb;
    for_tile_elements(np, nb, [&](int i, int p, int b) {
        d[i] = sflags[p] ? __int_as_float(0x7fc00000) : tile[p * stride + b];
    });
}

__device__ __forceinline__ void init_flags(const unsigned char* __restrict__ static_flags,
                                           long long p0, int np, unsigned* sflags) {
    if ((int)threadIdx.x < np) sflags[threadIdx.x] = static_flags ? static_flags[p0 + threadIdx.x] : 0u;
}
