// common.cuh -- limits, flag bits and the parameter block shared by every hsi-edge kernel.
//
// This header is included by the .cu kernels (nvcc) and by the host shim that tests the
// per-pixel arithmetic on the CPU (g++): outside nvcc the CUDA qualifiers are defined away.
// The parameter block holds only 4-byte int/float fields so its byte layout is the same for
// nvcc, g++ and the NumPy structured dtype that fills it (edge/backends/cuda_params.py); the
// host shim exports sizeof/offsetof so the tests check that layout.
#pragma once

#ifndef __CUDACC__
#include <math.h>
#include <stdint.h>
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __constant__
#endif

#define HSI_HD __host__ __device__ __forceinline__

// Documented maxima (README, cuda_kernels/MEMORY.md): any band count 1..HSI_MAX_BANDS and
// 1..HSI_MAX_COMPONENTS chromophore components.
#define HSI_MAX_BANDS 256
#define HSI_MAX_COMPONENTS 8
#define HSI_MAX_TABLE 256
#define HSI_MAX_TABLE_ROWS 16   // rows of a 2-D StO2 table (the THb axis; 1: a 1-D table)
#define HSI_MAX_CLASSES 256
#define HSI_D2_TAPS 5      // Savitzky-Golay window 5 (FACTS.md, TIVITA-style indices)
#define HSI_N_MAPS 6       // sto2, thb, sto2_index, nir, thi, twi (map ids 0..5)

// Pixel flag bits: the same values as edge/backends/base.py FLAG_*.
#define HSI_FLAG_SATURATED 1u
#define HSI_FLAG_UNDEREXPOSED 2u
#define HSI_FLAG_NONFINITE 4u
#define HSI_FLAG_BAD_PIXEL 8u
#define HSI_FLAG_UNMIX_INVALID 16u

enum HsiMapId { MAP_STO2 = 0, MAP_THB = 1, MAP_STO2_INDEX = 2, MAP_NIR = 3, MAP_THI = 4, MAP_TWI = 5 };

// Everything the per-pixel chain needs that is the same for every pixel of a configuration.
// Lives in __constant__ memory on the device: every thread of a warp reads the same element
// at the same time (pinv[k][b] in the band loop), which the constant cache broadcasts.
struct ChainParams {
    int nb;              // bands
    int nk;              // unmixing components (<= HSI_MAX_COMPONENTS)
    int i_hbo2;          // component index of oxyhaemoglobin
    int i_hb;            // component index of deoxyhaemoglobin
    float eps;           // absorbance clip: A = -ln(max(R, eps))
    float sat_level;     // raw count at/above which a band is saturated
    int n_table;         // StO2 calibration table length K (knots per row, >= 2)
    float table_x0;      // first table abscissa (Sto2Calibration.x0)
    float table_dx;      // uniform table spacing (Sto2Calibration.dx, float32)
    int n_rows;          // rows R of the table on the THb axis (1: a 1-D table)
    float thb_x0;        // first THb-axis value, in sqrt(THb) (Sto2Calibration.thb_x0)
    float thb_dx;        // THb-axis spacing, in sqrt(THb) (Sto2Calibration.thb_dx)
    int n_spec;          // spectra channels in the packed input
    int n_maps;          // map channels in the packed input
    int zero_flagged;    // 1: packed input is 0 at flagged pixels (the backend's rule)
    // TIVITA-style indices (FACTS.md): three ratio indices
    // idx_j = clip01((mean(A, win 2j) / mean(A, win 2j+1) - ratio_off[j]) / ratio_div[j]),
    // j = 0 NIR, 1 THI, 2 TWI; windows are band ranges [lo, hi) (empty: NaN index);
    // mean = (sum of A over the window) * mean_w (float32 of 1/count, as the reference's
    // weight matrix).
    int mean_lo[6];
    int mean_hi[6];
    float mean_w[6];
    float ratio_off[3];
    float ratio_div[3];
    // StO2 index = (r1/s1)/(r1/s1 + r2/s2), r = min of A'' over band ranges [min_lo, min_hi).
    int min_lo[2];
    int min_hi[2];
    float s1;
    float s2;
    // A''[b] = sum_j d2_w[b][j] * A[d2_start[b] + j]: the Savitzky-Golay 2nd derivative as a
    // 5-tap filter per band, taken from the reference operator (edges included).
    int d2_start[HSI_MAX_BANDS];
    float d2_w[HSI_MAX_BANDS * HSI_D2_TAPS];
    float pinv[HSI_MAX_COMPONENTS * HSI_MAX_BANDS];   // [k][b], row stride HSI_MAX_BANDS
    // Sto2Calibration.table_grid (R, K) row-major, row stride K = n_table (packed: a 1-D
    // table fills the first K entries, as before the THb axis).
    float table_y[HSI_MAX_TABLE_ROWS * HSI_MAX_TABLE];
    int spec_bands[HSI_MAX_BANDS];                    // band index of spectra channel i
    int map_ids[8];                                   // HsiMapId of map channel i
};
