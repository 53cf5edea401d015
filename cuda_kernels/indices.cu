// indices.cu -- TIVITA-style indices from reflectance (edge.processing.indices.tivita_indices;
// FACTS.md, Holmer et al. 2018, constants unverified and passed in the parameter block):
// StO2 index from minima of the Savitzky-Golay 2nd derivative of A, NIR / THI / TWI from
// windowed means of A; clipped to [0, 1]; NaN where any band of A is non-finite or a window
// holds no band. Output: 4 planes (sto2_index, nir, thi, twi), each npix floats.
// Launch (Python wrapper only): as unmix.cu (tile of block pixels, stride = nb | 1).
#include "staging.cuh"

__constant__ ChainParams c_params;

extern "C" __global__ void indices_f32(const float* __restrict__ refl, long long npix,
                                       int stride, float* __restrict__ out) {
    extern __shared__ float tile[];
    const ChainParams& P = c_params;
    long long p0;
    const int np = tile_pixels(npix, &p0);
    stage_f32(refl, p0, np, P.nb, stride, tile);
    __syncthreads();
    if ((int)threadIdx.x >= np) return;
    const long long p = p0 + threadIdx.x;
    const float* row = tile + threadIdx.x * stride;
    const AbsFromR acc{row};
    bool finite = true;
    for (int b = 0; b < P.nb; ++b) finite = finite && hsi_isfinite(acc(b, P.eps));
    float msum[6], idx[4];
    window_sums(acc, P, msum);
    tivita_from_sums(acc, msum, P, idx);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j * npix + p] = finite ? idx[j] : hsi_nan();
}
