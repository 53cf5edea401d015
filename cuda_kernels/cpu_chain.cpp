// cpu_chain.cpp -- the fused per-pixel chain (chain.cu, NumpyBackend.run) for CPUs: one pass
// over memory, vectorised across the bands of a pixel, pixels split over OpenMP threads.
//
// Why it exists: NumPy's float32 log has no SIMD path on AVX2 machines (2.2 ns per value, a
// 480x640x100 frame's logs alone take ~3x the chain's whole memory floor), and NumPy must
// write every intermediate to memory. This file is compiled for the host by
// edge/backends/native.py (g++/clang++, -O3 -march=native, cached by source and compiler
// hash) and called through ctypes.
//
// Shared with the GPU kernels (pixel_math.cuh): the flat-field and flag rules, chain_finish
// (haemoglobin total, StO2 table, TIVITA-style indices, the unmixing-domain verdict) and the
// pack rules. Own to this file: the band loop (absorbance, the unmixing dot products and the
// index window sums as SIMD reductions instead of one band at a time per thread) and the log.
//
// Rounding: compiled with -ffp-contract=off, so the flat field is bit-identical to NumPy's
// ((I - D) * scale) * factor. The log differs from glibc's logf by at most 1 ulp
// (hsi_logf below), and the dot products sum in another order than OpenBLAS's sgemm, so the
// maps agree with the NumPy reference to float32 rounding, not bit for bit (tests/native).
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE__)
#include <immintrin.h>
#endif
#include "pixel_math.cuh"
#include "cpu_register.h"   // band registration before the chain (hsi_cpu_register)

// Fused multiply-add where the CPU has it (one rounding: as accurate as a*b+c or better, and
// half the instructions in the band loop); a*b+c elsewhere, never a slow software fmaf.
// Only the band loop uses it: the flat field keeps NumPy's two roundings.
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define HSI_FMA(a, b, c) fmaf((a), (b), (c))
#else
#define HSI_FMA(a, b, c) ((a) * (b) + (c))
#endif

// (Global namespace: an explicit specialization must live in the template's namespace.)
// Absorbance accessor of the CPU chain: a[] padded with zeros to a multiple of 8 bands, and
// the Savitzky-Golay taps transposed per tap (taps[j][b] = d2_w[b][j], made once per call).
struct AbsCPU {
    const float* a;
    const float (*taps)[HSI_MAX_BANDS];
    float operator()(int b, float) const { return a[b]; }
    bool above_floor(int, float) const { return true; }   // band_loop decides the domain
};

// d2_min for AbsCPU: the same 5-tap sums in the same order as pixel_math.cuh's (fused where
// the CPU has FMA), but every band's derivative computed independently (vectorised over the
// bands) before the minimum, instead of one dependent chain per band. Where the range is
// interior (d2_start[b] = b - 2 throughout, as chain_params sets it away from the grid
// edges) tap j of consecutive bands is a contiguous run of a[] and of taps[j]: plain vector
// loads; elsewhere gathers. Taps past the last band have weight 0 and read a[]'s zero
// padding: d2_start <= max(nb - 5, 0), so s + j <= max(nb - 1, 4) < nb8.
template <>
inline float d2_min<AbsCPU>(const AbsCPU& A, const ChainParams& P, int lo, int hi) {
    if (hi <= lo) return hsi_nan();
    float d[HSI_MAX_BANDS];
    constexpr int half = HSI_D2_TAPS / 2;
    if (P.d2_start[lo] == lo - half && P.d2_start[hi - 1] == hi - 1 - half) {
        const float* base = A.a - half;
#pragma omp simd
        for (int b = lo; b < hi; ++b) {
            float v = 0.0f;
            for (int j = 0; j < HSI_D2_TAPS; ++j) v = HSI_FMA(A.taps[j][b], base[b + j], v);
            d[b] = v;
        }
    } else {
#pragma omp simd
        for (int b = lo; b < hi; ++b) {
            const int s = P.d2_start[b];
            float v = 0.0f;
            for (int j = 0; j < HSI_D2_TAPS; ++j) v = HSI_FMA(A.taps[j][b], A.a[s + j], v);
            d[b] = v;
        }
    }
    float m = d[lo];                 // then m stays NaN if d[lo] is NaN, like the generic loop
    for (int b = lo + 1; b < hi; ++b) m = d[b] < m ? d[b] : m;
    return m;
}

namespace {

// Natural log of a positive normal float32, written so the compiler vectorises it (no table,
// no branch). The algorithm of fdlibm's e_logf.c with the reduced polynomial of FreeBSD msun
// (Sun Microsystems 1993, freely redistributable; FreeBSD src/lib/msun/src/e_logf.c):
// x = 2^k * m with m in [sqrt(2)/2, sqrt(2)), f = m - 1, s = f / (2 + f),
// log(1 + f) = f - hfsq + s * (hfsq + R(s^2)) with R a degree-4 minimax polynomial in s^2, and
// k * ln2 split into a high and a low part. tests/native checks it against NumPy's log to
// 1 ulp. NaN and +inf pass through; zero, negatives and subnormals are out of its domain (the
// absorbance clips R to eps >= FLT_MIN first, edge/backends/native.py checks eps).
inline float hsi_logf(float x) {
    const float ln2_hi = 6.9313812256e-01f, ln2_lo = 9.0580006145e-06f;
    const float Lg1 = 0xaaaaaa.0p-24f, Lg2 = 0xccce13.0p-25f;
    const float Lg3 = 0x91e9ee.0p-25f, Lg4 = 0xf89e26.0p-26f;
    uint32_t ix;
    memcpy(&ix, &x, sizeof ix);
    ix += 0x3f800000u - 0x3f3504f3u;             // moves the cut from 1 to sqrt(2)/2
    const float k = (float)((int32_t)(ix >> 23) - 0x7f);
    ix = (ix & 0x007fffffu) + 0x3f3504f3u;       // m in [sqrt(2)/2, sqrt(2))
    float m;
    memcpy(&m, &ix, sizeof m);
    const float f = m - 1.0f;
    const float s = f / (2.0f + f);
    const float z = s * s, w = z * z;
    const float r = HSI_FMA(z, HSI_FMA(w, Lg3, Lg1), w * HSI_FMA(w, Lg4, Lg2));
    const float hfsq = 0.5f * f * f;
    const float y = HSI_FMA(k, ln2_hi, -((hfsq - HSI_FMA(s, hfsq + r, k * ln2_lo)) - f));
    return x < INFINITY ? y : x;   // NaN and +inf pass through (one compare: vectorises)
}

inline void store_out(float* p, float v) { *p = v; }
#if defined(__FLT16_MAX__)
typedef _Float16 half_t;
inline void store_out(half_t* p, float v) { *p = (half_t)v; }   // IEEE round to nearest even
#endif

// Staging: the calibrated spectrum of pixel p into row[], its flag bits returned.
// u16 raw with a flat field: R = ((I - D) * scale) * factor, saturation from the raw counts;
// float32 raw (reflectance recordings): passed through, non-finite values flag the pixel.
template <class T>
inline unsigned stage(const T* raw, const float* dark, const float* scale, long long p, int nb,
                      float factor, float sat, unsigned f, float* row);

template <>
inline unsigned stage<uint16_t>(const uint16_t* raw, const float* dark, const float* scale,
                                long long p, int nb, float factor, float sat, unsigned f,
                                float* row) {
    const uint16_t* rp = raw + p * nb;
    const float* dp = dark + p * nb;
    const float* sp = scale + p * nb;
    int mx = 0;
#pragma omp simd reduction(max : mx)
    for (int b = 0; b < nb; ++b) {
        row[b] = flatfield_band((float)rp[b], dp[b], sp[b], factor);
        mx = rp[b] > mx ? rp[b] : mx;
    }
    return f | band_flags_raw((float)mx, sat);
}

template <>
inline unsigned stage<float>(const float* raw, const float*, const float*, long long p, int nb,
                             float, float, unsigned f, float* row) {
    const float* rp = raw + p * nb;
    int bad = 0;
#pragma omp simd reduction(| : bad)
    for (int b = 0; b < nb; ++b) {
        row[b] = rp[b];
        bad |= !(rp[b] - rp[b] == 0.0f);
    }
    return f | (bad ? HSI_FLAG_NONFINITE : 0u);
}

// Sum of 8 floats as ((v0+v4)+(v2+v6))+((v1+v5)+(v3+v7)) (one 256-bit tree where AVX is).
inline float hsum8(const float* v) {
#if defined(__AVX__)
    const __m256 x = _mm256_loadu_ps(v);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
#else
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
#endif
}

// c[k] = sum_b pinv[k][b] * a[b] for NK components at once: NK independent 8-lane
// accumulators (one pass over a[], no dependency chain through one sum); nb8 is the band
// count rounded up to 8 -- pinv's padding is zero (chain_params) and a[] is padded with 0.
template <int NK>
inline void unmix_dots(const float* a, const ChainParams& P, int nb8, float* conc) {
    float acc[NK][8] = {};
    for (int b = 0; b < nb8; b += 8) {
        for (int k = 0; k < NK; ++k) {
            const float* pk = P.pinv + k * HSI_MAX_BANDS + b;
            for (int l = 0; l < 8; ++l) acc[k][l] = HSI_FMA(pk[l], a[b + l], acc[k][l]);
        }
    }
    for (int k = 0; k < HSI_MAX_COMPONENTS; ++k) conc[k] = k < NK ? hsum8(acc[k < NK ? k : 0]) : 0.0f;
}

// Per-call tables of the CPU chain (read-only, shared by the threads): index-window masks
// (1 inside [mean_lo, mean_hi), else 0) and the Savitzky-Golay taps per tap.
struct CpuTables {
    float win[6][HSI_MAX_BANDS + 8];
    float taps[HSI_D2_TAPS][HSI_MAX_BANDS];
};

inline void make_tables(const ChainParams& P, CpuTables& t) {
    for (int w = 0; w < 6; ++w)
        for (int b = 0; b < HSI_MAX_BANDS + 8; ++b)
            t.win[w][b] = (b >= P.mean_lo[w] && b < P.mean_hi[w]) ? 1.0f : 0.0f;
    for (int j = 0; j < HSI_D2_TAPS; ++j)
        for (int b = 0; b < HSI_MAX_BANDS; ++b) t.taps[j][b] = P.d2_w[b * HSI_D2_TAPS + j];
}

// The band loop: absorbance, domain test, unmixing dot products, index window sums.
// row[] holds nb reflectances followed by 1.0 up to nb8 (log 1 = 0: no effect on the sums).
inline bool band_loop(const float* row, const ChainParams& P, const CpuTables& T, int nb8,
                      float* a, float* conc, float* msum) {
    const float eps = P.eps;
    float rmin = INFINITY;
    int nonfinite = 0;
#pragma omp simd reduction(min : rmin) reduction(| : nonfinite)
    for (int b = 0; b < nb8; ++b) {
        const float r = row[b];
        const float v = -hsi_logf(r < eps ? eps : r);
        a[b] = v;
        rmin = r < rmin ? r : rmin;
        nonfinite |= (int)(v - v != 0.0f);
    }
    switch (P.nk) {
        case 1: unmix_dots<1>(a, P, nb8, conc); break;
        case 2: unmix_dots<2>(a, P, nb8, conc); break;
        case 3: unmix_dots<3>(a, P, nb8, conc); break;
        case 4: unmix_dots<4>(a, P, nb8, conc); break;
        case 5: unmix_dots<5>(a, P, nb8, conc); break;
        case 6: unmix_dots<6>(a, P, nb8, conc); break;
        case 7: unmix_dots<7>(a, P, nb8, conc); break;
        default: unmix_dots<8>(a, P, nb8, conc); break;
    }
    // Window sums over whole 8-band chunks with a 0/1 mask (a[] is padded to nb8 with 0):
    // a few vector operations per window instead of a peeled scalar/vector loop.
    for (int w = 0; w < 6; ++w) {
        float acc[8] = {};
        const int lo = P.mean_lo[w] & ~7, hi = P.mean_hi[w];
        for (int b = lo; b < hi; b += 8)
            for (int l = 0; l < 8; ++l) acc[l] = HSI_FMA(T.win[w][b + l], a[b + l], acc[l]);
        msum[w] = hsum8(acc);
    }
    // Out of the unmixing domain: a band at the reflectance floor (R <= eps) or a
    // non-finite absorbance (unmix_pixel's verdict).
    return !nonfinite && !(rmin <= eps);
}

// l1_inverse (pixel_math.cuh) with four partial sums instead of one dependent chain: the
// same rule -- 1 / sum|x| over the packed bands, 0 when zeroed, non-finite or not > 0 --
// with the sum in another order (float32 rounding; the packed values are compared to
// NumPy's within tolerances, not bit for bit). Scalar loads: the bands are few (a vector
// gather per 8 of them was slower on Zen 3).
inline float l1_inverse_cpu(const float* r, const ChainParams& P, bool zero) {
    if (zero) return 0.0f;
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int bad = 0;
    const int n = P.n_spec;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        for (int u = 0; u < 4; ++u) {
            const float x = r[P.spec_bands[i + u]];
            bad |= (int)(x - x != 0.0f);
            s[u] += fabsf(x);
        }
    }
    for (; i < n; ++i) {
        const float x = r[P.spec_bands[i]];
        bad |= (int)(x - x != 0.0f);
        s[0] += fabsf(x);
    }
    const float sum = (s[0] + s[1]) + (s[2] + s[3]);
    return (bad || !(sum > 0.0f)) ? 0.0f : 1.0f / sum;
}

// Reflectance row out: streaming stores where the row is 16-byte aligned (x86 SSE), so the
// 4 bytes per element are written without first being read into the cache (the floor counts
// them once); elsewhere a plain copy.
inline void write_row(float* dst, const float* row, int nb) {
#if defined(__SSE__)
    if ((nb & 3) == 0 && ((uintptr_t)dst & 15u) == 0) {
        int b = 0;
#if defined(__AVX__)
        if (((uintptr_t)dst & 31u) != 0) {          // one 16-byte store to reach 32-byte
            _mm_stream_ps(dst, _mm_load_ps(row));
            b = 4;
        }
        for (; b + 8 <= nb; b += 8) _mm256_stream_ps(dst + b, _mm256_loadu_ps(row + b));
#endif
        for (; b < nb; b += 4) _mm_stream_ps(dst + b, _mm_loadu_ps(row + b));
        return;
    }
#endif
    memcpy(dst, row, sizeof(float) * (size_t)nb);
}

// Pixels per tile. The planar outputs (six maps, the NCHW input) are staged per tile and
// written one channel at a time: writing each pixel's channels straight into planes that lie
// a multiple of 4 KiB apart put every store of a pixel in the same L1 set (27 channels on
// an 8-way cache), which cost more than the whole band loop.
constexpr int kTile = 32;

template <class T, class OutT>
int run_chain(const ChainParams* Pp, const T* raw, const float* dark, const float* scale,
              const unsigned char* static_flags, long long npix, float factor, float* maps,
              unsigned char* flags, OutT* packed, float* refl, int nthreads) {
    const ChainParams& P = *Pp;
    const int nb = P.nb;
    if (nb < 1 || nb > HSI_MAX_BANDS || P.nk < 1 || P.nk > HSI_MAX_COMPONENTS ||
        P.n_spec < 0 || P.n_maps < 0 || P.n_spec + P.n_maps > HSI_MAX_BANDS + 8)
        return 1;
    CpuTables tables;
    make_tables(P, tables);
    const int nch = packed ? P.n_spec + P.n_maps : 0;
    const int nb8 = (nb + 7) & ~7;
    const long long ntiles = (npix + kTile - 1) / kTile;
#pragma omp parallel for schedule(static, 32) num_threads(nthreads)
    for (long long t = 0; t < ntiles; ++t) {
        alignas(64) float row[HSI_MAX_BANDS];
        alignas(64) float a[HSI_MAX_BANDS];
        alignas(64) float mt[HSI_N_MAPS][kTile];
        alignas(64) float pt[HSI_MAX_BANDS + 8][kTile];
        const long long p0 = t * kTile;
        const int n = (int)(npix - p0 < kTile ? npix - p0 : kTile);
        for (int b = nb; b < nb8; ++b) row[b] = 1.0f;   // stage() writes [0, nb) only
        for (int q = 0; q < n; ++q) {
            const long long p = p0 + q;
            float conc[HSI_MAX_COMPONENTS], msum[6], m[HSI_N_MAPS];
            unsigned f = stage<T>(raw, dark, scale, p, nb, factor, P.sat_level,
                                  static_flags ? static_flags[p] : 0u, row);
            if (f) {
                for (int b = 0; b < nb; ++b) row[b] = hsi_nan();
            }
            if (refl) write_row(refl + p * nb, row, nb);
            const bool in_domain = f == 0u && band_loop(row, P, tables, nb8, a, conc, msum);
            f = chain_finish(AbsCPU{a, tables.taps}, f, in_domain, conc, msum, P, m);
            flags[p] = (unsigned char)f;
            for (int j = 0; j < HSI_N_MAPS; ++j) mt[j][q] = m[j];
            if (!nch) continue;
            const bool zero = P.zero_flagged && pack_zeroed(f);
            const float inv = P.n_spec > 0 ? l1_inverse_cpu(row, P, zero) : 0.0f;
            for (int i = 0; i < P.n_spec; ++i)
                pt[i][q] = pack_spec_value(row[P.spec_bands[i]], inv);
            for (int j = 0; j < P.n_maps; ++j)
                pt[P.n_spec + j][q] = zero ? 0.0f : pack_map_value(m[P.map_ids[j]]);
        }
        for (int j = 0; j < HSI_N_MAPS; ++j) memcpy(maps + j * npix + p0, mt[j], 4 * (size_t)n);
        for (int c = 0; c < nch; ++c) {
            OutT* dst = packed + c * npix + p0;
            for (int q = 0; q < n; ++q) store_out(dst + q, pt[c][q]);
        }
    }
#if defined(__SSE__)
    _mm_sfence();   // streaming stores are weakly ordered: visible before returning
#endif
    return 0;
}

}  // namespace

extern "C" {

// Layout check against edge/backends/cuda_params.CHAIN_PARAMS_DTYPE.
long long hsi_cpu_params_size(void) { return (long long)sizeof(ChainParams); }

// 1 when this build can write float16 (the compiler has _Float16).
int hsi_cpu_has_f16(void) {
#if defined(__FLT16_MAX__)
    return 1;
#else
    return 0;
#endif
}

// memcpy split over nthreads (one contiguous slice each): the copy bandwidth `hsi-edge
// bench` sets the chain's memory floor with, measured with the chain's own thread count.
void hsi_cpu_copy(const void* src, void* dst, long long nbytes, int nthreads) {
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel for schedule(static, 1) num_threads(nthreads)
    for (int i = 0; i < nthreads; ++i) {
        const long long a = nbytes * i / nthreads, b = nbytes * (i + 1) / nthreads;
        memcpy((char*)dst + a, (const char*)src + a, (size_t)(b - a));
    }
}

// out[i] = hsi_logf(x[i]) (for the accuracy test against NumPy's log).
void hsi_cpu_log(const float* x, long long n, float* out) {
    for (long long i = 0; i < n; ++i) out[i] = hsi_logf(x[i]);
}

// The chain. raw_kind 0: uint16 raw with dark/scale (npix, nb) float32; 1: float32
// reflectance (dark/scale ignored). out_kind 0: no packed input; 1: float32; 2: float16.
// maps: (6, npix) float32 in MAP_* order; flags (npix) uint8; packed (channels, npix);
// refl (npix, nb) float32 or NULL. Returns 0, or 1 for a parameter block out of range, 2 for
// an unsupported raw/out kind (or uint16 counts without dark/scale).
int hsi_cpu_chain(const ChainParams* P, const void* raw, int raw_kind, const float* dark,
                  const float* scale, const unsigned char* static_flags, long long npix,
                  float factor, float* maps, unsigned char* flags, void* packed, int out_kind,
                  float* refl, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (raw_kind == 0 && (!dark || !scale)) return 2;   // counts need a flat field
    if (raw_kind == 0) {
        const uint16_t* r = (const uint16_t*)raw;
        if (out_kind == 0)
            return run_chain<uint16_t, float>(P, r, dark, scale, static_flags, npix, factor,
                                              maps, flags, nullptr, refl, nthreads);
        if (out_kind == 1)
            return run_chain(P, r, dark, scale, static_flags, npix, factor, maps, flags,
                             (float*)packed, refl, nthreads);
#if defined(__FLT16_MAX__)
        if (out_kind == 2)
            return run_chain(P, r, dark, scale, static_flags, npix, factor, maps, flags,
                             (half_t*)packed, refl, nthreads);
#endif
    } else if (raw_kind == 1) {
        const float* r = (const float*)raw;
        if (out_kind == 0)
            return run_chain<float, float>(P, r, nullptr, nullptr, static_flags, npix, 1.0f,
                                           maps, flags, nullptr, refl, nthreads);
        if (out_kind == 1)
            return run_chain(P, r, nullptr, nullptr, static_flags, npix, 1.0f, maps, flags,
                             (float*)packed, refl, nthreads);
#if defined(__FLT16_MAX__)
        if (out_kind == 2)
            return run_chain(P, r, nullptr, nullptr, static_flags, npix, 1.0f, maps, flags,
                             (half_t*)packed, refl, nthreads);
#endif
    }
    return 2;
}

// Band registration of a uint16 frame before the chain (BandRegistration.apply; see
// cpu_register.h). raw, out (rows, cols, nb) uint16; dark (rows * cols, nb) float32 or NULL;
// static_flags (rows * cols) uint8 or NULL; ky, kx (nb, 5) float32 taps at -2..2; saturation
// +inf: none. Returns 0, 1 for a size < 1, 2 for a NULL raw/taps/out, 3 out of memory.
int hsi_cpu_register(const uint16_t* raw, const float* dark, const uint8_t* static_flags,
                     int rows, int cols, int nb, const float* ky, const float* kx,
                     float saturation, uint16_t* out, int nthreads) {
    return register_frame(raw, dark, static_flags, rows, cols, nb, ky, kx, saturation, out,
                          nthreads);
}

}  // extern "C"

// The StO2 quality pass (native only; see the file).
#include "cpu_quality.h"
