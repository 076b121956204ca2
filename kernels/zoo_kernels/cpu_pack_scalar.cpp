// The activation packing's scalar micro-kernels (zoo_kernels; see cpu_pack_ukernels.h for the contract): any CPU, and
// float64 inputs, which the vector variants do not take. One value at a time, in the order that cpu_pack_ukernels.h
// defines for the channel mean of |y| (the vector variants compute the same sums in their lanes).

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu_pack_ukernels.h"

namespace zoo_xnor_cpu {

namespace {

constexpr int64_t kWordBits = 32;
constexpr int kAbsLanes = 16;  // channels_last: the partial sums of |y| (channel c into partial c % 16)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The packed value of x for channel c: x, or fma(x, scale[c], shift[c]).
template <typename T>
inline T affine(T x, const float* scale, const float* shift, int64_t c) {
  return scale ? std::fma(x, static_cast<T>(scale[c]), static_cast<T>(shift[c])) : x;
}

// XNOR-Net's k-bit level of y with the operations of the PyTorch definition, in the same order (kbit.py).
template <typename T>
inline uint32_t kbit_level(T y, T n) {
  if (std::isnan(y)) return 0;
  const T t = std::min(std::max(y, T(-1)), T(1));
  return static_cast<uint32_t>(std::floor(n * (t + T(1)) / T(2) + T(0.5)));
}

// The 16 partial sums of |y| in double, folded by halves (the order of cpu_pack_ukernels.h).
template <typename T>
double fold16(const T part[kAbsLanes]) {
  double d[kAbsLanes];
  for (int i = 0; i < kAbsLanes; ++i) d[i] = static_cast<double>(part[i]);
  for (int half = kAbsLanes / 2; half >= 1; half /= 2)
    for (int i = 0; i < half; ++i) d[i] += d[i + half];
  return d[0];
}

template <typename T>
void signs_rows(const T* x, int64_t pixels, int64_t C, const float* scale, const float* shift, int32_t* out,
                float* absmean) {
  const int64_t Cw = ceil_div(C, kWordBits);
  for (int64_t p = 0; p < pixels; ++p) {
    const T* src = x + p * C;
    T part[kAbsLanes] = {};
    for (int64_t k = 0; k < Cw; ++k) {
      uint32_t word = 0;
      for (int64_t c = k * kWordBits; c < std::min(C, (k + 1) * kWordBits); ++c) {
        const T y = affine(src[c], scale, shift, c);
        word |= (y >= T(0) ? 1u : 0u) << (c % kWordBits);  // NaN >= 0 is false
        part[c % kAbsLanes] += std::fabs(y);
      }
      out[p * Cw + k] = static_cast<int32_t>(word);
    }
    if (absmean) absmean[p] = static_cast<float>(fold16(part) / static_cast<double>(C));
  }
}

template <typename T>
void signs_nchw(const T* x, int64_t C, int64_t plane, int64_t begin, int64_t end, const float* scale,
                const float* shift, int32_t* out, float* absmean) {
  const int64_t Cw = ceil_div(C, kWordBits), blocks = ceil_div(plane, kPackBlockPixels);
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / blocks, q0 = (blk % blocks) * kPackBlockPixels;
    const T* img = x + n * C * plane;
    for (int64_t q = q0; q < std::min(plane, q0 + kPackBlockPixels); ++q) {
      double total = 0.0;
      for (int64_t k = 0; k < Cw; ++k) {
        uint32_t word = 0;
        T part = 0;
        for (int64_t c = k * kWordBits; c < std::min(C, (k + 1) * kWordBits); ++c) {
          const T y = affine(img[c * plane + q], scale, shift, c);
          word |= (y >= T(0) ? 1u : 0u) << (c % kWordBits);
          part += std::fabs(y);
        }
        out[(n * plane + q) * Cw + k] = static_cast<int32_t>(word);
        total += static_cast<double>(part);
      }
      if (absmean) absmean[n * plane + q] = static_cast<float>(total / static_cast<double>(C));
    }
  }
}

// The planes' words of one pixel, channel c at src[c * cstride]: dst[b * pstride + k].
template <typename T>
void kbit_pixel(const T* src, int64_t cstride, int64_t C, int bits, const float* scale, const float* shift,
                int32_t* dst, int64_t pstride) {
  const T n = static_cast<T>((1 << bits) - 1);
  for (int64_t k = 0; k < ceil_div(C, kWordBits); ++k) {
    uint32_t words[kPackMaxBits] = {};
    for (int64_t c = k * kWordBits; c < std::min(C, (k + 1) * kWordBits); ++c) {
      const uint32_t level = kbit_level(affine(src[c * cstride], scale, shift, c), n);
      for (int b = 0; b < bits; ++b) words[b] |= ((level >> b) & 1u) << (c % kWordBits);
    }
    for (int b = 0; b < bits; ++b) dst[b * pstride + k] = static_cast<int32_t>(words[b]);
  }
}

template <typename T>
void kbit_rows(const T* x, int64_t pixels, int64_t C, int bits, const float* scale, const float* shift, int32_t* out,
               int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits);
  for (int64_t p = 0; p < pixels; ++p) kbit_pixel(x + p * C, 1, C, bits, scale, shift, out + p * Cw, pstride);
}

template <typename T>
void kbit_nchw(const T* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits, const float* scale,
               const float* shift, int32_t* out, int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits), blocks = ceil_div(plane, kPackBlockPixels);
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / blocks, q0 = (blk % blocks) * kPackBlockPixels;
    for (int64_t q = q0; q < std::min(plane, q0 + kPackBlockPixels); ++q)
      kbit_pixel(x + n * C * plane + q, plane, C, bits, scale, shift, out + (n * plane + q) * Cw, pstride);
  }
}

}  // namespace

void pack_signs_rows_scalar(const float* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                            int32_t* out, float* absmean) {
  signs_rows(x, pixels, C, scale, shift, out, absmean);
}
void pack_signs_rows_scalar(const double* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                            int32_t* out, float* absmean) {
  signs_rows(x, pixels, C, scale, shift, out, absmean);
}
void pack_signs_nchw_scalar(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, const float* scale,
                            const float* shift, int32_t* out, float* absmean) {
  signs_nchw(x, C, plane, begin, end, scale, shift, out, absmean);
}
void pack_signs_nchw_scalar(const double* x, int64_t C, int64_t plane, int64_t begin, int64_t end, const float* scale,
                            const float* shift, int32_t* out, float* absmean) {
  signs_nchw(x, C, plane, begin, end, scale, shift, out, absmean);
}
void pack_kbit_rows_scalar(const float* x, int64_t pixels, int64_t C, int bits, const float* scale, const float* shift,
                           int32_t* out, int64_t pstride) {
  kbit_rows(x, pixels, C, bits, scale, shift, out, pstride);
}
void pack_kbit_rows_scalar(const double* x, int64_t pixels, int64_t C, int bits, const float* scale, const float* shift,
                           int32_t* out, int64_t pstride) {
  kbit_rows(x, pixels, C, bits, scale, shift, out, pstride);
}
void pack_kbit_nchw_scalar(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                           const float* scale, const float* shift, int32_t* out, int64_t pstride) {
  kbit_nchw(x, C, plane, begin, end, bits, scale, shift, out, pstride);
}
void pack_kbit_nchw_scalar(const double* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                           const float* scale, const float* shift, int32_t* out, int64_t pstride) {
  kbit_nchw(x, C, plane, begin, end, bits, scale, shift, out, pstride);
}

}  // namespace zoo_xnor_cpu
