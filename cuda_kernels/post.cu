// post.cu -- post-processing of the engine output (edge.processing.post): per-pixel argmax
// over class scores (NCHW logits (K, npix), float32 or float16; ties -> lowest index, NaN
// like np.argmax) and the colour overlay of the labels on an RGB image, invalid pixels
// hatched in two greys. The class colours live in constant memory (c_colours, RGB triplets).
// Launch (Python wrapper only): 1-D grid-stride loops over pixels, any grid/block.
#include <cuda_fp16.h>
#include "pixel_math.cuh"

__constant__ unsigned char c_colours[HSI_MAX_CLASSES * 3];

__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ void argmax_impl(const T* __restrict__ logits, long long npix,
                                            int n_classes, unsigned char* __restrict__ labels) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < npix; p += step)
        labels[p] = (unsigned char)argmax_scores(logits + p, npix, n_classes);
}

extern "C" __global__ void argmax_f32(const float* __restrict__ logits, long long npix,
                                      int n_classes, unsigned char* __restrict__ labels) {
    argmax_impl(logits, npix, n_classes, labels);
}

extern "C" __global__ void argmax_f16(const __half* __restrict__ logits, long long npix,
                                      int n_classes, unsigned char* __restrict__ labels) {
    argmax_impl(logits, npix, n_classes, labels);
}

// rgb_out = round(a1 * rgb + a2 * colour[label]) (a1 = float32(1 - alpha), a2 =
// float32(alpha), from the host); pixels with invalid[p] != 0 (when given) get the hatch
// colour hatch0/hatch1 (packed 0xRRGGBB) of stripe ((row + col) // 4) % 2.
extern "C" __global__ void overlay_u8(const unsigned char* __restrict__ labels,
                                      const unsigned char* __restrict__ rgb,
                                      const unsigned char* __restrict__ invalid, long long npix,
                                      long long cols, float a1, float a2, unsigned hatch0,
                                      unsigned hatch1, unsigned char* __restrict__ rgb_out) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < npix; p += step) {
        if (invalid && invalid[p]) {
            const unsigned h = hatch_stripe(p / cols, p % cols) ? hatch1 : hatch0;
#pragma unroll
            for (int ch = 0; ch < 3; ++ch) rgb_out[p * 3 + ch] = (unsigned char)(h >> (16 - 8 * ch));
            continue;
        }
        const int l = labels[p];
#pragma unroll
        for (int ch = 0; ch < 3; ++ch)
            rgb_out[p * 3 + ch] = blend_u8(rgb[p * 3 + ch], c_colours[l * 3 + ch], a1, a2);
    }
}
