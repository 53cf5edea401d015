// register.cu -- the band registration of a snapshot mosaic camera's uint16 counts on the GPU,
// before the chain (issue 14; NumPy reference BandRegistration.apply in
// edge/processing/register.py, native twin cpu_register.h). The arithmetic and its contract
// are in register_math.cuh; the host emulation (tests/cuda/register_emulation.cpp) includes
// this very file.
//
// register_sat_pixel: one thread per pixel, sat[p] = (max raw over bands >= sat_level).
// register_u16: one thread per output element (pixel, band), reg (npix, nb) uint16. A thread
// reads the x taps' columns of the y taps' rows of its band (up to 25 raw counts and darks,
// plus 9 per flagged neighbour's fill) with plain global loads: neighbouring threads read the
// same elements, which L1/L2 serve (MEMORY.md gives the DRAM bytes).
// Inputs: raw (npix, nb) uint16; dark (npix, nb) float32 or NULL; sflags (npix) uint8 or NULL;
// sat (npix) uint8 or NULL (no saturation level); ky, kx (nb, 5) float32 taps at -2..2;
// ymask, xmask: bit t set when offset t - 2 is nonzero for some band; sat_out: a saturated
// window's count. Launch (edge/backends/cuda_register.py only): block 256, grid ceil(n / 256)
// for n = npix (register_sat_pixel) or npix * nb (register_u16).
#include "register_math.cuh"

extern "C" __global__ void register_sat_pixel(const unsigned short* __restrict__ raw,
                                              long long npix, int nb, float sat_level,
                                              unsigned char* __restrict__ sat) {
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= npix) return;
    unsigned short m = 0;
    for (int b = 0; b < nb; ++b) {
        const unsigned short v = __ldg(raw + p * nb + b);
        m = v > m ? v : m;
    }
    sat[p] = (float)m >= sat_level ? 1 : 0;
}

extern "C" __global__ void register_u16(const unsigned short* __restrict__ raw,
                                        const float* __restrict__ dark,
                                        const unsigned char* __restrict__ sflags,
                                        const unsigned char* __restrict__ sat, int rows,
                                        int cols, int nb, const float* __restrict__ ky,
                                        const float* __restrict__ kx, unsigned ymask,
                                        unsigned xmask, unsigned short sat_out,
                                        unsigned short* __restrict__ reg) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long long)rows * cols * nb) return;
    reg[e] = reg_element(raw, dark, sflags, sat, rows, cols, nb, ky, kx, ymask, xmask, sat_out,
                         e);
}
