// absorbance.cu -- A = -ln(max(R, eps)) element-wise (DESIGN.md "Data conventions").
// Launch (Python wrapper only): 1-D grid-stride loop over n elements, any grid/block.
#include "pixel_math.cuh"

extern "C" __global__ void absorbance_f32(const float* __restrict__ refl, long long n, float eps,
                                          float* __restrict__ absorb) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        absorb[i] = absorbance(__ldg(refl + i), eps);
}
