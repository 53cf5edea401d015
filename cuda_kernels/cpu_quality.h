// cpu_quality.h -- the StO2 quality pass of the native CPU chain (issue 14; included by
// cpu_chain.cpp, which defines hsi_logf and HSI_FMA). NumPy reference: the per-block part of
// NumpyBackend.run with quality rules and edge/processing/quality.py.
//
// A second pass after hsi_cpu_chain, per pixel, from the chain's reflectance and flags and the
// frame's raw counts: raw StO2 s = c_o / (c_o + c_d) with c = pinv rows . A (A = -ln max(R,
// eps)), its delta-method variance from the shot + read noise of the counts (through the
// mosaic's crosstalk correction when given), the darkest band (the specular test) and m
// further linear terms of A (the spatial step's guide and the StO2 index's second
// derivatives). The frame-wide rest -- flags, the 7x7 spatial step, the calibration curve and
// its slope -- is edge.processing.quality.finish_quality, shared with the NumPy backend.
//
// Not fused into the chain: it reads the raw counts, dark and reflectance again (10 bytes per
// element for uint16 counts). Sums run in band order (NumPy's sgemm sums in another order):
// results agree with the reference to float32 rounding (tests/native/test_native_quality.py).

#include "quality_math.cuh"   // the per-pixel formulas, shared with the CUDA quality pass

extern "C" {

// refl (npix, nb) float32 and flags (npix) uint8 from hsi_cpu_chain; raw (npix, nb) uint16
// and dark (npix, nb) float32, or NULL (no counts: var is not written); po, pd (nb) the HbO2
// and Hb rows of the pseudo-inverse; ext (m, nb) row-major, m >= 0; kpe counts per electron,
// r2 read noise squared (counts^2); ct (nb, nb) = pinv(C).T and c_t (nb, nb) = C.T row-major
// for a crosstalk correction x_out = x_in @ ct, or NULL. Outputs: s_raw, var, darkest (npix)
// and ext_out (npix, m); NaN where the chain flagged the pixel. Returns 0, 1 for nb out of
// range.
int hsi_cpu_quality(const float* refl, const unsigned char* flags, const uint16_t* raw,
                    const float* dark, long long npix, int nb, float eps, const float* po,
                    const float* pd, const float* ext, int m, float kpe, float r2,
                    const float* ct, const float* c_t, float* s_raw, float* var,
                    float* darkest, float* ext_out, int nthreads) {
    if (nb < 1 || nb > HSI_MAX_BANDS || m < 0) return 1;
    if (nthreads < 1) nthreads = 1;
    const float nan = hsi_nan();
#pragma omp parallel for schedule(static, 1024) num_threads(nthreads)
    for (long long p = 0; p < npix; ++p) {
        const float* r = refl + p * nb;
        float* eo = ext_out + p * (long long)m;
        // The darkest band also for unmix_invalid pixels (a highlight can push the unmixing
        // out of its domain); NaN where the reflectance itself is unusable.
        darkest[p] = (flags[p] & ~HSI_FLAG_UNMIX_INVALID) ? nan : q_darkest(r, nb);
        if (flags[p]) {
            s_raw[p] = nan;
            if (var) var[p] = nan;
            for (int j = 0; j < m; ++j) eo[j] = nan;
            continue;
        }
        float a[HSI_MAX_BANDS];
        for (int b = 0; b < nb; ++b) {
            const float v = r[b];
            a[b] = -hsi_logf(v < eps ? eps : v);
        }
        const float co = q_dot(po, a, nb), cd = q_dot(pd, a, nb);
        const float t = co + cd;
        s_raw[p] = co / t;
        for (int j = 0; j < m; ++j) eo[j] = q_dot(ext + (long long)j * nb, a, nb);
        if (!var) continue;
        if (!(t > 0.0f)) {
            var[p] = nan;
            continue;
        }
        const uint16_t* rp = raw + p * nb;
        const float* dp = dark + p * nb;
        float d[HSI_MAX_BANDS];
        for (int b = 0; b < nb; ++b) d[b] = q_signal((float)rp[b] - dp[b]);
        if (!ct) {
            var[p] = q_sto2_var(po, pd, d, nb, co, cd, kpe, r2);
        } else {
            float u[HSI_MAX_BANDS];
            const float t2 = t * t;
            for (int b = 0; b < nb; ++b) u[b] = q_mixed_u(po[b], pd[b], co, cd, t2, d[b]);
            var[p] = q_sto2_var_mixed(po, pd, d, nb, co, cd, kpe, r2, ct, c_t, u);
        }
    }
    return 0;
}


// The spatial step (edge/processing/spatial.py bilateral_filter, without inverse-variance
// weights): for each pixel i with ok[i], over the (2r+1)^2 window, neighbours j with ok[j]:
// a = exp(-(di^2 + dj^2) / (2 sigma_s^2)) * exp(-sum_k (g_jk - g_ik)^2 / (2 h^2 G));
// s' = sum a s_j / sum a, var' = sum a^2 var_j / (sum a)^2, t' = sum a t_j / sum a. Same
// float32 operations in the same order (dy outer, dx inner) as the NumPy reference.
// s, var (nullable), ok (rows*cols); guide (rows*cols, G); terms (rows*cols, m) or m = 0.
// Outputs NaN where !ok. Returns 0, 1 for bad sizes.
int hsi_cpu_bilateral(const float* s, const float* var, const float* guide,
                      const unsigned char* ok, const float* terms, int rows, int cols, int G,
                      int m, int radius, float sigma_s, float h, float* s_out, float* var_out,
                      float* t_out, int nthreads) {
    if (rows < 1 || cols < 1 || G < 1 || m < 0 || radius < 0 || radius > 16) return 1;
    if (nthreads < 1) nthreads = 1;
    const float nan = hsi_nan();
    const float inv_2h2 = (float)(1.0 / (2.0 * (double)h * (double)h * (double)G));
    const int w = 2 * radius + 1;
    float ks[33 * 33];
    for (int dy = -radius; dy <= radius; ++dy)
        for (int dx = -radius; dx <= radius; ++dx)
            ks[(dy + radius) * w + dx + radius] =
                (float)exp(-(double)(dy * dy + dx * dx) / (2.0 * (double)sigma_s * sigma_s));
#pragma omp parallel for schedule(static, 4) num_threads(nthreads)
    for (int y = 0; y < rows; ++y) {
        float tacc[HSI_MAX_BANDS];
        for (int x = 0; x < cols; ++x) {
            const long long i = (long long)y * cols + x;
            if (!ok[i]) {
                s_out[i] = nan;
                if (var_out) var_out[i] = nan;
                for (int c = 0; c < m; ++c) t_out[i * m + c] = nan;
                continue;
            }
            const float* gi = guide + i * G;
            float aw = 0.0f, ws = 0.0f, w2v = 0.0f;
            for (int c = 0; c < m; ++c) tacc[c] = 0.0f;
            for (int dy = -radius; dy <= radius; ++dy) {
                const int yy = y + dy;
                if (yy < 0 || yy >= rows) continue;
                for (int dx = -radius; dx <= radius; ++dx) {
                    const int xx = x + dx;
                    if (xx < 0 || xx >= cols) continue;
                    const long long j = (long long)yy * cols + xx;
                    if (!ok[j]) continue;
                    const float* gj = guide + j * G;
                    float d2 = 0.0f;
                    for (int k = 0; k < G; ++k) {
                        const float d = gj[k] - gi[k];
                        d2 += d * d;
                    }
                    const float a = expf(d2 * -inv_2h2) * ks[(dy + radius) * w + dx + radius];
                    aw += a;
                    ws += a * s[j];
                    if (var) w2v += a * a * var[j];
                    for (int c = 0; c < m; ++c) tacc[c] += a * terms[j * m + c];
                }
            }
            s_out[i] = ws / aw;
            if (var_out) var_out[i] = w2v / (aw * aw);
            for (int c = 0; c < m; ++c) t_out[i * m + c] = tacc[c] / aw;
        }
    }
    return 0;
}

}  // extern "C"
