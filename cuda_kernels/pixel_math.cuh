// pixel_math.cuh -- the per-pixel arithmetic of the hsi-edge chain, as __host__ __device__
// inline functions. The kernels call these on spectra staged in shared memory; the host shim
// (tests/cuda/host_shim.cpp) calls the very same functions on the CPU so CI checks the math
// against the NumPy reference (edge.processing) without a GPU.
//
// Each function mirrors one reference function, operation for operation where rounding
// matters (named next to it). Formulas: FACTS.md "Calibration practice" (flat field),
// DESIGN.md "Data conventions" (A = -ln max(R, eps)), FACTS.md "Tissue optics" (least squares
// via the pseudo-inverse), "TIVITA-style indices" (Holmer et al. 2018; constants unverified,
// passed as parameters) and "htc models" (L1 normalisation, 0/0 -> 0).
#pragma once
#include "common.cuh"

// NaN-aware helpers: fminf/fmaxf return the non-NaN operand, numpy propagates NaN.
HSI_HD bool hsi_isnan(float x) { return x != x; }
HSI_HD bool hsi_isfinite(float x) { return x - x == 0.0f; }
HSI_HD float hsi_nan() {
#ifdef __CUDA_ARCH__
    return __int_as_float(0x7fc00000);
#else
    return NAN;
#endif
}
// Float32 product / sum rounded on their own, never fused into an FMA. nvcc contracts
// a * b + c into one fused multiply-add by default (--fmad=true), which rounds once instead of
// twice and so differs from NumPy in the last bit; the outputs the tests compare exactly (StO2
// table, overlay) use these. On the host a volatile store forces the rounding even when g++
// contracts (-ffp-contract=fast -mfma: tests/gpu/test_gpu_run_prep.py builds the host shim so).
HSI_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    volatile float r = a * b;
    return r;
#endif
}
HSI_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    volatile float r = a + b;
    return r;
#endif
}

// np.clip(x, 0, 1): keeps NaN.
HSI_HD float clip01(float x) { return hsi_isnan(x) ? x : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }

// ---- flat field (FlatField.apply): R = ((I - D) * scale) * factor ----
// scale = rho * (t_W / t_ref) / (W - D_W), NaN where the pixel is statically flagged;
// factor = t_ref / t_I (1 at the reference exposure). A pixel with any flag becomes all-NaN
// after the whole spectrum is seen (the kernels do that after staging).
HSI_HD float flatfield_band(float raw, float dark, float scale, float factor) {
    return ((raw - dark) * scale) * factor;
}
// Per-band flag bits: raw counts (saturation) and float32 recordings (non-finite).
HSI_HD unsigned band_flags_raw(float raw, float sat_level) {
    return raw >= sat_level ? HSI_FLAG_SATURATED : 0u;
}
HSI_HD unsigned band_flags_refl(float r) { return hsi_isfinite(r) ? 0u : HSI_FLAG_NONFINITE; }

// ---- absorbance (unmixing.absorbance): A = -ln(max(R, eps)); NaN stays NaN ----
HSI_HD float absorbance(float r, float eps) {
    if (hsi_isnan(r)) return r;
    return -logf(r < eps ? eps : r);
}

// Band accessors: the chain reads A either from an absorbance array or from reflectance.
// above_floor(b, eps): band b is not at the absorbance floor, i.e. R > eps (NaN counts as
// above: the finiteness test catches it). Unmixer.maps / NumpyBackend.run test R <= eps.
struct AbsFromA {
    const float* a;
    HSI_HD float operator()(int b, float) const { return a[b]; }
    HSI_HD bool above_floor(int b, float eps) const { return !(a[b] >= -logf(eps)); }
};
struct AbsFromR {
    const float* r;
    HSI_HD float operator()(int b, float eps) const { return absorbance(r[b], eps); }
    HSI_HD bool above_floor(int b, float eps) const { return !(r[b] <= eps); }
};

// Correctly rounded float32 square root whatever the nvcc flags (-use_fast_math would make
// sqrtf approximate): np.sqrt on float32 and the host's sqrtf round correctly too.
HSI_HD float sqrt_rn(float x) {
#ifdef __CUDA_ARCH__
    return __fsqrt_rn(x);
#else
    return sqrtf(x);
#endif
}

// ---- StO2 calibration (Sto2Calibration.apply), same float32 steps ----
// A table of R rows (the THb axis, R = P.n_rows; 1: a 1-D table) by K knots (P.n_table),
// row-major with row stride K in P.table_y. Raw axis:
// t = clip((x - x0) / dx, 0, K-1); i = min(floor(t), K-2); f = t - i;
// row(j) = Y[j][i] + f * (Y[j][i+1] - Y[j][i]).
// THb axis (R >= 2), in sqrt(THb) (issue 14: the raw -> true curve depends on the blood
// volume; low-blood tissue reads 4-9 points off with one curve):
// q = sqrt(max(thb, 0)); u = clip((q - q0) / dq, 0, R-1); j = min(floor(u), R-2); g = u - j;
// y = row(j) + g * (row(j+1) - row(j)). Every product and sum rounded on its own (no FMA).

// Where v (finite) falls on a uniform axis of n >= 2 points from x0 in steps dx: interval
// i = min(floor(t), n-2) and fraction t - i of t = clip((v - x0) / dx, 0, n-1).
struct AxisPos { int i; float f; };
HSI_HD AxisPos axis_pos(float v, float x0, float dx, int n) {
    float t = (v - x0) / dx;
    const float tmax = (float)(n - 1);
    t = t < 0.0f ? 0.0f : (t > tmax ? tmax : t);
    int i = (int)floorf(t);
    if (i > n - 2) i = n - 2;
    return AxisPos{i, t - (float)i};
}

// Where a raw StO2 x (finite) falls on the raw axis: interval i, fraction f.
HSI_HD AxisPos sto2_knot(float x, const ChainParams& P) {
    return axis_pos(x, P.table_x0, P.table_dx, P.n_table);
}

// Where a THb (finite) falls on the THb axis (sqrt of THb) of a table with R >= 2 rows:
// row i, weight f.
HSI_HD AxisPos sto2_row(float thb, const ChainParams& P) {
    return axis_pos(sqrt_rn(thb > 0.0f ? thb : 0.0f), P.thb_x0, P.thb_dx, P.n_rows);
}

// a + w * (b - a), rounded like NumPy (two roundings, no FMA).
HSI_HD float lerp_rn(float a, float b, float w) { return add_rn(a, mul_rn(w, b - a)); }

// Non-finite x (or, with a THb axis, non-finite thb) gives NaN. R = 1 ignores thb.
HSI_HD float sto2_calibrate(float x, float thb, const ChainParams& P) {
    if (!hsi_isfinite(x) || (P.n_rows > 1 && !hsi_isfinite(thb))) return hsi_nan();
    // Indices into the struct, not pointers: the device then reads them as constants.
    const AxisPos k = sto2_knot(x, P);
    if (P.n_rows <= 1) return lerp_rn(P.table_y[k.i], P.table_y[k.i + 1], k.f);
    const AxisPos r = sto2_row(thb, P);
    const int a = r.i * P.n_table + k.i, b = a + P.n_table;
    return lerp_rn(lerp_rn(P.table_y[a], P.table_y[a + 1], k.f),
                   lerp_rn(P.table_y[b], P.table_y[b + 1], k.f), r.f);
}

// c[k] for a run-time k with compile-time indexing (keeps c[] in registers on the device).
HSI_HD float select_component(const float* c, int k) {
    float v = 0.0f;
#pragma unroll
    for (int j = 0; j < HSI_MAX_COMPONENTS; ++j) v = (k == j) ? c[j] : v;
    return v;
}

// ---- unmixing (Unmixer.unmix): c = pinv @ A ----
// One pass over the bands also sums A over the six index windows (fused chain), so each log
// is taken once. conc receives all HSI_MAX_COMPONENTS entries (zero beyond nk). Returns
// whether every A was finite AND no band was at the floor (R <= eps): such a band has lost
// its information (one moves StO2 by 15-50 points), so the pixel is out of the unmixing
// domain (Unmixer.maps / NumpyBackend.run test R <= eps the same way).
template <class Acc>
HSI_HD bool unmix_pixel(const Acc& A, const ChainParams& P, float* conc, float* msum) {
    float c[HSI_MAX_COMPONENTS];
#pragma unroll
    for (int k = 0; k < HSI_MAX_COMPONENTS; ++k) c[k] = 0.0f;
#pragma unroll
    for (int w = 0; w < 6; ++w) msum[w] = 0.0f;
    bool finite = true;
    for (int b = 0; b < P.nb; ++b) {
        const float a = A(b, P.eps);
        finite = finite && hsi_isfinite(a) && A.above_floor(b, P.eps);
#pragma unroll
        for (int k = 0; k < HSI_MAX_COMPONENTS; ++k)
            if (k < P.nk) c[k] += P.pinv[k * HSI_MAX_BANDS + b] * a;
#pragma unroll
        for (int w = 0; w < 6; ++w)
            if (b >= P.mean_lo[w] && b < P.mean_hi[w]) msum[w] += a;
    }
#pragma unroll
    for (int k = 0; k < HSI_MAX_COMPONENTS; ++k) conc[k] = c[k];
    return finite;
}

// thb = c_HbO2 + c_Hb, sto2_raw = c_HbO2 / thb (the division happens even when thb <= 0;
// callers decide validity: Unmixer.maps and the backend differ in what they flag).
HSI_HD float hb_total(const float* conc, const ChainParams& P, float* hbo2) {
    *hbo2 = select_component(conc, P.i_hbo2);
    return *hbo2 + select_component(conc, P.i_hb);
}

// ---- TIVITA-style indices (indices.indices_from_terms) ----
// (num / den - off) / scale; non-finite -> NaN; clip to [0, 1] (indices._ratio).
HSI_HD float index_ratio(float num, float den, float off, float scale) {
    const float v = (num / den - off) / scale;
    return hsi_isfinite(v) ? clip01(v) : hsi_nan();
}

// Sums of A over the six index windows (same band order as unmix_pixel's fused sums).
template <class Acc>
HSI_HD void window_sums(const Acc& A, const ChainParams& P, float* msum) {
#pragma unroll
    for (int w = 0; w < 6; ++w) {
        float s = 0.0f;
        for (int b = P.mean_lo[w]; b < P.mean_hi[w]; ++b) s += A(b, P.eps);
        msum[w] = s;
    }
}

// min over bands [lo, hi) of A''[b] = sum_j d2_w[b][j] * A[d2_start[b] + j]; empty -> NaN.
template <class Acc>
HSI_HD float d2_min(const Acc& A, const ChainParams& P, int lo, int hi) {
    float m = hsi_nan();
    for (int b = lo; b < hi; ++b) {
        const int s = P.d2_start[b];
        float d = 0.0f;
#pragma unroll
        for (int j = 0; j < HSI_D2_TAPS; ++j)   // taps past the last band have weight 0
            if (s + j < P.nb) d += P.d2_w[b * HSI_D2_TAPS + j] * A(s + j, P.eps);
        m = (b == lo || d < m) ? d : m;
    }
    return m;
}

// out[0] = sto2_index, out[1] = nir, out[2] = thi, out[3] = twi. A must be finite (callers
// NaN the pixel otherwise, like the reference).
template <class Acc>
HSI_HD void tivita_from_sums(const Acc& A, const float* msum, const ChainParams& P, float* out) {
    const float r1 = d2_min(A, P, P.min_lo[0], P.min_hi[0]) / P.s1;
    const float r2 = d2_min(A, P, P.min_lo[1], P.min_hi[1]) / P.s2;
    out[0] = index_ratio(r1, r1 + r2, 0.0f, 1.0f);
#pragma unroll
    for (int j = 0; j < 3; ++j) {
        const bool ok = P.mean_hi[2 * j] > P.mean_lo[2 * j] &&
                        P.mean_hi[2 * j + 1] > P.mean_lo[2 * j + 1];
        out[1 + j] = ok ? index_ratio(msum[2 * j] * P.mean_w[2 * j],
                                      msum[2 * j + 1] * P.mean_w[2 * j + 1],
                                      P.ratio_off[j], P.ratio_div[j])
                        : hsi_nan();
    }
}

// chain_finish: everything after the band loop, given its results (unmix_pixel's conc, msum
// and in-domain verdict), so a CPU build can run its own vectorised band loop
// (cpu_chain.cpp) and share the rest.
template <class Acc>
HSI_HD unsigned chain_finish(const Acc& A, unsigned flags, bool in_domain, const float* conc,
                             const float* msum, const ChainParams& P, float* maps) {
    if (flags == 0u) {
        float idx[4], hbo2;
        const float thb = hb_total(conc, P, &hbo2);
        if (!in_domain || !(thb > 0.0f)) {
            flags = HSI_FLAG_UNMIX_INVALID;
        } else {
            tivita_from_sums(A, msum, P, idx);
            maps[MAP_STO2] = sto2_calibrate(hbo2 / thb, thb, P);
            maps[MAP_THB] = thb;
            maps[MAP_STO2_INDEX] = idx[0];
            maps[MAP_NIR] = idx[1];
            maps[MAP_THI] = idx[2];
            maps[MAP_TWI] = idx[3];
        }
    }
    if (flags) {
#pragma unroll
        for (int m = 0; m < HSI_N_MAPS; ++m) maps[m] = hsi_nan();
    }
    return flags;
}

// ---- the fused per-pixel chain (NumpyBackend.run) on a reflectance spectrum ----
// flags: the calibration flags of the pixel. maps[MAP_*] receives the six maps, NaN where
// the returned flags are non-zero. FLAG_UNMIX_INVALID is added only to otherwise valid
// pixels whose haemoglobin total is not > 0.
template <class Acc>
HSI_HD unsigned chain_pixel(const Acc& A, unsigned flags, const ChainParams& P, float* maps) {
    float conc[HSI_MAX_COMPONENTS], msum[6];
    const bool in_domain = flags == 0u && unmix_pixel(A, P, conc, msum);
    return chain_finish(A, flags, in_domain, conc, msum, P, maps);
}

// ---- pack: which flagged pixels pack as all zeros (NumpyBackend.run, with zero_flagged) ----
// Only pixels whose reflectance is unusable (saturated, under-exposed, non-finite, bad pixel).
// FLAG_UNMIX_INVALID pixels (no haemoglobin: drape, instruments, background) have valid
// spectra that the segmentation network must see to classify them (the post stage keeps
// their classes), so their spectra are packed normally; their maps are NaN and pack as 0.
HSI_HD bool pack_zeroed(unsigned flags) { return (flags & ~HSI_FLAG_UNMIX_INVALID) != 0u; }

// ---- pack: L1 norm over the selected bands (NumpyBackend.run / pack.l1_normalize) ----
// Returns 1/sum|x| -- 0 when the sum is not > 0, the spectrum is non-finite, or `zero`.
// Packed value = x * inv (0 where inv == 0, so NaN spectra pack as 0).
HSI_HD float l1_inverse(const float* r, const ChainParams& P, bool zero) {
    float s = 0.0f;
    bool finite = true;
    for (int i = 0; i < P.n_spec; ++i) {
        const float x = r[P.spec_bands[i]];
        finite = finite && hsi_isfinite(x);
        s += fabsf(x);
    }
    return (zero || !finite || !(s > 0.0f)) ? 0.0f : 1.0f / s;
}
HSI_HD float pack_spec_value(float x, float inv) { return inv > 0.0f ? x * inv : 0.0f; }
HSI_HD float pack_map_value(float m) { return hsi_isfinite(m) ? m : 0.0f; }

// ---- post-processing (post.argmax, post.overlay) ----
// Index of the largest score: the first one wins ties and the first NaN wins outright,
// exactly like np.argmax.
HSI_HD float to_f32(float x) { return x; }
template <class T>
HSI_HD int argmax_scores(const T* s, long long stride, int n) {
    int best = 0;
    float bv = to_f32(s[0]);
    for (int i = 1; i < n && !hsi_isnan(bv); ++i) {
        const float v = to_f32(s[(long long)i * stride]);
        if (v > bv || hsi_isnan(v)) { bv = v; best = i; }
    }
    return best;
}

// round(a1 * base + a2 * colour) with a1 = float32(1 - alpha), a2 = float32(alpha), two
// float32 products and one sum, no FMA (so the rounding matches NumPy), rint = half to even.
HSI_HD unsigned char blend_u8(unsigned char base, unsigned char colour, float a1, float a2) {
    const float v = add_rn(mul_rn(a1, (float)base), mul_rn(a2, (float)colour));
    const float r = rintf(v);
    return (unsigned char)(r < 0.0f ? 0.0f : (r > 255.0f ? 255.0f : r));
}
// post.overlay's hatching of invalid pixels: stripe ((row + col) // 4) % 2.
HSI_HD int hatch_stripe(long long row, long long col) { return (int)(((row + col) / 4) % 2); }
