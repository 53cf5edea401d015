// quality_emulation.cpp -- the quality kernels (cuda_kernels/quality.cu) run on the CPU, block
// by block, as host_emulation.cpp runs chain.cu (whose emulation and CUDA built-ins this file
// includes, so one library emulates the whole CUDA quality path: chain, per-pixel pass,
// spatial step). Each kernel's one __syncthreads() is a phase boundary: every "thread" of the
// block finishes staging before any computes. Shared memory is NaN-poisoned before every
// block, so a halo slot or tile row that no thread staged shows up as a wrong map.
//
// What this checks without a GPU: the per-pixel pass's staging (reflectance and I - D tiles,
// the partial last block), the 2-D tile with its halo for every radius (the partial tiles at
// the right and bottom edges, the frame border), the term chunks of several launches, the
// per-pixel finish, and the arithmetic of quality_math.cuh. Not: concurrency, __ldg,
// coalescing, timing (tests/gpu).
#include "host_emulation.cpp"
#include "quality_tail.cuh"

extern "C" void emu_quality_pixel(const ChainParams* P, const float* refl,
                                  unsigned char* flags, const float* maps,
                                  const unsigned short* raw, const float* dark, long long npix,
                                  int block, int stride, const float* ext, int m, float kpe,
                                  float r2, const float* ct, const float* c_t, float spec_level,
                                  float thb_min, float* s_raw, float* var, float* ext_out,
                                  unsigned char* ok) {
    std::vector<float> smem;
    const long long grid = (npix + block - 1) / block;
    blockDim = HsiDim3{(unsigned)block, 1, 1};
    for (long long bx = 0; bx < grid; ++bx) {
        blockIdx = HsiDim3{(unsigned)bx, 0, 0};
        smem.assign((size_t)block * stride * (raw ? 2 : 1), std::nanf(""));
        float* tr = smem.data();
        float* tx = raw ? smem.data() + (size_t)block * stride : nullptr;
        long long p0 = 0;
        int np = 0;
        for (int t = 0; t < block; ++t) {          // phase 1: staging
            threadIdx = HsiDim3{(unsigned)t, 0, 0};
            np = tile_pixels(npix, &p0);
            stage_f32(refl, p0, np, P->nb, stride, tr);
            if (raw) stage_signal(raw, dark, p0, np, P->nb, stride, tx);
        }
        const QualityOut out{s_raw, raw ? var : nullptr, ext_out, ok};
        for (int t = 0; t < np; ++t) {             // __syncthreads(); phase 2: per thread
            threadIdx = HsiDim3{(unsigned)t, 0, 0};
            quality_thread(tr + (size_t)t * stride, raw ? tx + (size_t)t * stride : nullptr,
                           p0 + t, npix, *P, flags, maps, ext, m, kpe, r2, ct, c_t,
                           spec_level, thb_min, out);
        }
    }
}

extern "C" void emu_bilateral(const float* s, const float* var, const unsigned char* ok,
                              const float* guide, const float* terms, int rows, int cols, int G,
                              int t0, int tc, int radius, float inv_2h2, const float* ks,
                              int bx, int by, float* s_out, float* var_out, float* t_out) {
    std::vector<float> smem;
    blockDim = HsiDim3{(unsigned)bx, (unsigned)by, 1};
    const int gx = (cols + bx - 1) / bx, gy = (rows + by - 1) / by;
    const size_t shared = (size_t)(bx + 2 * radius) * (by + 2 * radius) * (3 + G + tc);
    for (int j = 0; j < gy; ++j) {
        for (int i = 0; i < gx; ++i) {
            blockIdx = HsiDim3{(unsigned)i, (unsigned)j, 0};
            smem.assign(shared, std::nanf(""));
            const BilTile B = bil_tile(smem.data(), radius, G);
            for (int ty = 0; ty < by; ++ty)        // phase 1: staging with the halo
                for (int tx = 0; tx < bx; ++tx) {
                    threadIdx = HsiDim3{(unsigned)tx, (unsigned)ty, 0};
                    bil_stage(s, var, ok, guide, terms, rows, cols, G, t0, tc, radius, B);
                }
            for (int ty = 0; ty < by; ++ty)        // __syncthreads(); phase 2: one pixel each
                for (int tx = 0; tx < bx; ++tx) {
                    threadIdx = HsiDim3{(unsigned)tx, (unsigned)ty, 0};
                    bil_thread(B, rows, cols, G, t0, tc, radius, inv_2h2, ks, s_out, var_out,
                               t_out);
                }
        }
    }
}

// quality_finish_f32: one thread per pixel, no shared memory: every pixel in turn.
extern "C" void emu_quality_finish(const ChainParams* P, const float* s_raw, const float* var,
                                   const float* s_f, const float* var_f, const float* t_f,
                                   const float* t_raw, const unsigned char* ok, int n_terms,
                                   int n1,
                                   const float* slopes, float max_sigma, float model2,
                                   long long npix, unsigned char* flags, float* maps,
                                   float* sigma, float* sto2_all, float* packed) {
    const FinishIn F{s_raw, var, s_f, var_f, t_f, t_raw, ok, n_terms, n1, slopes, max_sigma,
                     model2};
    for (long long p = 0; p < npix; ++p)
        finish_thread(p, npix, *P, F, flags, maps, sigma, sto2_all, packed);
}
