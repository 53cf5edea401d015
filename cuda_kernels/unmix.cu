// unmix.cu -- least-squares unmixing of reflectance (Unmixer.unmix / Unmixer.maps):
// A = -ln(max(R, eps)), c = pinv @ A per pixel (pinv in constant memory; any band count
// <= HSI_MAX_BANDS, <= HSI_MAX_COMPONENTS components); thb = c_HbO2 + c_Hb and
// sto2_raw = c_HbO2 / thb, both NaN where thb <= 0, any band is non-finite or any band has
// R <= eps (absorbance at the floor: out of the unmixing domain).
// Outputs: conc (npix, nk) float32 (the reference's (..., k) layout), thb, sto2_raw (npix).
// Launch (Python wrapper only): block = pixels per tile (multiple of 32), grid =
// ceil(npix / block), dynamic shared = 4 * block * stride bytes, stride = nb | 1.
#include "staging.cuh"

__constant__ ChainParams c_params;

extern "C" __global__ void unmix_f32(const float* __restrict__ refl, long long npix,
                                     int stride, float* __restrict__ conc,
                                     float* __restrict__ thb, float* __restrict__ sto2_raw) {
    extern __shared__ float tile[];
    const ChainParams& P = c_params;
    long long p0;
    const int np = tile_pixels(npix, &p0);
    stage_f32(refl, p0, np, P.nb, stride, tile);
    __syncthreads();
    if ((int)threadIdx.x >= np) return;
    const long long p = p0 + threadIdx.x;
    float c[HSI_MAX_COMPONENTS], msum[6], hbo2;
    const bool finite = unmix_pixel(AbsFromR{tile + threadIdx.x * stride}, P, c, msum);
    for (int k = 0; k < P.nk; ++k) conc[p * P.nk + k] = select_component(c, k);
    const float t = hb_total(c, P, &hbo2);
    const bool bad = !finite || !(t > 0.0f);
    thb[p] = bad ? hsi_nan() : t;
    sto2_raw[p] = bad ? hsi_nan() : hbo2 / t;
}
