// host_emulation.cpp -- the tiled chain kernel (cuda_kernels/chain.cu) run on the CPU: the
// same staging (staging.cuh) and per-thread tail (chain_tail.cuh), block by block, with the
// CUDA built-ins emulated and the kernel's two __syncthreads() as phase boundaries (every
// "thread" of the block finishes a phase before any starts the next, which is exactly what
// the barriers guarantee). Shared memory is poisoned with NaN before each block, so a thread
// that read an element no thread staged shows up as a wrong map, not as a lucky match.
//
// What this checks without a GPU: tile_pixels for the last, partial block, the incremental
// (pixel, band) walk of for_tile_elements for any block size and band count, the odd row
// stride, the flag OR of staging, write_reflectance, and the tail's planar stores. What it
// cannot check: real concurrency (atomics, barriers), __ldg, coalescing, timing.
#include <cmath>
#include <cstring>
#include <vector>
#include "common.cuh"

struct HsiDim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local HsiDim3 threadIdx, blockIdx, blockDim;
inline float __ldg(const float* p) { return *p; }
inline unsigned short __ldg(const unsigned short* p) { return *p; }
inline unsigned atomicOr(unsigned* p, unsigned v) { const unsigned old = *p; *p |= v; return old; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }

#include "staging.cuh"
#include "chain_tail.cuh"

template <class T>
static void emulate(const ChainParams* P, const T* raw, const float* dark, const float* scale,
                    const unsigned char* static_flags, long long npix, int block, int stride,
                    float factor, float* maps, unsigned char* flags, float* packed, float* refl) {
    std::vector<float> smem;
    std::vector<unsigned> sflags(block);
    const long long grid = (npix + block - 1) / block;
    blockDim.x = (unsigned)block;
    for (long long bx = 0; bx < grid; ++bx) {
        blockIdx.x = (unsigned)bx;
        smem.assign((size_t)block * stride, std::nanf(""));
        sflags.assign(block, 0x80u);       // a flag bit no code sets: shows any unset slot
        long long p0 = 0;
        int np = 0;
        for (int t = 0; t < block; ++t) {          // phase 1: static flags
            threadIdx.x = t;
            np = tile_pixels(npix, &p0);
            init_flags(static_flags, p0, np, sflags.data());
        }
        for (int t = 0; t < block; ++t) {          // __syncthreads(); phase 2: staging
            threadIdx.x = t;
            stage_calibrated(raw, dark, scale, factor, P->sat_level, p0, np, P->nb, stride,
                             smem.data(), sflags.data());
        }
        for (int t = 0; t < block; ++t) {          // __syncthreads(); phase 3: the tail
            threadIdx.x = t;
            if (refl) write_reflectance(smem.data(), sflags.data(), p0, np, P->nb, stride, refl);
            if (t >= np) continue;
            chain_thread(smem.data() + (size_t)t * stride, sflags[t], p0 + t, npix, *P, maps,
                         flags, packed);
        }
    }
}

extern "C" void emu_chain(const ChainParams* P, const void* raw, int raw_u16, const float* dark,
                          const float* scale, const unsigned char* static_flags, long long npix,
                          int block, int stride, float factor, float* maps, unsigned char* flags,
                          float* packed, float* refl) {
    if (raw_u16)
        emulate(P, (const unsigned short*)raw, dark, scale, static_flags, npix, block, stride,
                factor, maps, flags, packed, refl);
    else
        emulate(P, (const float*)raw, dark, scale, static_flags, npix, block, stride, factor,
                maps, flags, packed, refl);
}
