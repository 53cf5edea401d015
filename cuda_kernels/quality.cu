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
// It also applies the per-pixel validity rules (specular, low blood) to the chain's flags.
// Inputs: refl (npix, nb) float32 (NaN rows where flagged), flags (npix) uint8 (updated),
// maps (6, npix) the chain's, raw (npix, nb) uint16 and dark (npix, nb) float32 or both NULL
// (no counts: var not written); ext (m, nb); ct, c_t (nb, nb) or NULL; spec_level, thb_min
// (+inf / -inf: rule off). Outputs: s_raw, var (npix); ext_out (m, npix); ok (npix) uint8
// (QualityOut: bit 0 enters the spatial step, bit 1 takes its value, bit 2 has an estimate).
// Launch (cuda_quality_launch.py only): block = pixels per tile, grid = ceil(npix / block),
// dynamic shared = 4 * block * stride (x2 with counts), stride = nb | 1.
//
// bilateral_f32: the joint-bilateral spatial step as a 2-D tile: a (bx + 2r) x (by + 2r)
// tile with its halo staged in shared memory (value, variance, ok, guide, tc term planes),
// then one output pixel per thread. Inputs planar: s, var (npix, var may be NULL), ok (npix)
// uint8, guide (G, npix), terms (mt, npix) of which planes t0 .. t0 + tc - 1 (tc <=
// HSI_BIL_TC); ks (2r + 1)^2 spatial weights. Outputs s_out, var_out (npix, NULL: not
// written) and t_out (mt, npix), NaN where not ok.
// Launch (cuda_quality_launch.py only): block (bx, by), grid ceil(cols / bx) x ceil(rows / by),
// dynamic shared = 4 * (bx + 2r) (by + 2r) (3 + G + tc).
//
// quality_finish_f32/f16: the frame-wide rest of finish_quality, per pixel once the spatial
// step is done (calibration curve, its slope and sigma, FLAG_UNCERTAIN, the masks, the
// network input's map channels), so only the final maps leave the device. The plan's
// temporal step and a fitted guide-contrast model error run on the host instead
// (cuda_quality.py).
#include <cuda_fp16.h>
#include "staging.cuh"

__constant__ ChainParams c_params;

// (Declared before quality_tail.cuh: its template finds this overload at instantiation.)
__device__ __forceinline__ void store_out(__half* p, float v) { *p = __float2half_rn(v); }
#include "quality_tail.cuh"

extern "C" __global__ void quality_pixel(
    const float* __restrict__ refl, unsigned char* __restrict__ flags,
    const float* __restrict__ maps, const unsigned short* __restrict__ raw,
    const float* __restrict__ dark, long long npix, int stride, const float* __restrict__ ext,
    int m, float kpe, float r2, const float* __restrict__ ct, const float* __restrict__ c_t,
    float spec_level, float thb_min, float* __restrict__ s_raw, float* __restrict__ var,
    float* __restrict__ ext_out, unsigned char* __restrict__ ok) {
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
    const QualityOut out{s_raw, raw ? var : nullptr, ext_out, ok};
    quality_thread(tr + threadIdx.x * stride, raw ? tx + threadIdx.x * stride : nullptr,
                   p0 + threadIdx.x, npix, P, flags, maps, ext, m, kpe, r2, ct, c_t,
                   spec_level, thb_min, out);
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

// quality_finish_*: one thread per pixel (finish_thread). Inputs as FinishIn (planes of npix;
// var, s_f, var_f, t_f may be NULL; t_raw, quality_pixel's index terms, is given with t_f);
// flags (npix) and maps (6, npix) updated in place; sigma, sto2_all (npix) written; packed (channels, npix): its map channels rewritten, or NULL.
// Launch (cuda_quality_launch.py only): block 256, grid ceil(npix / 256).
#define HSI_FINISH_KERNEL(NAME, OUT)                                                           \
    extern "C" __global__ void NAME(                                                           \
        const float* __restrict__ s_raw, const float* __restrict__ var,                        \
        const float* __restrict__ s_f, const float* __restrict__ var_f,                        \
        const float* __restrict__ t_f, const float* __restrict__ t_raw,                        \
        const unsigned char* __restrict__ ok, int n_terms, int n1,                             \
        const float* __restrict__ slopes, float max_sigma, float model2,                       \
        long long npix, unsigned char* __restrict__ flags, float* __restrict__ maps,           \
        float* __restrict__ sigma, float* __restrict__ sto2_all, OUT* __restrict__ packed) {   \
        const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;                  \
        if (p >= npix) return;                                                                 \
        const FinishIn F{s_raw, var, s_f, var_f, t_f, t_raw, ok, n_terms, n1, slopes,         \
                         max_sigma, model2};                                                   \
        finish_thread(p, npix, c_params, F, flags, maps, sigma, sto2_all, packed);             \
    }

HSI_FINISH_KERNEL(quality_finish_f32, float)
HSI_FINISH_KERNEL(quality_finish_f16, __half)
