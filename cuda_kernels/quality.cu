// quality.cu -- the StO2 quality step on the GPU (issue 14; NumPy reference
// edge/processing/quality.py and spatial.py, native twin cpu_quality.h / hsi_cpu_bilateral).
//
// quality_pixel: a second per-pixel pass after chain.cu, from the chain's reflectance and
// flags and the frame's raw counts -- raw StO2, its delta-method variance (through the
// mosaic's crosstalk correction when ct != NULL), the darkest band, and m linear terms of A
// (the spatial step's guide, then the StO2 index's A''). A block stages blockDim.x
// consecutive pixels of reflectance (and of I - D) through shared memory with coalesced
// loads, as chain.cu does; each thread then walks its own rows. Not fused into chain.cu:
// MEMORY.md gives the bytes and why.
// Inputs: refl (npix, nb) float32 (NaN rows where flagged), flags (npix) uint8, raw (npix, nb)
// uint16 and dark (npix, nb) float32 or both NULL (no counts: var not written); ext (m, nb);
// ct, c_t (nb, nb) or NULL. Outputs: s_raw, var, darkest (npix); ext_out (m, npix).
// Launch (cuda_quality.py only): block = pixels per tile, grid = ceil(npix / block),
// dynamic shared = 4 * block * stride (x2 with counts), stride = nb | 1.
//
// bilateral_f32: the joint-bilateral spatial step as a 2-D tile: a (bx + 2r) x (by + 2r)
// tile with its halo staged in shared memory (value, variance, ok, guide, tc term planes),
// then one output pixel per thread. Inputs planar: s, var (npix, var may be NULL), ok (npix)
// uint8, guide (G, npix), terms (mt, npix) of which planes t0 .. t0 + tc - 1 (tc <=
// HSI_BIL_TC); ks (2r + 1)^2 spatial weights. Outputs s_out, var_out (npix, NULL: not
// written) and t_out (mt, npix), NaN where not ok.
// Launch (cuda_quality.py only): block (bx, by), grid ceil(cols / bx) x ceil(rows / by),
// dynamic shared = 4 * (bx + 2r) (by + 2r) (3 + G + tc).
#include "staging.cuh"

__constant__ ChainParams c_params;

#include "quality_tail.cuh"

extern "C" __global__ void quality_pixel(
    const float* __restrict__ refl, const unsigned char* __restrict__ flags,
    const unsigned short* __restrict__ raw, const float* __restrict__ dark, long long npix,
    int stride, const float* __restrict__ ext, int m, float kpe, float r2,
    const float* __restrict__ ct, const float* __restrict__ c_t, float* __restrict__ s_raw,
    float* __restrict__ var, float* __restrict__ darkest, float* __restrict__ ext_out) {
    extern __shared__ float smem[];
    const ChainParams& P = c_params;
    long long p0;
    const int np = tile_pixels(npix, &p0);
    float* tr = smem;
    float* tx = raw ? smem + blockDim.x * stride : nullptr;
    stage_f32(refl, p0, np, P.nb, stride, tr);
    if (raw) stage_signal(raw, dark, p0, np, P.nb, stride, tx);
    __syncthreads();
    if ((int)threadIdx.x >= np) return;
    const QualityOut out{s_raw, raw ? var : nullptr, darkest, ext_out};
    quality_thread(tr + threadIdx.x * stride, raw ? tx + threadIdx.x * stride : nullptr,
                   flags[p0 + threadIdx.x], p0 + threadIdx.x, npix, P, ext, m, kpe, r2, ct,
                   c_t, out);
}

extern "C" __global__ void bilateral_f32(
    const float* __restrict__ s, const float* __restrict__ var,
    const unsigned char* __restrict__ ok, const float* __restrict__ guide,
    const float* __restrict__ terms, int rows, int cols, int G, int t0, int tc, int radius,
    float inv_2h2, const float* __restrict__ ks, float* __restrict__ s_out,
    float* __restrict__ var_out, float* __restrict__ t_out) {
    extern __shared__ float smem[];
    const BilTile B = bil_tile(smem, radius, G);
    bil_stage(s, var, ok, guide, terms, rows, cols, G, t0, tc, radius, B);
    __syncthreads();
    bil_thread(B, rows, cols, G, t0, tc, radius, inv_2h2, ks, s_out, var_out, t_out);
}
