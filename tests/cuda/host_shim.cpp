// host_shim.cpp -- the per-pixel device functions of cuda_kernels/pixel_math.cuh compiled for
// the CPU (g++; common.cuh defines the CUDA qualifiers away), with C entry points that loop
// over pixels the way the kernels do after staging. Loaded with ctypes by tests/cuda so CI
// checks the kernels' arithmetic against the NumPy reference without a GPU. Only the glue
// (loops, layouts) is repeated here; every formula comes from pixel_math.cuh.
#include <cstddef>
#include <vector>
#include "pixel_math.cuh"
#include "chain_tail.cuh"
#include "quality_math.cuh"

extern "C" {

// sizeof(ChainParams) and offsets of a few fields, to check the NumPy dtype's layout.
void shim_params_layout(long long* out) {
    out[0] = sizeof(ChainParams);
    out[1] = offsetof(ChainParams, mean_lo);
    out[2] = offsetof(ChainParams, d2_start);
    out[3] = offsetof(ChainParams, pinv);
    out[4] = offsetof(ChainParams, table_y);
    out[5] = offsetof(ChainParams, spec_bands);
    out[6] = offsetof(ChainParams, map_ids);
    out[7] = HSI_MAX_BANDS;
    out[8] = HSI_MAX_COMPONENTS;
    out[9] = HSI_MAX_TABLE;
    out[10] = HSI_MAX_CLASSES;
    out[11] = HSI_D2_TAPS;
    out[12] = offsetof(ChainParams, n_rows);
    out[13] = HSI_MAX_TABLE_ROWS;
}

// flatfield.cu / stage_calibrated + write_reflectance. raw as float (uint16 converts exactly);
// dark == NULL: float32 pass-through.
void shim_flatfield(const float* raw, const float* dark, const float* scale,
                    const unsigned char* static_flags, long long npix, int nb, float factor,
                    float sat, float* refl, unsigned char* flags) {
    for (long long p = 0; p < npix; ++p) {
        unsigned f = static_flags ? static_flags[p] : 0u;
        for (int b = 0; b < nb; ++b) {
            const long long e = p * nb + b;
            if (dark) {
                refl[e] = flatfield_band(raw[e], dark[e], scale[e], factor);
                f |= band_flags_raw(raw[e], sat);
            } else {
                refl[e] = raw[e];
                f |= band_flags_refl(raw[e]);
            }
        }
        if (f) for (int b = 0; b < nb; ++b) refl[p * nb + b] = hsi_nan();
        flags[p] = (unsigned char)f;
    }
}

void shim_absorbance(const float* r, long long n, float eps, float* a) {
    for (long long i = 0; i < n; ++i) a[i] = absorbance(r[i], eps);
}

// unmix.cu
void shim_unmix(const ChainParams* P, const float* refl, long long npix, float* conc,
                float* thb, float* sto2_raw) {
    for (long long p = 0; p < npix; ++p) {
        float c[HSI_MAX_COMPONENTS], msum[6], hbo2;
        const bool finite = unmix_pixel(AbsFromR{refl + p * P->nb}, *P, c, msum);
        for (int k = 0; k < P->nk; ++k) conc[p * P->nk + k] = select_component(c, k);
        const float t = hb_total(c, *P, &hbo2);
        const bool bad = !finite || !(t > 0.0f);
        thb[p] = bad ? hsi_nan() : t;
        sto2_raw[p] = bad ? hsi_nan() : hbo2 / t;
    }
}

// sto2.cu; thb NULL like the kernel's (a 1-D table ignores it)
void shim_sto2(const ChainParams* P, const float* x, const float* thb, long long n, float* y) {
    for (long long i = 0; i < n; ++i) y[i] = sto2_calibrate(x[i], thb ? thb[i] : hsi_nan(), *P);
}

// quality_tail.cuh's slope of sigma (q_slope): slopes (n_rows, n_table - 1)
void shim_q_slope(const ChainParams* P, const float* slopes, const float* x, const float* thb,
                  long long n, float* out) {
    for (long long i = 0; i < n; ++i) out[i] = q_slope(x[i], thb[i], slopes, *P);
}

// indices.cu: out is 4 planes of npix
void shim_indices(const ChainParams* P, const float* refl, long long npix, float* out) {
    for (long long p = 0; p < npix; ++p) {
        const AbsFromR acc{refl + p * P->nb};
        bool finite = true;
        for (int b = 0; b < P->nb; ++b) finite = finite && hsi_isfinite(acc(b, P->eps));
        float msum[6], idx[4];
        window_sums(acc, *P, msum);
        tivita_from_sums(acc, msum, *P, idx);
        for (int j = 0; j < 4; ++j) out[j * npix + p] = finite ? idx[j] : hsi_nan();
    }
}

// pack.cu (float32 output): maps are n_maps planes of npix; flags may be NULL
void shim_pack(const ChainParams* P, const float* refl, const float* maps,
               const unsigned char* flags, long long npix, float* out) {
    for (long long p = 0; p < npix; ++p) {
        const bool zero = P->zero_flagged && flags && pack_zeroed(flags[p]);
        const float* row = refl + p * P->nb;
        const float inv = P->n_spec > 0 ? l1_inverse(row, *P, zero) : 0.0f;
        for (int i = 0; i < P->n_spec; ++i)
            out[i * npix + p] = pack_spec_value(row[P->spec_bands[i]], inv);
        for (int j = 0; j < P->n_maps; ++j)
            out[(P->n_spec + j) * npix + p] = zero ? 0.0f : pack_map_value(maps[j * npix + p]);
    }
}

// chain.cu (float32 packed output; packed/refl may be NULL): the per-pixel staging of the
// kernel without its tile, then the kernel's own per-thread tail (chain_tail.cuh)
void shim_chain(const ChainParams* P, const float* raw, const float* dark, const float* scale,
                const unsigned char* static_flags, long long npix, float factor, float* maps,
                unsigned char* flags, float* packed, float* refl) {
    const int nb = P->nb;
    std::vector<float> row(nb);
    for (long long p = 0; p < npix; ++p) {
        unsigned f = static_flags ? static_flags[p] : 0u;
        for (int b = 0; b < nb; ++b) {
            const long long e = p * nb + b;
            if (dark) {
                row[b] = flatfield_band(raw[e], dark[e], scale[e], factor);
                f |= band_flags_raw(raw[e], P->sat_level);
            } else {
                row[b] = raw[e];
                f |= band_flags_refl(raw[e]);
            }
        }
        if (refl) for (int b = 0; b < nb; ++b) refl[p * nb + b] = f ? hsi_nan() : row[b];
        chain_thread(row.data(), f, p, npix, *P, maps, flags, packed);   // chain.cu's tail
    }
}

// post.cu
void shim_argmax(const float* logits, long long npix, int n_classes, unsigned char* labels) {
    for (long long p = 0; p < npix; ++p) labels[p] = (unsigned char)argmax_scores(logits + p, npix, n_classes);
}

void shim_overlay(const unsigned char* labels, const unsigned char* rgb,
                  const unsigned char* invalid, const unsigned char* colours, long long npix,
                  long long cols, float a1, float a2, unsigned hatch0, unsigned hatch1,
                  unsigned char* out) {
    for (long long p = 0; p < npix; ++p) {
        if (invalid && invalid[p]) {
            const unsigned h = hatch_stripe(p / cols, p % cols) ? hatch1 : hatch0;
            for (int ch = 0; ch < 3; ++ch) out[p * 3 + ch] = (unsigned char)(h >> (16 - 8 * ch));
            continue;
        }
        for (int ch = 0; ch < 3; ++ch)
            out[p * 3 + ch] = blend_u8(rgb[p * 3 + ch], colours[labels[p] * 3 + ch], a1, a2);
    }
}

}  // extern "C"
