// The popcount conv's scalar micro-kernels (zoo_kernels; see cpu_popcount_ukernels.h for the contracts): 64-bit
// popcounts over im2col rows, for every CPU, and the reference the SIMD variants are tested against.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_popcount_ukernels.h"

namespace zoo_xnor_cpu {

void layout_rows(const int32_t* w, int64_t O, int64_t K32, uint64_t* B) {
  const int64_t K64 = ceil_div(K32, 2);
  std::memset(B, 0, static_cast<size_t>(O * K64) * sizeof(uint64_t));
  for (int64_t o = 0; o < O; ++o) std::memcpy(B + o * K64, w + o * K32, static_cast<size_t>(K32) * 4);
}

void popcount_gemm_scalar(const uint64_t* A, int64_t rows, const uint64_t* B, int64_t oe, int64_t K64, int32_t* D,
                          int64_t ldd) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < oe; ++j) {
      const uint64_t* a = A + i * K64;
      const uint64_t* b = B + j * K64;
      int64_t c0 = 0, c1 = 0, k = 0;
      for (; k + 2 <= K64; k += 2) {  // two independent popcount chains
        c0 += __builtin_popcountll(a[k] ^ b[k]);
        c1 += __builtin_popcountll(a[k + 1] ^ b[k + 1]);
      }
      if (k < K64) c0 += __builtin_popcountll(a[k] ^ b[k]);
      D[i * ldd + j] = static_cast<int32_t>(c0 + c1);
    }
}

namespace {

template <bool kExtra>
void epilogue_rows(const int32_t* sums, int64_t ldd, int64_t tp, const int64_t* pixel, const int32_t* pattern,
                   const int32_t* lead_rows, const float* alpha, const float* bias, const float* scale,
                   const float* res_rows, bool relu, int64_t O, int64_t oe, float* out) {
  for (int64_t i = 0; i < tp; ++i) {
    const int64_t p = pixel[i];
    if (p < 0) continue;
    const int32_t* d = sums + i * ldd;
    const int32_t* lead = lead_rows + (pattern[i] + 1) * ldd;
    const float s = scale ? scale[p] : 1.0f;
    const float* res = res_rows ? res_rows + p * O : nullptr;
    float* dst = out + p * O;
    for (int64_t j = 0; j < oe; ++j) {
      float v = std::fma(static_cast<float>(lead[j] - 2 * d[j]), alpha[j] * s, bias[j]);
      if (kExtra && res) v += res[j];
      if (kExtra && relu) v = v < 0.0f ? 0.0f : v;  // a NaN stays NaN
      dst[j] = v;
    }
  }
}

}  // namespace

EpilogueFn<int32_t> epilogue_scalar(bool extra, bool /*stream: never*/) {
  return extra ? epilogue_rows<true> : epilogue_rows<false>;
}

}  // namespace zoo_xnor_cpu
