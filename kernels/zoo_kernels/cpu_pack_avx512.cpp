// The activation packing's AVX-512 micro-kernels (zoo_kernels; see cpu_pack_ukernels.h for the contract), float32,
// on AVX-512 F/BW/VL.
//
// channels_last: pixel by pixel, a word of 32 channels in 2 vectors of 16 lanes: fma, then a compare into a mask
// register, whose 16 bits are the channels' bits directly (no movemask); the last, partial word by masked loads and a
// masked compare (padding bits 0). The |y| sums in one vector, channel c in lane c mod 16.
// NCHW: 64 pixels of an image at a time (contiguous in each channel plane): 4 compares into masks per channel give the
// 64 pixel bits, which 8 x 8 bit transposes (8 at a time in the 64-bit lanes of a zmm) turn into channel bits per
// pixel; the |y| sums per pixel in 4 vectors. k-bit planes as the signs, the level's bit b of 16 lanes by one
// vptestmd into a mask.
//
// Compiled for the ISA by function attributes, not by flags or a pragma (as cpu_popcount_avx512.cpp): the library's
// other code stays the baseline ISA. (Lambdas do not inherit the attributes: the helpers are named functions.)

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu_pack_ukernels.h"

#ifdef ZOO_HAVE_PACK_X86_UKERNELS

#define ZOO_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace zoo_xnor_cpu {

namespace {

constexpr int64_t kWordBits = 32;
constexpr int64_t kPrefetchChannels = 16;  // NCHW: software prefetch distance, in channel rows of a block

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline __mmask16 lanes_below(int64_t n) {  // lanes i < n (n <= 16) set
  return static_cast<__mmask16>(n >= 16 ? 0xffffu : (1u << n) - 1);
}

// Bits of 32 channels x 64 pixels, from channel-major masks (bit p of bits[j]: channel j of pixel p) to pixel-major
// words (bit j of words[p]), as in cpu_pack_avx2.cpp: 8 x 8 byte transposes (unpacks) gather, per 8 pixels, the
// bytes of 8 channels; an 8 x 8 bit transpose of each (bit p of byte j -> bit j of byte p; 3 delta swaps over the 8
// 64-bit lanes of a zmm) gives a byte of channel bits per pixel; a last unpack interleaves the 4 bytes of each word.
template <int kShift>
ZOO_AVX512 inline __m512i delta_swap(__m512i v, int64_t keep, int64_t move) {
  const __m512i m = _mm512_set1_epi64(move);
  const __m512i moved = _mm512_or_si512(_mm512_slli_epi64(_mm512_and_si512(v, m), kShift),
                                        _mm512_and_si512(_mm512_srli_epi64(v, kShift), m));
  return _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi64(keep)), moved);
}

ZOO_AVX512 inline __m512i transpose8x8_bits(__m512i x) {
  x = delta_swap<7>(x, static_cast<int64_t>(0xAA55AA55AA55AA55ull), 0x00AA00AA00AA00AAll);
  x = delta_swap<14>(x, static_cast<int64_t>(0xCCCC3333CCCC3333ull), 0x0000CCCC0000CCCCll);
  return delta_swap<28>(x, static_cast<int64_t>(0xF0F0F0F00F0F0F0Full), 0x00000000F0F0F0F0ll);
}

ZOO_AVX512 inline __m128i load_low64(const uint64_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }

ZOO_AVX512 void transpose_word_bits(const uint64_t bits[32], uint32_t words[64]) {
  // x[g][pb]: byte j = byte pb of bits[8 g + j], then (transposed) byte p = pixel 8 pb + p
  alignas(64) uint64_t x[4][8];
  for (int64_t g = 0; g < 4; ++g) {
    const uint64_t* r = bits + 8 * g;
    const __m128i s0 = _mm_unpacklo_epi8(load_low64(r), load_low64(r + 1));
    const __m128i s1 = _mm_unpacklo_epi8(load_low64(r + 2), load_low64(r + 3));
    const __m128i s2 = _mm_unpacklo_epi8(load_low64(r + 4), load_low64(r + 5));
    const __m128i s3 = _mm_unpacklo_epi8(load_low64(r + 6), load_low64(r + 7));
    const __m128i u0 = _mm_unpacklo_epi16(s0, s1), u1 = _mm_unpackhi_epi16(s0, s1);
    const __m128i u2 = _mm_unpacklo_epi16(s2, s3), u3 = _mm_unpackhi_epi16(s2, s3);
    __m128i* dst = reinterpret_cast<__m128i*>(x[g]);
    _mm_store_si128(dst, _mm_unpacklo_epi32(u0, u2));      // pixel bytes 0, 1
    _mm_store_si128(dst + 1, _mm_unpackhi_epi32(u0, u2));  // 2, 3
    _mm_store_si128(dst + 2, _mm_unpacklo_epi32(u1, u3));  // 4, 5
    _mm_store_si128(dst + 3, _mm_unpackhi_epi32(u1, u3));  // 6, 7
    _mm512_store_si512(x[g], transpose8x8_bits(_mm512_load_si512(x[g])));
  }
  for (int64_t pb = 0; pb < 8; ++pb) {
    const __m128i q01 = _mm_unpacklo_epi8(load_low64(x[0] + pb), load_low64(x[1] + pb));
    const __m128i q23 = _mm_unpacklo_epi8(load_low64(x[2] + pb), load_low64(x[3] + pb));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(words + 8 * pb), _mm_unpacklo_epi16(q01, q23));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(words + 8 * pb + 4), _mm_unpackhi_epi16(q01, q23));
  }
}

ZOO_AVX512 inline void prefetch_row(const float* p, int64_t n) {  // the cache lines of n floats from p
  for (int64_t i = 0; i < n; i += 16) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T0);
}

// The lanes `valid` of 16 channels from c of a channels_last pixel (the others read as 0), with the affine.
ZOO_AVX512 inline __m512 load16(const float* src, const float* scale, const float* shift, int64_t c, __mmask16 valid) {
  __m512 y = _mm512_maskz_loadu_ps(valid, src + c);
  if (scale) y = _mm512_fmadd_ps(y, _mm512_maskz_loadu_ps(valid, scale + c), _mm512_maskz_loadu_ps(valid, shift + c));
  return y;
}

ZOO_AVX512 inline uint32_t signs16(__m512 y, __mmask16 valid) {  // y >= 0 (NaN: 0) in the lanes `valid`
  return static_cast<uint32_t>(_mm512_mask_cmp_ps_mask(valid, y, _mm512_setzero_ps(), _CMP_GE_OQ));
}

// The 16 partial sums of |y| in double, folded by halves (the order of cpu_pack_ukernels.h).
ZOO_AVX512 inline double fold16(__m512 acc) {
  const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(acc));                                         // d_0 .. d_7
  const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));  // d_8 ..
  const __m512d s = _mm512_add_pd(lo, hi);                                                   // d_i + d_{i+8}, i < 8
  const __m256d t = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));  // + d_{i+4}, i < 4
  const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));      // + d_{i+2}, i < 2
  return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}

// Pixels q .. q + qn - 1 (qn <= 64) of an NCHW float image (channel c's plane at img + c * plane): per channel, up
// to 4 compares into masks give a 64-bit mask of the pixels' bits (the last 16 pixels by a masked load), which
// transpose_word_bits turns into words. dst: the image's NHWC words; total[p] += sum_c |y| of pixel q + p (kAbs).
// Instantiated per case (affine or not, |y| sums or not, a full block of 64 pixels or not).
template <bool kAffine, bool kAbs, bool kFull>
ZOO_AVX512 void signs_block(const float* img, const float* scale, const float* shift, int64_t C, int64_t plane,
                            int64_t q, int64_t qn, int32_t* dst, double* total, const float* next, int64_t next_n) {
  const int64_t Cw = ceil_div(C, kWordBits), nvec = kFull ? 4 : ceil_div(qn, 16);
  const __m512 zero = _mm512_setzero_ps();
  const __mmask16 tail = lanes_below(qn - 16 * (nvec - 1));  // lanes of the last vector
  alignas(64) uint64_t bits[kWordBits];
  uint32_t words[kPackBlockPixels];
  for (int64_t k = 0; k < Cw; ++k) {
    __m512 part[4] = {zero, zero, zero, zero};
    for (int64_t j = 0; j < kWordBits; ++j) {
      const int64_t c = k * kWordBits + j;
      bits[j] = 0;  // padding bits stay 0
      if (c >= C) continue;
      const float* src = img + c * plane + q;
      // Software prefetch kPrefetchChannels channels ahead (into the next block past the last channel), as AVX2.
      if (c + kPrefetchChannels < C)
        prefetch_row(img + (c + kPrefetchChannels) * plane + q, qn);
      else if (next && c + kPrefetchChannels - C < C)
        prefetch_row(next + (c + kPrefetchChannels - C) * plane, next_n);
      __m512 a = zero, b = zero;
      if constexpr (kAffine) a = _mm512_set1_ps(scale[c]), b = _mm512_set1_ps(shift[c]);
      uint64_t m = 0;
      for (int v = 0; v < nvec; ++v) {
        __m512 y = kFull || v + 1 < nvec ? _mm512_loadu_ps(src + 16 * v) : _mm512_maskz_loadu_ps(tail, src + 16 * v);
        if constexpr (kAffine) y = _mm512_fmadd_ps(y, a, b);
        m |= static_cast<uint64_t>(_mm512_cmp_ps_mask(y, zero, _CMP_GE_OQ)) << (16 * v);  // NaN: 0
        if constexpr (kAbs) part[v] = _mm512_add_ps(part[v], _mm512_abs_ps(y));
      }
      bits[j] = m;
    }
    transpose_word_bits(bits, words);
    for (int64_t p = 0; p < qn; ++p) dst[(q + p) * Cw + k] = static_cast<int32_t>(words[p]);
    if constexpr (kAbs) {
      alignas(64) float lanes[kPackBlockPixels];
      for (int v = 0; v < 4; ++v) _mm512_store_ps(lanes + 16 * v, part[v]);
      for (int64_t p = 0; p < qn; ++p) total[p] += lanes[p];
    }
  }
}

using SignsBlockFn = void (*)(const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, int32_t*,
                              double*, const float*, int64_t);

constexpr SignsBlockFn kSignsBlocks[8] = {
    signs_block<false, false, false>, signs_block<false, false, true>, signs_block<false, true, false>,
    signs_block<false, true, true>,   signs_block<true, false, false>, signs_block<true, false, true>,
    signs_block<true, true, false>,   signs_block<true, true, true>};  // [4 affine + 2 abs + full]

// k-bit levels of 16 values, the operations of kbit_level in the same order (halving is exact); NaN: level 0.
ZOO_AVX512 inline __m512i kbit_levels16(__m512 y, __m512 n) {
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
  __m512 t = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(-1.0f)), one);
  t = _mm512_mul_ps(_mm512_mul_ps(n, _mm512_add_ps(t, one)), half);
  t = _mm512_roundscale_ps(_mm512_add_ps(t, half), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  return _mm512_maskz_cvttps_epi32(_mm512_cmp_ps_mask(y, y, _CMP_ORD_Q), t);
}

ZOO_AVX512 inline uint32_t plane_mask16(__m512i levels, int b, __mmask16 valid) {  // bit b of the levels `valid`
  return static_cast<uint32_t>(_mm512_mask_test_epi32_mask(valid, levels, _mm512_set1_epi32(1 << b)));
}

// k-bit planes of NCHW pixels q .. q + qn - 1 (qn <= 64), as signs_block: per channel a 64-bit mask per plane, then
// per plane the bit transposes. dst: the image's words in plane 0 (planes pstride apart).
ZOO_AVX512 void kbit_block(const float* img, const float* scale, const float* shift, int64_t C, int64_t plane,
                           int64_t q, int64_t qn, int bits, int32_t* dst, int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits), nvec = ceil_div(qn, 16);
  const __m512 n = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  const __mmask16 tail = lanes_below(qn - 16 * (nvec - 1));
  alignas(64) uint64_t masks[kPackMaxBits][kWordBits];
  uint32_t words[kPackBlockPixels];
  for (int64_t k = 0; k < Cw; ++k) {
    for (int64_t j = 0; j < kWordBits; ++j) {
      const int64_t c = k * kWordBits + j;
      for (int b = 0; b < bits; ++b) masks[b][j] = 0;  // padding bits stay 0
      if (c >= C) continue;
      const float* src = img + c * plane + q;
      if (c + kPrefetchChannels < C) prefetch_row(img + (c + kPrefetchChannels) * plane + q, qn);
      const __m512 a = scale ? _mm512_set1_ps(scale[c]) : _mm512_setzero_ps();
      const __m512 sh = scale ? _mm512_set1_ps(shift[c]) : _mm512_setzero_ps();
      for (int64_t v = 0; v < nvec; ++v) {
        const __mmask16 valid = v + 1 < nvec ? __mmask16(0xffff) : tail;
        __m512 y = _mm512_maskz_loadu_ps(valid, src + 16 * v);
        if (scale) y = _mm512_fmadd_ps(y, a, sh);
        const __m512i levels = kbit_levels16(y, n);
        for (int b = 0; b < bits; ++b) masks[b][j] |= static_cast<uint64_t>(plane_mask16(levels, b, valid)) << (16 * v);
      }
    }
    for (int b = 0; b < bits; ++b) {
      transpose_word_bits(masks[b], words);
      for (int64_t p = 0; p < qn; ++p) dst[b * pstride + (q + p) * Cw + k] = static_cast<int32_t>(words[p]);
    }
  }
}

}  // namespace

ZOO_AVX512 void pack_signs_rows_avx512(const float* x, int64_t pixels, int64_t C, const float* scale,
                                       const float* shift, int32_t* out, float* absmean) {
  const int64_t Cw = ceil_div(C, kWordBits), full = C / kWordBits, rest = C - full * kWordBits;
  const __mmask16 all = 0xffff, rest0 = lanes_below(rest), rest1 = lanes_below(std::max<int64_t>(0, rest - 16));
  for (int64_t p = 0; p < pixels; ++p) {
    const float* src = x + p * C;
    int32_t* dst = out + p * Cw;
    __m512 acc = _mm512_setzero_ps();  // channel c in lane c mod 16
    for (int64_t k = 0; k < full; ++k) {
      const int64_t c = k * kWordBits;
      const __m512 y0 = load16(src, scale, shift, c, all), y1 = load16(src, scale, shift, c + 16, all);
      dst[k] = static_cast<int32_t>(signs16(y0, all) | signs16(y1, all) << 16);
      acc = _mm512_add_ps(acc, _mm512_abs_ps(y0));
      acc = _mm512_add_ps(acc, _mm512_abs_ps(y1));
    }
    if (rest) {
      const int64_t c = full * kWordBits;
      const __m512 y0 = load16(src, scale, shift, c, rest0), y1 = load16(src, scale, shift, c + 16, rest1);
      dst[full] = static_cast<int32_t>(signs16(y0, rest0) | signs16(y1, rest1) << 16);
      acc = _mm512_add_ps(acc, _mm512_abs_ps(y0));
      acc = _mm512_add_ps(acc, _mm512_abs_ps(y1));
    }
    if (absmean) absmean[p] = static_cast<float>(fold16(acc) / static_cast<double>(C));
  }
}

ZOO_AVX512 void pack_signs_nchw_avx512(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end,
                                       const float* scale, const float* shift, int32_t* out, float* absmean) {
  const int64_t Cw = ceil_div(C, kWordBits), blocks = ceil_div(plane, kPackBlockPixels);
  double total[kPackBlockPixels];
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / blocks, q0 = (blk % blocks) * kPackBlockPixels;
    const int64_t qn = std::min(plane, q0 + kPackBlockPixels) - q0;
    const float* next = nullptr;
    int64_t next_n = 0;
    if (blk + 1 < end) {  // the next block of this range, whose first channels are prefetched
      const int64_t nq = ((blk + 1) % blocks) * kPackBlockPixels;
      next = x + (blk + 1) / blocks * C * plane + nq;
      next_n = std::min(plane, nq + kPackBlockPixels) - nq;
    }
    std::fill(total, total + kPackBlockPixels, 0.0);
    kSignsBlocks[4 * (scale != nullptr) + 2 * (absmean != nullptr) + (qn == kPackBlockPixels)](
        x + n * C * plane, scale, shift, C, plane, q0, qn, out + n * plane * Cw, total, next, next_n);
    if (absmean)
      for (int64_t p = 0; p < qn; ++p)
        absmean[n * plane + q0 + p] = static_cast<float>(total[p] / static_cast<double>(C));
  }
}

ZOO_AVX512 void pack_kbit_rows_avx512(const float* x, int64_t pixels, int64_t C, int bits, const float* scale,
                                      const float* shift, int32_t* out, int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits);
  const __m512 n = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  for (int64_t p = 0; p < pixels; ++p) {
    const float* src = x + p * C;
    int32_t* dst = out + p * Cw;
    for (int64_t k = 0; k < Cw; ++k) {
      const int64_t c = k * kWordBits;
      const __mmask16 v0 = lanes_below(C - c), v1 = lanes_below(std::max<int64_t>(0, C - c - 16));
      const __m512i l0 = kbit_levels16(load16(src, scale, shift, c, v0), n);
      const __m512i l1 = kbit_levels16(load16(src, scale, shift, c + 16, v1), n);
      for (int b = 0; b < bits; ++b)
        dst[b * pstride + k] = static_cast<int32_t>(plane_mask16(l0, b, v0) | plane_mask16(l1, b, v1) << 16);
    }
  }
}

ZOO_AVX512 void pack_kbit_nchw_avx512(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                                      const float* scale, const float* shift, int32_t* out, int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits), blocks = ceil_div(plane, kPackBlockPixels);
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / blocks, q0 = (blk % blocks) * kPackBlockPixels;
    kbit_block(x + n * C * plane, scale, shift, C, plane, q0, std::min(plane, q0 + kPackBlockPixels) - q0, bits,
               out + n * plane * Cw, pstride);
  }
}

}  // namespace zoo_xnor_cpu

#undef ZOO_AVX512
#endif  // ZOO_HAVE_PACK_X86_UKERNELS
