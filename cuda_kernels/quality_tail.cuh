// quality_tail.cuh -- what the threads of quality.cu do between and after their barriers:
// the staging of the per-pixel pass, its per-thread work, and the 2-D tile of the spatial
// step (stage with halo, then one output pixel per thread).
//
// Separate from quality.cu, as chain_tail.cuh is from chain.cu, so the host emulation
// (tests/cuda/quality_emulation.cpp) runs this very code block by block on the CPU with the
// CUDA built-ins emulated and NaN-poisoned shared memory; quality.cu keeps only the
// __shared__ declaration, the barriers and the entry points. Needs staging.cuh first.
#pragma once
#include "chain_tail.cuh"      // select_map, store_out (the includer declares the __half one)
#include "quality_math.cuh"

// Terms of the spatial step one launch averages: their accumulators stay in registers
// (fully unrolled, compile-time indices); more terms take more launches (cuda_quality_launch.py).
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
    float* s_raw;          // raw StO2, NaN where flagged other than low blood / uncertain
    float* var;            // its delta-method variance, or NULL (no counts)
    float* ext;            // (m, npix): the guide's band-group means, then the index's A''
    unsigned char* ok;     // bit 2: an estimate (no flag but low blood: finish_quality's
                           // est_ok); bit 1: no flag at all, it takes the spatial step's value
                           // (spatial_ok); bit 0: and it enters the step (finite variance > 0)
};

// One pixel: row = its staged reflectance (turned into absorbance in place: the thread owns
// its row), x = its staged I - D or NULL. flags (npix) holds the chain's flags and gets the
// specular and low-blood bits; maps (6, npix): the chain's, for THb. ext (m, nb) row-major;
// ct/c_t: the crosstalk correction or NULL (cpu_quality.h, edge/processing/quality.py);
// spec_level / thb_min: the validity rules (+inf / -inf: off).
HSI_HD void quality_thread(float* row, const float* x, long long p, long long npix,
                           const ChainParams& P, unsigned char* flags, const float* maps,
                           const float* ext, int m, float kpe, float r2, const float* ct,
                           const float* c_t, float spec_level, float thb_min,
                           const QualityOut& out) {
    const int nb = P.nb;
    const float nan = hsi_nan();
    const unsigned f0 = flags[p];
    // The darkest band also for unmix_invalid pixels (a highlight can push the unmixing out
    // of its domain); NaN where the reflectance itself is unusable.
    const float darkest = (f0 & ~HSI_FLAG_UNMIX_INVALID) ? nan : q_darkest(row, nb);
    float s = nan, v = nan;
    if (f0) {
        for (int j = 0; j < m; ++j) out.ext[j * npix + p] = nan;
    } else {
        for (int b = 0; b < nb; ++b) row[b] = absorbance(row[b], P.eps);
        const float* po = P.pinv + P.i_hbo2 * HSI_MAX_BANDS;
        const float* pd = P.pinv + P.i_hb * HSI_MAX_BANDS;
        const float co = q_dot(po, row, nb), cd = q_dot(pd, row, nb);
        s = co / (co + cd);
        for (int j = 0; j < m; ++j) out.ext[j * npix + p] = q_dot(ext + j * nb, row, nb);
        if (out.var)
            v = ct ? q_sto2_var_mixed(po, pd, x, nb, co, cd, kpe, r2, ct, c_t)
                   : q_sto2_var(po, pd, x, nb, co, cd, kpe, r2);
    }
    const unsigned f = q_pixel_flags(f0, darkest, maps[MAP_THB * npix + p], spec_level,
                                     thb_min);
    flags[p] = (unsigned char)f;
    if (f & ~HSI_FLAG_STO2_ONLY) s = nan;
    out.s_raw[p] = s;
    if (out.var) out.var[p] = v;
    // A low-blood pixel keeps its own estimate but enters no neighbour's mean: its noise is
    // many times theirs and the step's weights are equal (finish_quality).
    const bool est = (f & ~HSI_FLAG_LOW_BLOOD) == 0u && hsi_isfinite(s);
    const bool avg = est && f == 0u;
    const bool enters = avg && (!out.var || (hsi_isfinite(v) && v > 0.0f));
    out.ok[p] = (unsigned char)((est ? 4u : 0u) | (avg ? 2u : 0u) | (enters ? 1u : 0u));
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
// terms (mt, npix), this launch's planes t0 .. t0 + tc - 1; var/terms may be NULL. ok: bit 0
// (quality_thread's, or 0/1 from the host).
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
        const bool k = in && (ok[j] & 1u);
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

// ---- finish (quality_finish_*) ------------------------------------------------------------

// What the finish reads besides the chain's flags and maps (planes of npix).
struct FinishIn {
    const float* s_raw;       // quality_thread's
    const float* var;         // or NULL (no counts: no sigma, no FLAG_UNCERTAIN)
    const float* s_f;         // the spatial step's value, or NULL (no spatial step)
    const float* var_f;       // its variance, or NULL
    const float* t_f;         // its index terms (n_terms, npix), or NULL
    const float* t_raw;       // quality_thread's own index terms (n_terms, npix: the ext
                              // planes after the guide's), read for low-blood pixels; or NULL
    const unsigned char* ok;  // quality_thread's (bit 2: est_ok, bit 1: spatial_ok)
    int n_terms, n1;          // terms, of which the first n1 are the r1 window's
    const float* slopes;      // each table row's knot-interval slopes (n_rows, n_table - 1)
    float max_sigma;          // FLAG_UNCERTAIN above it (+inf: off)
    float model2;             // model_sigma^2 added in quadrature (0: none)
};

// min over planes [lo, hi) of t[c * stride] as np.min (NaN propagates); hi > lo.
HSI_HD float q_min_terms(const float* t, long long stride, int lo, int hi) {
    float m = t[lo * stride];
    for (int c = lo + 1; c < hi; ++c) {
        const float x = t[c * stride];
        if (m == m && (x != x || x < m)) m = x;
    }
    return m;
}

// One pixel of edge.processing.quality.finish_quality (without its temporal step and the
// guide-contrast model error, which run on the host: cuda_quality.py decides): the spatial
// step's values where spatial_ok (no flag), a low-blood pixel's own raw value and variance,
// the StO2 index from the averaged terms (a low-blood pixel's from its own: t_raw, given
// whenever t_f is), sto2_all by the table, sigma = slope * sqrt(var) (+ model term),
// FLAG_UNCERTAIN, sto2 NaN where flagged, every map NaN where specular; then the packed
// input's map channels (pack_map_value) when packed.
template <class OutT>
HSI_HD void finish_thread(long long p, long long npix, const ChainParams& P, const FinishIn& F,
                          unsigned char* flags, float* maps, float* sigma, float* sto2_all,
                          OutT* packed) {
    const float nan = hsi_nan();
    unsigned f = flags[p];
    const bool est = (F.ok[p] & 4u) != 0u;
    const bool avg = (F.ok[p] & 2u) != 0u;
    float s = F.s_raw[p], v = F.var ? F.var[p] : nan;
    if (F.s_f && avg) {
        s = F.s_f[p];
        if (F.var) v = F.var_f[p];
    }
    float m[HSI_N_MAPS];
#pragma unroll
    for (int j = 0; j < HSI_N_MAPS; ++j)
        m[j] = (f & HSI_FLAG_SPECULAR) ? nan : maps[j * npix + p];
    if (F.t_f) {
        float idx = nan;
        if (est) {
            const float* t = (avg ? F.t_f : F.t_raw) + p;
            const float lo1 = q_min_terms(t, npix, 0, F.n1);
            const float lo2 = q_min_terms(t, npix, F.n1, F.n_terms);
            const float r1 = lo1 / P.s1, r2 = lo2 / P.s2;
            idx = index_ratio(r1, r1 + r2, 0.0f, 1.0f);
        }
        m[MAP_STO2_INDEX] = idx;
    }
    const bool has = hsi_isfinite(s) &&
                     (f & ~(HSI_FLAG_STO2_ONLY | HSI_FLAG_SPECULAR)) == 0u;
    // The pixel's own THb (the chain's map, before the specular NaN) picks the table's row.
    const float thb = maps[MAP_THB * npix + p];
    const float all = has ? sto2_calibrate(s, thb, P) : nan;
    float sg = nan;
    if (F.var) {
        const float ns = has ? q_slope(s, thb, F.slopes, P) * sqrtf(v) : nan;
        if (f == 0u && ns > F.max_sigma) f |= HSI_FLAG_UNCERTAIN;
        sg = F.model2 > 0.0f ? sqrtf(add_rn(mul_rn(ns, ns), F.model2)) : ns;
    }
    m[MAP_STO2] = f == 0u ? all : nan;
    flags[p] = (unsigned char)f;
#pragma unroll
    for (int j = 0; j < HSI_N_MAPS; ++j) maps[j * npix + p] = m[j];
    sigma[p] = sg;
    sto2_all[p] = all;
    if (!packed) return;
    for (int j = 0; j < P.n_maps; ++j)
        store_out(packed + (P.n_spec + j) * npix + p,
                  pack_map_value(select_map(m, P.map_ids[j])));
}
