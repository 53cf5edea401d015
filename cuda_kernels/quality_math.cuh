// quality_math.cuh -- the per-pixel arithmetic of the StO2 quality step (issue 14), as
// __host__ __device__ functions: the CUDA quality kernels (quality.cu via quality_tail.cuh)
// call them on rows staged in shared memory, the host emulation (tests/cuda/
// quality_emulation.cpp) runs them on the CPU. NumPy reference: edge/processing/quality.py
// (absorbance_variance + sto2_raw_variance, sto2_raw_variance_mixed, specular); the native
// CPU pass (cpu_quality.h) calls the same functions, so the formulas exist once.
//
// Every function walks the bands in order and keeps no per-band array of its own (a local
// array of HSI_MAX_BANDS floats would live in local memory on the GPU): callers hand in rows
// (absorbance, counts above dark) that already sit in shared memory or on the host stack.
#pragma once
#include "pixel_math.cuh"

// Validity bits of the quality step (edge/core/chain.py FLAG_*; tests compare them).
#define HSI_FLAG_LOW_BLOOD 32u
#define HSI_FLAG_UNCERTAIN 64u
#define HSI_FLAG_SPECULAR 128u
#define HSI_FLAG_STO2_ONLY (HSI_FLAG_LOW_BLOOD | HSI_FLAG_UNCERTAIN)

// Fused multiply-add of the dot products (cpu_chain.cpp defines HSI_FMA before including).
#ifndef HSI_QFMA
#ifdef HSI_FMA
#define HSI_QFMA(a, b, c) HSI_FMA(a, b, c)
#else
#define HSI_QFMA(a, b, c) fmaf((a), (b), (c))
#endif
#endif

// The darkest band of a reflectance row (quality.specular: min over bands), +inf when every
// band is NaN; the caller replaces it by NaN for calibration-flagged pixels.
HSI_HD float q_darkest(const float* r, int nb) {
    float m = INFINITY;
    for (int b = 0; b < nb; ++b) m = r[b] < m ? r[b] : m;
    return m;
}

// sum_b w[b] a[b] in band order.
HSI_HD float q_dot(const float* w, const float* a, int nb) {
    float acc = 0.0f;
    for (int b = 0; b < nb; ++b) acc = HSI_QFMA(w[b], a[b], acc);
    return acc;
}

// Counts above dark, at least 1 (quality.absorbance_variance: a band at the floor is flagged).
HSI_HD float q_signal(float x) { return x > 1.0f ? x : 1.0f; }

// Delta-method variance of raw StO2 co / (co + cd) without crosstalk (sto2_raw_variance of
// absorbance_variance): var(A_b) = (K + r^2 / d_b) / d_b with d_b = max(I_b - D_b, 1);
// po, pd: the HbO2 and Hb rows of the pseudo-inverse; x: I - D per band. NaN where
// co + cd <= 0.
HSI_HD float q_sto2_var(const float* po, const float* pd, const float* x, int nb, float co,
                        float cd, float kpe, float r2) {
    const float t = co + cd;
    if (!(t > 0.0f)) return hsi_nan();
    float qoo = 0.0f, qdd = 0.0f, qod = 0.0f;
    for (int b = 0; b < nb; ++b) {
        const float w = 1.0f / q_signal(x[b]);
        const float v = (kpe + r2 * w) * w;     // (K d + r^2) / d^2
        qoo += po[b] * po[b] * v;
        qdd += pd[b] * pd[b] * v;
        qod += po[b] * pd[b] * v;
    }
    const float num = cd * cd * qoo + co * co * qdd - 2.0f * co * cd * qod;
    return (num > 0.0f ? num : 0.0f) / (t * t) / (t * t);
}

// d s / d A_b over the band's signal: u_b = ((cd po_b - co pd_b) / t^2) / d_b.
HSI_HD float q_mixed_u(float po, float pd, float co, float cd, float t2, float d) {
    return ((cd * po - co * pd) / t2) / d;
}

// The same through a crosstalk correction x_out = x_in @ ct (sto2_raw_variance_mixed):
// var(s) = sum_k (K max(sum_b d_b c_t[b][k], 0) + r^2) (sum_b ct[k][b] u_b)^2;
// ct = pinv(C).T and c_t = C.T, (nb, nb) row-major. u: the u_b (q_mixed_u) precomputed by a
// caller with room for them (the CPU), or NULL: recomputed per k, the same float32
// operations each time (the GPU, which keeps no per-band array).
HSI_HD float q_sto2_var_mixed(const float* po, const float* pd, const float* x, int nb,
                              float co, float cd, float kpe, float r2, const float* ct,
                              const float* c_t, const float* u = nullptr) {
    const float t = co + cd;
    if (!(t > 0.0f)) return hsi_nan();
    const float t2 = t * t;
    float acc = 0.0f;
    for (int k = 0; k < nb; ++k) {
        float z = 0.0f, xin = 0.0f;
        for (int b = 0; b < nb; ++b) {
            const float d = q_signal(x[b]);
            const float ub = u ? u[b] : q_mixed_u(po[b], pd[b], co, cd, t2, d);
            z = HSI_QFMA(ct[k * nb + b], ub, z);
            xin = HSI_QFMA(d, c_t[b * nb + k], xin);
        }
        const float vin = (xin > 0.0f ? xin : 0.0f) * kpe + r2;
        acc += vin * z * z;
    }
    return acc;
}

// quality.pixel_flags for one pixel: FLAG_SPECULAR where the darkest band is above
// spec_level (pixels with no flag but unmix_invalid), then FLAG_LOW_BLOOD where THb is below
// thb_min (pixels with no flag). A rule that is off passes +inf / -inf.
HSI_HD unsigned q_pixel_flags(unsigned f, float darkest, float thb, float spec_level,
                              float thb_min) {
    if ((f & ~HSI_FLAG_UNMIX_INVALID) == 0u && darkest > spec_level) f |= HSI_FLAG_SPECULAR;
    if (f == 0u && thb < thb_min) f |= HSI_FLAG_LOW_BLOOD;
    return f;
}

// quality.calibration_slope: the table's centred-difference slope at the knot interval
// Sto2Calibration.apply uses for x: ii = clip(floor((x - x0) / dx), 0, K - 2); NaN where x
// is not finite.
// slopes: (R, K - 1) row-major, each row's interval slopes (cuda_quality.knot_slopes); with a
// THb axis (R >= 2) the rows blend like the table's (sto2_row): s_j + g * (s_j+1 - s_j), two
// roundings; NaN where thb is not finite. R = 1 ignores thb.
HSI_HD float q_slope(float x, float thb, const float* slopes, const ChainParams& P) {
    if (!hsi_isfinite(x)) return hsi_nan();
    float i = floorf((x - P.table_x0) / P.table_dx);
    const float top = (float)(P.n_table - 2);
    i = i < 0.0f ? 0.0f : (i > top ? top : i);
    const int ii = (int)i;
    if (P.n_rows <= 1) return slopes[ii];
    if (!hsi_isfinite(thb)) return hsi_nan();
    const AxisPos r = sto2_row(thb, P);
    const int a = r.i * (P.n_table - 1) + ii;
    return lerp_rn(slopes[a], slopes[a + P.n_table - 1], r.f);
}
