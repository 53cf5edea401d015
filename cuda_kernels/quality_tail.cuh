// quality_tail.cuh -- what the threads of quality.cu do between and after their barriers:
// the staging of the per-pixel pass, its per-thread work, and the 2-D tile of the spatial
// step (stage with halo, then one output pixel per thread).
//
// Separate from quality.cu, as chain_tail.cuh is from chain.cu, so the host emulation
// (tests/cuda/quality_emulation.cpp) runs this very code block by block on the CPU with the
// CUDA built-ins emulated and NaN-poisoned shared memory; quality.cu keeps only the
// __shared__ declaration, the barriers and the entry points. Needs staging.cuh first.
#pragma once
#include "quality_math.cuh"

// Terms of the spatial step one launch averages: their accumulators stay in registers
// (fully unrolled, compile-time indices); more terms take more launches (cuda_quality.py).
#define HSI_BIL_TC 6

// ---- per-pixel pass (quality_pixel) -------------------------------------------------------

// Stages I - D (float32, as np.subtract(raw, dark, dtype=float32)) of the tile.
__device__ __forceinline__ void stage_signal(const unsigned short* __restrict__ raw,
                                             const float* __restrict__ dark, long long p0,
                                             int np, int nb, int stride, float* tile) {
    const long long base = p0 * nb;
    for_tile_elements(np, nb, [&](int i, int p, int b) {
        tile[p * stride + b] = load_f32(raw + base + i) - __ldg(dark + base + i);
    });
}

// Outputs of the per-pixel pass: planes of npix (ext: m planes).
struct QualityOut {
    float* s_raw;     // raw StO2, NaN where the chain flagged the pixel
    float* var;       // its delta-method variance, or NULL (no counts)
    float* darkest;   // darkest band; NaN for calibration-flagged pixels
    float* ext;       // (m, npix): the guide's band-group means, then the index's A'' terms
};

// One pixel: row = its staged reflectance (turned into absorbance in place: the thread owns
// its row), x = its staged I - D or NULL, f = the chain's flags. ext (m, nb) row-major;
// ct/c_t: the crosstalk correction or NULL (cpu_quality.h, edge/processing/quality.py).
HSI_HD void quality_thread(float* row, const float* x, unsigned f, long long p, long long npix,
                           const ChainParams& P, const float* ext, int m, float kpe, float r2,
                           const float* ct, const float* c_t, const QualityOut& out) {
    const int nb = P.nb;
    const float nan = hsi_nan();
    // The darkest band also for unmix_invalid pixels (a highlight can push the unmixing out
    // of its domain); NaN where the reflectance itself is unusable.
    out.darkest[p] = (f & ~HSI_FLAG_UNMIX_INVALID) ? nan : q_darkest(row, nb);
    if (f) {
        out.s_raw[p] = nan;
        if (out.var) out.var[p] = nan;
        for (int j = 0; j < m; ++j) out.ext[j * npix + p] = nan;
        return;
    }
    for (int b = 0; b < nb; ++b) row[b] = absorbance(row[b], P.eps);
    const float* po = P.pinv + P.i_hbo2 * HSI_MAX_BANDS;
    const float* pd = P.pinv + P.i_hb * HSI_MAX_BANDS;
    const float co = q_dot(po, row, nb), cd = q_dot(pd, row, nb);
    out.s_raw[p] = co / (co + cd);
    for (int j = 0; j < m; ++j) out.ext[j * npix + p] = q_dot(ext + j * nb, row, nb);
    if (!out.var) return;
    out.var[p] = ct ? q_sto2_var_mixed(po, pd, x, nb, co, cd, kpe, r2, ct, c_t)
                    : q_sto2_var(po, pd, x, nb, co, cd, kpe, r2);
}

// ---- spatial step (bilateral_f32) ---------------------------------------------------------

// The block's tile in shared memory: (blockDim.x + 2r) x (blockDim.y + 2r) pixels, planar:
// value, variance, ok (1/0), G guide planes, tc term planes.
struct BilTile {
    int tw, th, n;
    float *s, *v, *ok, *g, *t;
};

HSI_HD BilTile bil_tile(float* smem, int radius, int G) {
    BilTile B;
    B.tw = (int)blockDim.x + 2 * radius;
    B.th = (int)blockDim.y + 2 * radius;
    B.n = B.tw * B.th;
    B.s = smem;
    B.v = B.s + B.n;
    B.ok = B.v + B.n;
    B.g = B.ok + B.n;
    B.t = B.g + G * B.n;
    return B;
}

// Stages every slot of the tile, halo included: a pixel outside the frame or not ok gets
// ok = 0 (weight 0, as bilateral_filter's zero padding). s, var, ok: (npix); guide (G, npix);
// terms (mt, npix), this launch's planes t0 .. t0 + tc - 1; var/terms may be NULL.
HSI_HD void bil_stage(const float* __restrict__ s, const float* __restrict__ var,
                      const unsigned char* __restrict__ ok, const float* __restrict__ guide,
                      const float* __restrict__ terms, int rows, int cols, int G, int t0,
                      int tc, int radius, const BilTile& B) {
    const long long npix = (long long)rows * cols;
    const int nthreads = (int)(blockDim.x * blockDim.y);
    const int tid = (int)(threadIdx.y * blockDim.x + threadIdx.x);
    const int x0 = (int)(blockIdx.x * blockDim.x) - radius;
    const int y0 = (int)(blockIdx.y * blockDim.y) - radius;
    for (int i = tid; i < B.n; i += nthreads) {
        const int ty = i / B.tw, tx = i - ty * B.tw;
        const int gy = y0 + ty, gx = x0 + tx;
        const bool in = gy >= 0 && gy < rows && gx >= 0 && gx < cols;
        const long long j = in ? (long long)gy * cols + gx : 0;
        const bool k = in && ok[j];
        B.ok[i] = k ? 1.0f : 0.0f;
        B.s[i] = k ? s[j] : 0.0f;
        B.v[i] = (k && var) ? var[j] : 0.0f;
        for (int c = 0; c < G; ++c) B.g[c * B.n + i] = k ? guide[c * npix + j] : 0.0f;
        for (int c = 0; c < tc; ++c)
            B.t[c * B.n + i] = k ? terms[(t0 + c) * npix + j] : 0.0f;
    }
}

// One output pixel (edge/processing/spatial.py bilateral_filter without inverse-variance
// weights; the same float32 operations in the same order, dy outer, dx inner):
// a = exp(-sum_k (g_jk - g_ik)^2 / (2 h^2 G)) * ks; s' = sum a s / sum a,
// var' = sum a^2 var / (sum a)^2, t' = sum a t / sum a; NaN where the pixel is not ok.
// ks: (2r+1)^2 spatial weights (float32 of the reference's exp); inv_2h2 = 1 / (2 h^2 G).
// s_out/var_out NULL: not written (a later launch for further terms).
HSI_HD void bil_thread(const BilTile& B, int rows, int cols, int G, int t0, int tc,
                       int radius, float inv_2h2, const float* __restrict__ ks,
                       float* __restrict__ s_out, float* __restrict__ var_out,
                       float* __restrict__ t_out) {
    const int x = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    const int y = (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (x >= cols || y >= rows) return;
    const long long npix = (long long)rows * cols;
    const long long i = (long long)y * cols + x;
    const int ci = ((int)threadIdx.y + radius) * B.tw + (int)threadIdx.x + radius;
    if (B.ok[ci] == 0.0f) {
        const float nan = hsi_nan();
        if (s_out) s_out[i] = nan;
        if (var_out) var_out[i] = nan;
        for (int c = 0; c < tc; ++c) t_out[(t0 + c) * npix + i] = nan;
        return;
    }
    float tacc[HSI_BIL_TC];
#pragma unroll
    for (int c = 0; c < HSI_BIL_TC; ++c) tacc[c] = 0.0f;
    float aw = 0.0f, ws = 0.0f, w2v = 0.0f;
    const int w = 2 * radius + 1;
    for (int dy = -radius; dy <= radius; ++dy) {
        for (int dx = -radius; dx <= radius; ++dx) {
            const int cj = ci + dy * B.tw + dx;
            if (B.ok[cj] == 0.0f) continue;      // weight 0: adds nothing to any sum
            float d2 = 0.0f;
            for (int k = 0; k < G; ++k) {
                const float d = B.g[k * B.n + cj] - B.g[k * B.n + ci];
                d2 += d * d;
            }
            const float a = expf(d2 * -inv_2h2) * ks[(dy + radius) * w + dx + radius];
            aw += a;
            ws += a * B.s[cj];
            w2v += a * a * B.v[cj];
#pragma unroll
            for (int c = 0; c < HSI_BIL_TC; ++c)
                if (c < tc) tacc[c] += a * B.t[c * B.n + cj];
        }
    }
    if (s_out) s_out[i] = ws / aw;
    if (var_out) var_out[i] = w2v / (aw * aw);
#pragma unroll
    for (int c = 0; c < HSI_BIL_TC; ++c)
        if (c < tc) t_out[(t0 + c) * npix + i] = tacc[c] / aw;
}
