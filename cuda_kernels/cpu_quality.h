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
        float rmin = INFINITY;
        for (int b = 0; b < nb; ++b) rmin = r[b] < rmin ? r[b] : rmin;
        darkest[p] = (flags[p] & ~HSI_FLAG_UNMIX_INVALID) ? nan : rmin;
        if (flags[p]) {
            s_raw[p] = nan;
            if (var) var[p] = nan;
            for (int j = 0; j < m; ++j) eo[j] = nan;
            continue;
        }
        float a[HSI_MAX_BANDS];
        float co = 0.0f, cd = 0.0f;
        for (int b = 0; b < nb; ++b) {
            const float v = r[b];
            a[b] = -hsi_logf(v < eps ? eps : v);
            co = HSI_FMA(po[b], a[b], co);
            cd = HSI_FMA(pd[b], a[b], cd);
        }
        const float t = co + cd;
        s_raw[p] = co / t;
        for (int j = 0; j < m; ++j) {
            const float* e = ext + (long long)j * nb;
            float acc = 0.0f;
            for (int b = 0; b < nb; ++b) acc = HSI_FMA(e[b], a[b], acc);
            eo[j] = acc;
        }
        if (!var) continue;
        if (!(t > 0.0f)) {
            var[p] = nan;
            continue;
        }
        const uint16_t* rp = raw + p * nb;
        const float* dp = dark + p * nb;
        float d[HSI_MAX_BANDS];
        for (int b = 0; b < nb; ++b) {
            const float x = (float)rp[b] - dp[b];
            d[b] = x > 1.0f ? x : 1.0f;
        }
        if (!ct) {
            float qoo = 0.0f, qdd = 0.0f, qod = 0.0f;
            for (int b = 0; b < nb; ++b) {
                const float w = 1.0f / d[b];
                const float v = (kpe + r2 * w) * w;     // (K d + r^2) / d^2
                qoo += po[b] * po[b] * v;
                qdd += pd[b] * pd[b] * v;
                qod += po[b] * pd[b] * v;
            }
            const float num = cd * cd * qoo + co * co * qdd - 2.0f * co * cd * qod;
            var[p] = (num > 0.0f ? num : 0.0f) / (t * t) / (t * t);
        } else {
            // ds/dA_b = g_b; A_b = -ln x_out_b; x_out = x_in @ ct: var(s) = sum_k var(x_in_k)
            // (sum_b ct[k][b] g_b / d_b)^2, var(x_in_k) = K max(sum_b d_b c_t[b][k], 0) + r^2
            float u[HSI_MAX_BANDS];
            const float t2 = t * t;
            for (int b = 0; b < nb; ++b) u[b] = ((cd * po[b] - co * pd[b]) / t2) / d[b];
            float acc = 0.0f;
            for (int k = 0; k < nb; ++k) {
                float z = 0.0f, xin = 0.0f;
                for (int b = 0; b < nb; ++b) {
                    z = HSI_FMA(ct[k * nb + b], u[b], z);
                    xin = HSI_FMA(d[b], c_t[b * nb + k], xin);
                }
                const float vin = (xin > 0.0f ? xin : 0.0f) * kpe + r2;
                acc += vin * z * z;
            }
            var[p] = acc;
        }
    }
    return 0;
}

}  // extern "C"
