// register_emulation.cpp -- cuda_kernels/register.cu's own source run on the CPU: the CUDA
// built-ins its kernels use are emulated and each launch walks its grid block by block,
// thread by thread (the kernels have no barriers and no shared memory, so any order is the
// GPU's). Compiled with -ffp-contract=off; mul_rn / add_rn (pixel_math.cuh) round every
// product and sum on their own as __fmul_rn / __fadd_rn do on the device.
//
// What this checks without a GPU: the registration arithmetic and its order, the edge clamps,
// the tap sets, the flagged pixels' fill, the saturation windows, the partial last block and
// the 64-bit element index walk. Not: __ldg, coalescing, timing (tests/gpu).
#include <cmath>
#include <cstring>

struct HsiDim3 { unsigned x = 0, y = 0, z = 0; };
static thread_local HsiDim3 threadIdx, blockIdx, blockDim;
inline float __ldg(const float* p) { return *p; }
inline unsigned short __ldg(const unsigned short* p) { return *p; }
inline unsigned char __ldg(const unsigned char* p) { return *p; }

#include "register.cu"

// Every thread of a 1-D grid of ceil(n / block) blocks, as the GPU would run it.
template <class F>
static void launch(long long n, int block, F kernel) {
    blockDim = HsiDim3{(unsigned)block, 1, 1};
    const long long grid = (n + block - 1) / block;
    for (long long bx = 0; bx < grid; ++bx) {
        blockIdx = HsiDim3{(unsigned)bx, 0, 0};
        for (int t = 0; t < block; ++t) {
            threadIdx = HsiDim3{(unsigned)t, 0, 0};
            kernel();
        }
    }
}

extern "C" void emu_register_sat_pixel(const unsigned short* raw, long long npix, int nb,
                                       float sat_level, int block, unsigned char* sat) {
    launch(npix, block, [&] { register_sat_pixel(raw, npix, nb, sat_level, sat); });
}

extern "C" void emu_register_u16(const unsigned short* raw, const float* dark,
                                 const unsigned char* sflags, const unsigned char* sat,
                                 int rows, int cols, int nb, const float* ky, const float* kx,
                                 unsigned ymask, unsigned xmask, unsigned short sat_out,
                                 int block, unsigned short* reg) {
    launch((long long)rows * cols * nb, block, [&] {
        register_u16(raw, dark, sflags, sat, rows, cols, nb, ky, kx, ymask, xmask, sat_out, reg);
    });
}
