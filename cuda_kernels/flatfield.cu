// flatfield.cu -- flat-field calibration (edge.processing.flatfield.FlatField.apply):
// R = ((I - D) * scale) * factor per band with scale = rho * (t_W / t_ref) / (W - D_W)
// precomputed on the host (FACTS.md "Calibration practice"), factor = t_ref / t_I; flags =
// static flags | saturated (any raw band >= saturation); flagged pixels are all-NaN.
// Float32 recordings pass dark = scale = static_flags = NULL: R = I, a pixel with a
// non-finite band becomes all-NaN with FLAG_NONFINITE.
// Launch (Python wrapper only): block = pixels per tile (multiple of 32), grid =
// ceil(npix / block), dynamic shared = 4 * block * (stride + 1) bytes, stride = nb | 1.
#include "staging.cuh"

template <class T>
__device__ __forceinline__ void flatfield_impl(
    const T* __restrict__ raw, const float* __restrict__ dark, const float* __restrict__ scale,
    const unsigned char* __restrict__ static_flags, long long npix, int nb, int stride,
    float factor, float sat_level, float* __restrict__ refl, unsigned char* __restrict__ flags) {
    extern __shared__ float smem[];
    float* tile = smem;
    unsigned* sflags = reinterpret_cast<unsigned*>(smem + blockDim.x * stride);
    long long p0;
    const int np = tile_pixels(npix, &p0);
    init_flags(static_flags, p0, np, sflags);
    __syncthreads();
    stage_calibrated(raw, dark, scale, factor, sat_level, p0, np, nb, stride, tile, sflags);
    __syncthreads();
    write_reflectance(tile, sflags, p0, np, nb, stride, refl);
    if ((int)threadIdx.x < np) flags[p0 + threadIdx.x] = (unsigned char)sflags[threadIdx.x];
}

#define HSI_FLATFIELD_KERNEL(NAME, T)                                                        \
    extern "C" __global__ void NAME(                                                         \
        const T* __restrict__ raw, const float* __restrict__ dark,                           \
        const float* __restrict__ scale, const unsigned char* __restrict__ static_flags,     \
        long long npix, int nb, int stride, float factor, float sat_level,                   \
        float* __restrict__ refl, unsigned char* __restrict__ flags) {                       \
        flatfield_impl(raw, dark, scale, static_flags, npix, nb, stride, factor, sat_level,  \
                       refl, flags);                                                         \
    }

HSI_FLATFIELD_KERNEL(flatfield_u16, unsigned short)
HSI_FLATFIELD_KERNEL(flatfield_f32, float)
