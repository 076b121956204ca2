// Micro-kernels of the activation packing on raw pointers (no ATen types), one translation unit per ISA
// (cpu_pack_scalar.cpp, cpu_pack_avx2.cpp, cpu_pack_avx512.cpp), each compiled for its ISA by function attributes and
// called by the driver (cpu_pack.cpp) only where the CPU has that ISA; the driver owns the checks, the threads and the
// choice of variant (kPackVariants: the first one the CPU runs, unless ZOO_KERNELS_ISA or the op's variant says).
//
// Packed format (see packing.py): int32 words, 32 channels per word, bit j (LSB = 0) of word k holds channel
// 32 * k + j, 1 iff y >= 0 (NaN packs as 0, -0.0 as 1); padding bits past C are 0. y = x, or with the fused affine
// y = fma(x, scale[c], shift[c]) (one rounding, as torch's CPU BatchNorm), scale and shift float32 (C,) or both null.
// k-bit planes (see kbit.py): the level L = floor(n (clamp(y, -1, 1) + 1) / 2 + 1/2), n = 2^bits - 1 (NaN: level 0),
// plane b (at out + b * pstride) holds bit b of L, packed as the signs are.
//
// Every variant gives the same words and the same absmean, bit for bit: the channel mean of |y| is summed in one order,
// which each ISA computes in its own registers:
//   channels_last: per pixel 16 float partial sums, partial i of |y_c| over c = i mod 16 in increasing c, then the 16
//     partials in double folded by halves (d_i += d_{i+8} for i < 8, then d_i += d_{i+4}, d_{i+2}, d_{i+1}: four
//     vector adds instead of a chain of 16);
//   NCHW: per pixel and word k, a float sum of |y_c| over c = 32 k .. 32 k + 31 in increasing c, then the words' sums
//     in double in increasing k;
// and absmean = (float) (total / C). (Adding the zeros of masked lanes leaves a sum of |y| unchanged.)
#pragma once

#include <cstdint>

namespace zoo_xnor_cpu {

constexpr int64_t kPackBlockPixels = 64;  // NCHW: an image's pixels per block, one 64-bit mask per channel
constexpr int kPackMaxBits = 16;          // k-bit planes: at most 16 (levels up to 2^16 - 1)

// Sign packing of `pixels` channels_last pixels: x[p * C + c] -> out[p * Cw + k]; absmean[p] when not null.
using PackSignsRowsFn = void (*)(const float* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                                 int32_t* out, float* absmean);
// Sign packing of NCHW blocks begin .. end - 1 of x (N, C, plane): block b is pixels 64 (b % blocks) ..
// (+ 64, at most plane) of image b / blocks, blocks = ceil(plane / 64); out (N, plane, Cw), absmean (N, plane).
using PackSignsNchwFn = void (*)(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end,
                                 const float* scale, const float* shift, int32_t* out, float* absmean);
// k-bit planes of `pixels` channels_last pixels: plane b's word k of pixel p at out[b * pstride + p * Cw + k].
using PackKbitRowsFn = void (*)(const float* x, int64_t pixels, int64_t C, int bits, const float* scale,
                                const float* shift, int32_t* out, int64_t pstride);
// k-bit planes of NCHW blocks begin .. end - 1 (as PackSignsNchwFn): out[b * pstride + (n * plane + q) * Cw + k].
using PackKbitNchwFn = void (*)(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                                const float* scale, const float* shift, int32_t* out, int64_t pstride);

// One variant: its name (as ZOO_KERNELS_ISA spells it), its number (as cpu.py and set_auto_isa number the ISAs), the
// CPU features it needs (comma-separated, as __builtin_cpu_supports names them; "" for none) and its micro-kernels.
struct PackVariant {
  const char* name;
  int64_t isa;
  const char* features;
  PackSignsRowsFn signs_rows;
  PackSignsNchwFn signs_nchw;
  PackKbitRowsFn kbit_rows;
  PackKbitNchwFn kbit_nchw;
};

// Scalar (any CPU; float64 inputs too, which only these kernels take).
void pack_signs_rows_scalar(const float* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                            int32_t* out, float* absmean);
void pack_signs_rows_scalar(const double* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                            int32_t* out, float* absmean);
void pack_signs_nchw_scalar(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, const float* scale,
                            const float* shift, int32_t* out, float* absmean);
void pack_signs_nchw_scalar(const double* x, int64_t C, int64_t plane, int64_t begin, int64_t end, const float* scale,
                            const float* shift, int32_t* out, float* absmean);
void pack_kbit_rows_scalar(const float* x, int64_t pixels, int64_t C, int bits, const float* scale, const float* shift,
                           int32_t* out, int64_t pstride);
void pack_kbit_rows_scalar(const double* x, int64_t pixels, int64_t C, int bits, const float* scale, const float* shift,
                           int32_t* out, int64_t pstride);
void pack_kbit_nchw_scalar(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                           const float* scale, const float* shift, int32_t* out, int64_t pstride);
void pack_kbit_nchw_scalar(const double* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                           const float* scale, const float* shift, int32_t* out, int64_t pstride);

#if defined(__x86_64__)
#define ZOO_HAVE_PACK_X86_UKERNELS 1

// AVX2 + FMA (cpu_pack_avx2.cpp); float32 only.
void pack_signs_rows_avx2(const float* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                          int32_t* out, float* absmean);
void pack_signs_nchw_avx2(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, const float* scale,
                          const float* shift, int32_t* out, float* absmean);
void pack_kbit_rows_avx2(const float* x, int64_t pixels, int64_t C, int bits, const float* scale, const float* shift,
                         int32_t* out, int64_t pstride);
void pack_kbit_nchw_avx2(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                         const float* scale, const float* shift, int32_t* out, int64_t pstride);

// AVX-512 F/BW/VL (cpu_pack_avx512.cpp); float32 only.
void pack_signs_rows_avx512(const float* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                            int32_t* out, float* absmean);
void pack_signs_nchw_avx512(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, const float* scale,
                            const float* shift, int32_t* out, float* absmean);
void pack_kbit_rows_avx512(const float* x, int64_t pixels, int64_t C, int bits, const float* scale, const float* shift,
                           int32_t* out, int64_t pstride);
void pack_kbit_nchw_avx512(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                           const float* scale, const float* shift, int32_t* out, int64_t pstride);
#endif

// The variants, fastest first (the driver's auto choice is the first the CPU runs); the last one is scalar.
inline constexpr PackVariant kPackVariants[] = {
#ifdef ZOO_HAVE_PACK_X86_UKERNELS
    {"avx512", 4, "avx512f,avx512bw,avx512vl", pack_signs_rows_avx512, pack_signs_nchw_avx512, pack_kbit_rows_avx512,
     pack_kbit_nchw_avx512},
    {"avx2", 2, "avx2,fma,popcnt,bmi2", pack_signs_rows_avx2, pack_signs_nchw_avx2, pack_kbit_rows_avx2,
     pack_kbit_nchw_avx2},
#endif
    {"scalar", 1, "", pack_signs_rows_scalar, pack_signs_nchw_scalar, pack_kbit_rows_scalar, pack_kbit_nchw_scalar},
};

}  // namespace zoo_xnor_cpu
