// sto2.cu -- calibrated StO2 (edge.processing.sto2.Sto2Calibration.apply): the raw
// least-squares fraction mapped through a monotone calibration curve given as a uniform table
// in constant memory (linear interpolation, clamped at the ends, non-finite -> NaN; FACTS.md
// "Tissue optics": the curve removes the 15-29 point bias of plain least squares). A table
// with a THb axis (ChainParams.n_rows > 1, issue 14) also interpolates between curves by the
// pixel's haemoglobin total thb (c_HbO2 + c_Hb, unmix_f32's thb output); a 1-D table neither
// reads nor needs it (thb may be NULL).
// Launch (Python wrapper only): 1-D grid-stride loop, any grid/block.
#include "pixel_math.cuh"

__constant__ ChainParams c_params;

extern "C" __global__ void sto2_calibrate_f32(const float* __restrict__ sto2_raw,
                                              const float* __restrict__ thb, long long n,
                                              float* __restrict__ sto2) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        sto2[i] = sto2_calibrate(__ldg(sto2_raw + i),
                                 (thb && c_params.n_rows > 1) ? __ldg(thb + i) : hsi_nan(),
                                 c_params);
}
