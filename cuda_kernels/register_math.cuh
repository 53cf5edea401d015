// register_math.cuh -- the band registration of a snapshot mosaic camera, one output element
// (pixel, band) per call, as __host__ __device__ functions (issue 14). register.cu's kernels
// call them on the GPU; tests/cuda/register_emulation.cpp runs register.cu's own source on the
// CPU. NumPy reference: BandRegistration.apply / _filter / _fill / _window in
// edge/processing/register.py (what the registration is and why); native twin
// cpu_register.h (whose header comment states the same arithmetic contract).
//
// Arithmetic, per output element (r, c, b), every product and sum rounded on its own (mul_rn /
// add_rn: never contracted into an FMA), so the result is the reference's bit for bit:
//   x(r', c')  = float(raw) - dark                       (a flagged pixel: fill, below)
//   y(r, c')   = ((0 + x(r-2, c') ky[-2]) + x(r-1, c') ky[-1]) + ...   over the row taps
//   o          = ((0 + y(r, c-2) kx[-2]) + ...) + dark                   over the column taps
//   reg        = clip(rint(o), 0, 65535)                 (rintf: round half to even)
// with rows and columns clamped at the frame's edges (the reference replicates the edge) and
// the tap sets "nonzero for some band" (the reference's `if k[:, t].any()`), walked in
// ascending offset order: bit t of ymask / xmask is offset t - 2.
// A statically flagged pixel's x is the mean of its valid 3x3 neighbours' x (summed in their
// row-major order, then divided; 0 without one), and it keeps its own raw counts. The mean may
// differ from NumPy's in the last bit, so output pixels whose window holds a flagged pixel are
// within 1 count of the reference (tests/cuda/test_cuda_register_emulation.py).
// Saturation: sat (npix) marks pixels whose maximum raw count over bands is >= the level
// (register_sat_pixel); an output pixel whose window (row taps, then column taps, offset 0
// included, nothing past the frame's edge) holds one gets every band = sat_out.
#pragma once
#include "pixel_math.cuh"

#define HSI_REG_TAPS 2                      // taps at -2..2 (edge.processing.register.TAPS)
#define HSI_REG_NTAP (2 * HSI_REG_TAPS + 1)

HSI_HD long long reg_clamp_ll(long long i, long long n) {
    return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

// x = raw - dark of pixel p, band b (dark NULL: none subtracted).
HSI_HD float reg_signal(const unsigned short* raw, const float* dark, long long p, int nb,
                        int b) {
    const long long i = p * nb + b;
    const float v = (float)__ldg(raw + i);
    return dark ? v - __ldg(dark + i) : v;
}

// x at (r, c, b), with a statically flagged pixel replaced by its valid neighbours' mean.
HSI_HD float reg_x(const unsigned short* raw, const float* dark,
                   const unsigned char* sflags, long long rows, long long cols, int nb,
                   long long r, long long c, int b) {
    const long long p = r * cols + c;
    if (!sflags || !__ldg(sflags + p)) return reg_signal(raw, dark, p, nb, b);
    float sum = 0.0f;
    int k = 0;
    for (long long nr = r - 1; nr <= r + 1; ++nr) {
        if (nr < 0 || nr >= rows) continue;
        for (long long nc = c - 1; nc <= c + 1; ++nc) {
            if (nc < 0 || nc >= cols) continue;
            const long long q = nr * cols + nc;
            if (__ldg(sflags + q)) continue;
            const float v = reg_signal(raw, dark, q, nb, b);
            sum = k == 0 ? v : add_rn(sum, v);
            ++k;
        }
    }
    return k == 0 ? 0.0f : sum / (float)k;
}

// Whether output pixel (r, c)'s window holds a saturated pixel (BandRegistration._window).
HSI_HD bool reg_window_saturated(const unsigned char* sat, long long rows, long long cols,
                                 long long r, long long c, unsigned ymask, unsigned xmask) {
    ymask |= 1u << HSI_REG_TAPS;                    // the pixel itself is always in
    xmask |= 1u << HSI_REG_TAPS;
    for (int t = 0; t < HSI_REG_NTAP; ++t) {
        const long long rr = r + t - HSI_REG_TAPS;
        if (!(ymask >> t & 1u) || rr < 0 || rr >= rows) continue;
        for (int u = 0; u < HSI_REG_NTAP; ++u) {
            const long long cc = c + u - HSI_REG_TAPS;
            if (!(xmask >> u & 1u) || cc < 0 || cc >= cols) continue;
            if (__ldg(sat + rr * cols + cc)) return true;
        }
    }
    return false;
}

// The registered count of element e = p * nb + b (see the file comment). ky, kx (nb, 5) taps
// at -2..2; sat (npix) or NULL (no saturation level); sat_out: the saturated pixel's count.
HSI_HD unsigned short reg_element(const unsigned short* raw, const float* dark,
                                  const unsigned char* sflags, const unsigned char* sat,
                                  long long rows, long long cols, int nb, const float* ky,
                                  const float* kx, unsigned ymask, unsigned xmask,
                                  unsigned short sat_out, long long e) {
    const long long p = e / nb;
    const int b = (int)(e - p * nb);
    const long long r = p / cols, c = p - r * cols;
    if (sat && reg_window_saturated(sat, rows, cols, r, c, ymask, xmask)) return sat_out;
    if (sflags && __ldg(sflags + p)) return __ldg(raw + e);   // keeps its own counts
    float o = 0.0f;
    for (int u = 0; u < HSI_REG_NTAP; ++u) {
        if (!(xmask >> u & 1u)) continue;
        const long long cc = reg_clamp_ll(c + u - HSI_REG_TAPS, cols);
        float y = 0.0f;
        for (int t = 0; t < HSI_REG_NTAP; ++t) {
            if (!(ymask >> t & 1u)) continue;
            const long long rr = reg_clamp_ll(r + t - HSI_REG_TAPS, rows);
            y = add_rn(y, mul_rn(reg_x(raw, dark, sflags, rows, cols, nb, rr, cc, b),
                                 __ldg(ky + b * HSI_REG_NTAP + t)));
        }
        o = add_rn(o, mul_rn(y, __ldg(kx + b * HSI_REG_NTAP + u)));
    }
    o = add_rn(o, dark ? __ldg(dark + e) : 0.0f);
    const float v = rintf(o);
    return (unsigned short)(v >= 0.0f ? (v <= 65535.0f ? v : 65535.0f) : 0.0f);   // NaN -> 0
}
