// cpu_register.h -- band registration of a snapshot mosaic camera for the native CPU chain
// (issue 14; included by cpu_chain.cpp). NumPy reference: BandRegistration.apply and _filter
// in edge/processing/register.py, which states what the registration is and why.
//
// Why it exists: the NumPy registration takes ~20 ms on a 217x409x25 frame (about 25 NumPy
// calls per block of rows, each a loop of its own over the block), several times the native
// chain it precedes. Here one pass reads the raw counts and the dark from memory once and
// writes the registered counts once; every thread keeps a ring of 5 rows of x = raw - dark
// (the rows pass's window), one row of the rows pass (padded for the columns pass) and its
// output row in cache, and each pass sums its taps in a register.
//
// Arithmetic: the reference's, element by element, in float32 (cpu_chain.cpp is compiled with
// -ffp-contract=off, so every product is rounded before its add): x = float(raw) - dark; the
// rows pass y = ((0 + x[r-2] k[-2]) + x[r-1] k[-1]) + ... over the taps that are nonzero for
// some band (the reference's tap set), rows clamped at the edges; the columns pass the same on
// y; then o + dark, rounded half to even (rintf, the default rounding mode as NumPy's rint),
// clipped to [0, 65535]. Results are bit-identical to the reference, except that a statically
// flagged pixel's fill value (the mean of its valid 3x3 neighbours, summed in their row-major
// order as NumPy's reduction does) may differ from NumPy's in the last bit
// (tests/native/test_native_register.py).
//
// Vectorisation: a tap's coefficient depends on the band, so each axis's taps are expanded
// once per call over HSI_REG_GROUP pixels (HSI_REG_GROUP * nb floats, a multiple of the SIMD
// width): a row is then walked in groups of HSI_REG_GROUP pixels with contiguous loads of the
// data and of the expanded taps.

#include <stdlib.h>
#if defined(_OPENMP)
#include <omp.h>
#endif

#define HSI_REG_TAPS 2                      // taps at -2..2 (edge.processing.register.TAPS)
#define HSI_REG_NTAP (2 * HSI_REG_TAPS + 1)
#define HSI_REG_GROUP 16                    // pixels per expanded tap row

namespace {

struct RegTaps {
    int n;                                  // taps kept (nonzero for some band)
    int off[HSI_REG_NTAP];                  // their offsets, ascending (-2..2)
    const float* k[HSI_REG_NTAP];           // expanded: k[i][p * nb + b] = K[b][off[i] + 2]
};

// Keep the taps that are nonzero for some band (the reference's `if k[:, t].any()`) and expand
// them over HSI_REG_GROUP pixels into buf (HSI_REG_NTAP * HSI_REG_GROUP * nb floats).
inline void reg_taps(const float* K, int nb, float* buf, RegTaps& T) {
    const int gn = HSI_REG_GROUP * nb;
    T.n = 0;
    for (int t = 0; t < HSI_REG_NTAP; ++t) {
        bool any = false;
        for (int b = 0; b < nb; ++b) any = any || K[b * HSI_REG_NTAP + t] != 0.0f;
        if (!any) continue;
        float* e = buf + (long long)T.n * gn;
        for (int j = 0; j < gn; ++j) e[j] = K[(j % nb) * HSI_REG_NTAP + t];
        T.off[T.n] = t - HSI_REG_TAPS;
        T.k[T.n] = e;
        ++T.n;
    }
}

inline int reg_clamp(int i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// Row rr of x = raw - dark (cols * nb floats); a statically flagged pixel gets the mean of its
// valid 3x3 neighbours' x (0 without one), so the filter never reads its counts. Its
// neighbours' x is recomputed from raw and dark here: flagged pixels are few.
inline void reg_x_row(const uint16_t* raw, const float* dark, const uint8_t* sflags, int rows,
                      int cols, int nb, int rr, float* x) {
    const long long L = (long long)cols * nb, base = (long long)rr * L;
    const uint16_t* r = raw + base;
    if (dark) {
        const float* d = dark + base;
#pragma omp simd
        for (long long j = 0; j < L; ++j) x[j] = (float)r[j] - d[j];
    } else {
#pragma omp simd
        for (long long j = 0; j < L; ++j) x[j] = (float)r[j];
    }
    if (!sflags) return;
    for (int c = 0; c < cols; ++c) {
        if (!sflags[(long long)rr * cols + c]) continue;
        float* xc = x + (long long)c * nb;
        int k = 0;
        for (int nr = rr - 1; nr <= rr + 1; ++nr) {
            if (nr < 0 || nr >= rows) continue;
            for (int nc = c - 1; nc <= c + 1; ++nc) {
                if (nc < 0 || nc >= cols) continue;
                const long long p = (long long)nr * cols + nc;
                if (sflags[p]) continue;
                const uint16_t* rn = raw + p * nb;
                const float* dn = dark ? dark + p * nb : nullptr;
                // NumPy's mean(axis=0) of the (k, nb) neighbours: the first row, then each
                // next one added in order, then divided by k.
                for (int b = 0; b < nb; ++b) {
                    const float v = dn ? (float)rn[b] - dn[b] : (float)rn[b];
                    xc[b] = k == 0 ? v : xc[b] + v;
                }
                ++k;
            }
        }
        if (k == 0) {
            for (int b = 0; b < nb; ++b) xc[b] = 0.0f;
        } else {
            const float fk = (float)k;
            for (int b = 0; b < nb; ++b) xc[b] = xc[b] / fk;
        }
    }
}

// dst[j] = sum over the N kept taps of src[i][j] * k[i][j], in tap order from 0, for j < L,
// walked in groups of HSI_REG_GROUP pixels (the expanded taps' period); the sum stays in a
// register across the taps (N is a template argument so the tap loop unrolls).
template <int N>
inline void reg_taps_sum_n(const RegTaps& T, const float* const* src, long long L, int nb,
                           float* dst) {
    const long long gn = (long long)HSI_REG_GROUP * nb;
    for (long long j0 = 0; j0 < L; j0 += gn) {
        const long long n = L - j0 < gn ? L - j0 : gn;
        const float* s[N > 0 ? N : 1];
        const float* k[N > 0 ? N : 1];
        for (int i = 0; i < N; ++i) {
            s[i] = src[i] + j0;
            k[i] = T.k[i];
        }
        float* o = dst + j0;
#pragma omp simd
        for (long long j = 0; j < n; ++j) {
            float v = 0.0f;
            for (int i = 0; i < N; ++i) v = v + s[i][j] * k[i][j];
            o[j] = v;
        }
    }
}

inline void reg_taps_sum(const RegTaps& T, const float* const* src, long long L, int nb,
                         float* dst) {
    switch (T.n) {
        case 0: reg_taps_sum_n<0>(T, src, L, nb, dst); break;
        case 1: reg_taps_sum_n<1>(T, src, L, nb, dst); break;
        case 2: reg_taps_sum_n<2>(T, src, L, nb, dst); break;
        case 3: reg_taps_sum_n<3>(T, src, L, nb, dst); break;
        case 4: reg_taps_sum_n<4>(T, src, L, nb, dst); break;
        default: reg_taps_sum_n<5>(T, src, L, nb, dst); break;
    }
}

// Whether a pixel of row r reads a saturated pixel, from the saturated pixels of rows r-2..r+2
// (sat[rr] for rows in range; window: the reference's BandRegistration._window, rows first,
// then columns; reads past the edge are not counted, as there). hit: cols bytes, tmp: cols.
inline void reg_sat_row(const RegTaps& Ty, const RegTaps& Tx, const uint8_t* const* sat,
                        int r, int rows, int cols, uint8_t* tmp, uint8_t* hit) {
    for (int c = 0; c < cols; ++c) tmp[c] = sat[HSI_REG_TAPS][c];
    for (int i = 0; i < Ty.n; ++i) {
        const int t = Ty.off[i];
        if (t == 0 || r + t < 0 || r + t >= rows) continue;
        const uint8_t* s = sat[HSI_REG_TAPS + t];
        for (int c = 0; c < cols; ++c) tmp[c] |= s[c];
    }
    for (int c = 0; c < cols; ++c) hit[c] = tmp[c];
    for (int i = 0; i < Tx.n; ++i) {
        const int u = Tx.off[i];
        if (u == 0) continue;
        for (int c = 0; c < cols; ++c)
            if (c + u >= 0 && c + u < cols) hit[c] |= tmp[c + u];
    }
}

// Registers rows [r0, r1) (see the file comment). ws: this thread's workspace, reg_ws_floats.
inline void reg_rows(const uint16_t* raw, const float* dark, const uint8_t* sflags, int rows,
                     int cols, int nb, const RegTaps& Ty, const RegTaps& Tx, bool use_sat,
                     float sat_level, uint16_t sat_out, uint16_t* out, int r0, int r1,
                     float* ws) {
    const long long L = (long long)cols * nb;
    float* ring = ws;                                    // 5 rows of x, slot = row % 5
    float* ypad = ring + HSI_REG_NTAP * L;               // rows pass, 2 pixels each side
    float* orow = ypad + L + 2LL * HSI_REG_TAPS * nb;    // columns pass
    uint8_t* satb = (uint8_t*)(orow + L);                // 5 rows of "raw max >= saturation"
    uint8_t* tmp = satb + HSI_REG_NTAP * (long long)cols;
    uint8_t* hit = tmp + cols;
    int held[HSI_REG_NTAP];
    for (int s = 0; s < HSI_REG_NTAP; ++s) held[s] = -1;
    auto slot = [&](int rr) -> int {                     // row rr's x (and saturation) ready
        const int s = rr % HSI_REG_NTAP;
        if (held[s] != rr) {
            reg_x_row(raw, dark, sflags, rows, cols, nb, rr, ring + s * L);
            if (use_sat) {
                const uint16_t* rw = raw + (long long)rr * L;
                uint8_t* sb = satb + (long long)s * cols;
                // Saturation is rare: the row's maximum first (one vectorised pass), each
                // pixel's only where the row holds a saturated count.
                uint16_t top = 0;
#pragma omp simd reduction(max : top)
                for (long long j = 0; j < L; ++j) top = rw[j] > top ? rw[j] : top;
                if ((float)top >= sat_level) {
                    for (int c = 0; c < cols; ++c) {
                        const uint16_t* px = rw + (long long)c * nb;
                        uint16_t m = 0;
                        for (int b = 0; b < nb; ++b) m = px[b] > m ? px[b] : m;
                        sb[c] = (float)m >= sat_level;
                    }
                } else {
                    memset(sb, 0, (size_t)cols);
                }
            }
            held[s] = rr;
        }
        return s;
    };
    const float* src[HSI_REG_NTAP];
    const uint8_t* satr[HSI_REG_NTAP];
    float* y = ypad + HSI_REG_TAPS * nb;
    for (int r = r0; r < r1; ++r) {
        for (int t = -HSI_REG_TAPS; t <= HSI_REG_TAPS; ++t) {   // the whole window: saturation
            const int s = slot(reg_clamp(r + t, rows));
            satr[t + HSI_REG_TAPS] = satb + (long long)s * cols;
        }
        for (int i = 0; i < Ty.n; ++i) src[i] = ring + slot(reg_clamp(r + Ty.off[i], rows)) * L;
        reg_taps_sum(Ty, src, L, nb, y);
        for (int p = 0; p < HSI_REG_TAPS; ++p) {
            memcpy(ypad + (long long)p * nb, y, sizeof(float) * nb);
            memcpy(y + L + (long long)p * nb, y + L - nb, sizeof(float) * nb);
        }
        for (int i = 0; i < Tx.n; ++i) src[i] = y + (long long)Tx.off[i] * nb;
        reg_taps_sum(Tx, src, L, nb, orow);
        uint16_t* o = out + (long long)r * L;
        const float* d = dark ? dark + (long long)r * L : nullptr;
#pragma omp simd
        for (long long j = 0; j < L; ++j) {
            float v = rintf(d ? orow[j] + d[j] : orow[j] + 0.0f);
            v = v >= 0.0f ? (v <= 65535.0f ? v : 65535.0f) : 0.0f;   // NaN -> 0
            o[j] = (uint16_t)v;
        }
        if (sflags) {                                    // a flagged pixel keeps its counts
            const uint16_t* rw = raw + (long long)r * L;
            for (int c = 0; c < cols; ++c)
                if (sflags[(long long)r * cols + c])
                    memcpy(o + (long long)c * nb, rw + (long long)c * nb, sizeof(uint16_t) * nb);
        }
        if (use_sat) {
            reg_sat_row(Ty, Tx, satr, r, rows, cols, tmp, hit);
            for (int c = 0; c < cols; ++c)
                if (hit[c])
                    for (int b = 0; b < nb; ++b) o[(long long)c * nb + b] = sat_out;
        }
    }
}

// Floats of one thread's workspace (the uint8 rows rounded up into floats).
inline long long reg_ws_floats(int cols, int nb) {
    const long long L = (long long)cols * nb;
    const long long bytes = (HSI_REG_NTAP + 2LL) * cols;
    return HSI_REG_NTAP * L + L + 2LL * HSI_REG_TAPS * nb + L + (bytes + 3) / 4;
}

// Registers a uint16 frame (BandRegistration.apply for counts). raw, out (rows, cols, nb)
// uint16; dark (rows * cols, nb) float32 or NULL (none subtracted); static_flags (rows * cols)
// uint8 or NULL (nonzero: filled for the neighbours, keeps its counts); ky, kx (nb, 5) float32
// taps at -2..2; saturation: raw counts at/above which a band is saturated (+inf or NaN:
// none). Returns 0; 1 for a size out of range (rows, cols, nb < 1); 2 for a NULL raw, taps or
// out; 3 when a workspace could not be allocated (out is then incomplete).
// (The entry point hsi_cpu_register in cpu_chain.cpp.)
inline int register_frame(const uint16_t* raw, const float* dark, const uint8_t* static_flags,
                          int rows, int cols, int nb, const float* ky, const float* kx,
                          float saturation, uint16_t* out, int nthreads) {
    if (rows < 1 || cols < 1 || nb < 1) return 1;
    if (!raw || !ky || !kx || !out) return 2;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > rows) nthreads = rows;
    const long long gn = (long long)HSI_REG_GROUP * nb;
    float* taps = (float*)malloc(sizeof(float) * 2 * HSI_REG_NTAP * gn);
    if (!taps) return 3;
    RegTaps Ty, Tx;
    reg_taps(ky, nb, taps, Ty);
    reg_taps(kx, nb, taps + HSI_REG_NTAP * gn, Tx);
    const bool use_sat = isfinite(saturation);
    // The reference's ceil(min(saturation, 65535)) as uint16 (0 below 0).
    float top = use_sat ? ceilf(saturation < 65535.0f ? saturation : 65535.0f) : 0.0f;
    const uint16_t sat_out = (uint16_t)(top > 0.0f ? top : 0.0f);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
#if defined(_OPENMP)
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int tid = 0, nt = 1;
#endif
        // One contiguous block of rows per thread: the halo rows (2 each side) are the only
        // x rows computed twice.
        const int r0 = (int)((long long)rows * tid / nt);
        const int r1 = (int)((long long)rows * (tid + 1) / nt);
        if (r0 < r1) {
            float* ws = (float*)malloc(sizeof(float) * reg_ws_floats(cols, nb));
            if (!ws) {
                failed = 1;
            } else {
                reg_rows(raw, dark, static_flags, rows, cols, nb, Ty, Tx, use_sat, saturation,
                         sat_out, out, r0, r1, ws);
                free(ws);
            }
        }
    }
    free(taps);
    return failed ? 3 : 0;
}

}  // namespace
