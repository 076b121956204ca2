// The activation packing's AVX2 micro-kernels (zoo_kernels; see cpu_pack_ukernels.h for the contract), float32.
//
// channels_last: pixel by pixel, 32 contiguous channels per word in 4 vectors of 8 lanes (fma, compare, movemask;
// the last, partial word by masked loads); the |y| sums in two vectors, channels c = 0..7 and 8..15 mod 16.
// NCHW: 64 pixels of an image at a time (contiguous in each channel plane): 8 compares + movemasks per channel give
// 64 pixel bits, 8 x 8 bit transposes turn them into channel bits per pixel; the |y| sums per pixel in 8 vectors.
//
// Compiled for the ISA by function attributes, not by flags or a pragma (as cpu_popcount_avx512.cpp): the library's
// other code stays the baseline ISA. (Lambdas do not inherit the attributes: the helpers are named functions.)

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu_pack_ukernels.h"

#ifdef ZOO_HAVE_PACK_X86_UKERNELS

#define ZOO_AVX2 __attribute__((target("avx2,fma,popcnt,bmi2")))

namespace zoo_xnor_cpu {

namespace {

constexpr int64_t kWordBits = 32;
constexpr int64_t kPrefetchChannels = 16;  // NCHW: software prefetch distance, in channel rows of a block

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

ZOO_AVX2 inline __m256i lanes_below(int64_t n) {  // lanes i < n set
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Bits of 32 channels x 64 pixels, from channel-major masks (bit p of bits[j]: channel j of pixel p) to pixel-major
// words (bit j of words[p]). Per 8 channels an 8 x 8 byte transpose (unpacks) gathers, per 8 pixels, the 8 channels'
// bytes; an 8 x 8 bit transpose of each (bit p of byte j -> bit j of byte p; 3 delta swaps, 4 at a time in the 64-bit
// lanes of a ymm) gives a byte of channel bits per pixel; a last unpack interleaves the 4 bytes of each word.
ZOO_AVX2 inline __m256i delta_swap(__m256i v, int shift, int64_t keep, int64_t move) {
  const __m256i m = _mm256_set1_epi64x(move);
  const __m128i n = _mm_cvtsi32_si128(shift);
  const __m256i moved =
      _mm256_or_si256(_mm256_sll_epi64(_mm256_and_si256(v, m), n), _mm256_and_si256(_mm256_srl_epi64(v, n), m));
  return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi64x(keep)), moved);
}

ZOO_AVX2 inline __m256i transpose8x8_bits(__m256i x) {
  x = delta_swap(x, 7, static_cast<int64_t>(0xAA55AA55AA55AA55ull), 0x00AA00AA00AA00AAll);
  x = delta_swap(x, 14, static_cast<int64_t>(0xCCCC3333CCCC3333ull), 0x0000CCCC0000CCCCll);
  return delta_swap(x, 28, static_cast<int64_t>(0xF0F0F0F00F0F0F0Full), 0x00000000F0F0F0F0ll);
}

ZOO_AVX2 inline __m128i load_low64(const uint64_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }

ZOO_AVX2 void transpose_word_bits(const uint64_t bits[32], uint32_t words[64]) {
  // x[g][pb]: byte j = byte pb of bits[8 g + j], then (transposed) byte p = pixel 8 pb + p
  alignas(32) uint64_t x[4][8];
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
  }
  for (int64_t g = 0; g < 4; ++g)
    for (int64_t h = 0; h < 2; ++h) {
      __m256i* v = reinterpret_cast<__m256i*>(x[g] + 4 * h);
      _mm256_store_si256(v, transpose8x8_bits(_mm256_load_si256(v)));
    }
  for (int64_t pb = 0; pb < 8; ++pb) {
    const __m128i q01 = _mm_unpacklo_epi8(load_low64(x[0] + pb), load_low64(x[1] + pb));
    const __m128i q23 = _mm_unpacklo_epi8(load_low64(x[2] + pb), load_low64(x[3] + pb));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(words + 8 * pb), _mm_unpacklo_epi16(q01, q23));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(words + 8 * pb + 4), _mm_unpackhi_epi16(q01, q23));
  }
}

ZOO_AVX2 inline void prefetch_row(const float* p, int64_t n) {  // the cache lines of n floats from p
  for (int64_t i = 0; i < n; i += 16) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T0);
}

// 8 channels from c of a channels_last pixel (the first n < 8 by masked loads when kTail; the others read as 0):
// their sign bits, |y| added to acc.
template <bool kTail>
ZOO_AVX2 inline uint32_t signs8(const float* src, const float* scale, const float* shift, int64_t c, int64_t n,
                                __m256& acc) {
  __m256 y;
  if constexpr (kTail) {
    const __m256i m = lanes_below(n);
    y = _mm256_maskload_ps(src + c, m);
    if (scale) y = _mm256_fmadd_ps(y, _mm256_maskload_ps(scale + c, m), _mm256_maskload_ps(shift + c, m));
  } else {
    y = _mm256_loadu_ps(src + c);
    if (scale) y = _mm256_fmadd_ps(y, _mm256_loadu_ps(scale + c), _mm256_loadu_ps(shift + c));
  }
  acc = _mm256_add_ps(acc, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), y));
  const uint32_t bits = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GE_OQ)));
  return kTail ? bits & ((1u << n) - 1) : bits;  // NaN -> 0; padding bits 0
}

// The 16 partial sums of |y| (lo: 0..7, hi: 8..15) in double, folded by halves (the order of cpu_pack_ukernels.h).
ZOO_AVX2 inline double fold16(__m256 lo, __m256 hi) {
  const __m256d s0 = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(lo)),
                                   _mm256_cvtps_pd(_mm256_castps256_ps128(hi)));  // d_i + d_{i+8}, i = 0..3
  const __m256d s1 = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(lo, 1)),
                                   _mm256_cvtps_pd(_mm256_extractf128_ps(hi, 1)));       // i = 4..7
  const __m256d t = _mm256_add_pd(s0, s1);                                               // + d_{i+4}, i < 4
  const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));  // + d_{i+2}, i < 2
  return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}

// Pixels q .. q + qn - 1 (qn <= 64) of an NCHW float image (channel c's plane at img + c * plane): per channel, up
// to 8 compares + movemasks give a 64-bit mask of the pixels' bits (the last 8 pixels by a masked load), which
// transpose_word_bits turns into words. dst: the image's NHWC words; total[p] += sum_c |y| of pixel q + p (kAbs).
// Instantiated per case (affine or not, |y| sums or not, a full block of 64 pixels or not) so that the inner loop
// carries no branch and no unused work.
template <bool kAffine, bool kAbs, bool kFull>
ZOO_AVX2 void signs_block(const float* img, const float* scale, const float* shift, int64_t C, int64_t plane, int64_t q,
                          int64_t qn, int32_t* dst, double* total, const float* next, int64_t next_n) {
  const int64_t Cw = ceil_div(C, kWordBits), nvec = kFull ? 8 : ceil_div(qn, 8);
  const __m256 zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
  const __m256i tail = lanes_below(qn - 8 * (nvec - 1));  // lanes of the last vector
  alignas(16) uint64_t bits[kWordBits];
  uint32_t words[kPackBlockPixels];
  for (int64_t k = 0; k < Cw; ++k) {
    __m256 part[8];
    for (auto& v : part) v = zero;
    for (int64_t j = 0; j < kWordBits; ++j) {
      const int64_t c = k * kWordBits + j;
      bits[j] = 0;  // padding bits stay 0
      if (c >= C) continue;
      const float* src = img + c * plane + q;
      // Software prefetch kPrefetchChannels channels ahead (into the next block past the last channel): the block's C
      // channel rows are C short streams, too many for the hardware prefetchers.
      if (c + kPrefetchChannels < C)
        prefetch_row(img + (c + kPrefetchChannels) * plane + q, qn);
      else if (next && c + kPrefetchChannels - C < C)  // (fewer than 16 channels: only the next block's own)
        prefetch_row(next + (c + kPrefetchChannels - C) * plane, next_n);
      __m256 a = zero, b = zero;
      if constexpr (kAffine) a = _mm256_set1_ps(scale[c]), b = _mm256_set1_ps(shift[c]);
      uint64_t m = 0;
      for (int v = 0; v < nvec; ++v) {
        __m256 y = kFull || v + 1 < nvec ? _mm256_loadu_ps(src + 8 * v) : _mm256_maskload_ps(src + 8 * v, tail);
        if constexpr (kAffine) y = _mm256_fmadd_ps(y, a, b);
        m |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(y, zero, _CMP_GE_OQ))) << (8 * v);  // NaN: 0
        if constexpr (kAbs) part[v] = _mm256_add_ps(part[v], _mm256_andnot_ps(sign, y));
      }
      bits[j] = m;
    }
    transpose_word_bits(bits, words);
    for (int64_t p = 0; p < qn; ++p) dst[(q + p) * Cw + k] = static_cast<int32_t>(words[p]);
    if constexpr (kAbs) {
      alignas(32) float lanes[kPackBlockPixels];
      for (int v = 0; v < 8; ++v) _mm256_store_ps(lanes + 8 * v, part[v]);
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

// k-bit levels of 8 values (as kbit_level: halving is exact, so the order of the multiplications does not matter).
ZOO_AVX2 inline __m256i kbit_levels8(__m256 y, __m256 n) {
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
  __m256 t = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(-1.0f)), one);
  t = _mm256_mul_ps(_mm256_mul_ps(n, _mm256_add_ps(t, one)), half);
  t = _mm256_floor_ps(_mm256_add_ps(t, half));
  const __m256 ordered = _mm256_cmp_ps(y, y, _CMP_ORD_Q);  // NaN: level 0
  return _mm256_and_si256(_mm256_cvttps_epi32(t), _mm256_castps_si256(ordered));
}

ZOO_AVX2 inline uint32_t plane_mask8(__m256i levels, int b) {  // bit b of each of the 8 levels
  return static_cast<uint32_t>(
      _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_sll_epi32(levels, _mm_cvtsi32_si128(31 - b)))));
}

// k-bit planes of NCHW pixels q .. q + qn - 1 (qn <= 64), as signs_block: per channel a 64-bit mask per plane, then
// per plane the bit transposes. dst: the image's words in plane 0 (planes pstride apart).
ZOO_AVX2 void kbit_block(const float* img, const float* scale, const float* shift, int64_t C, int64_t plane, int64_t q,
                         int64_t qn, int bits, int32_t* dst, int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits), nvec = ceil_div(qn, 8);
  const __m256 n = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  const __m256i tail = lanes_below(qn - 8 * (nvec - 1));
  alignas(16) uint64_t masks[kPackMaxBits][kWordBits];
  uint32_t words[kPackBlockPixels];
  for (int64_t k = 0; k < Cw; ++k) {
    for (int64_t j = 0; j < kWordBits; ++j) {
      const int64_t c = k * kWordBits + j;
      for (int b = 0; b < bits; ++b) masks[b][j] = 0;  // padding bits stay 0
      if (c >= C) continue;
      const float* src = img + c * plane + q;
      if (c + kPrefetchChannels < C) prefetch_row(img + (c + kPrefetchChannels) * plane + q, qn);
      const __m256 a = scale ? _mm256_set1_ps(scale[c]) : _mm256_setzero_ps();
      const __m256 sh = scale ? _mm256_set1_ps(shift[c]) : _mm256_setzero_ps();
      for (int64_t v = 0; v < nvec; ++v) {
        __m256 y = v + 1 < nvec || qn % 8 == 0 ? _mm256_loadu_ps(src + 8 * v) : _mm256_maskload_ps(src + 8 * v, tail);
        if (scale) y = _mm256_fmadd_ps(y, a, sh);
        const __m256i levels = kbit_levels8(y, n);  // lanes past qn are never stored
        for (int b = 0; b < bits; ++b) masks[b][j] |= static_cast<uint64_t>(plane_mask8(levels, b)) << (8 * v);
      }
    }
    for (int b = 0; b < bits; ++b) {
      transpose_word_bits(masks[b], words);
      for (int64_t p = 0; p < qn; ++p) dst[b * pstride + (q + p) * Cw + k] = static_cast<int32_t>(words[p]);
    }
  }
}

// k-bit planes of 8 channels from c of a channels_last pixel (the first n < 8 when kTail) into words[b], at bit 8 q.
template <bool kTail>
ZOO_AVX2 inline void kbit8(const float* src, const float* scale, const float* shift, int64_t c, int64_t n,
                           __m256 levels_n, int bits, int q, uint32_t* words) {
  __m256 y;
  if constexpr (kTail) {
    const __m256i m = lanes_below(n);
    y = _mm256_maskload_ps(src + c, m);
    if (scale) y = _mm256_fmadd_ps(y, _mm256_maskload_ps(scale + c, m), _mm256_maskload_ps(shift + c, m));
  } else {
    y = _mm256_loadu_ps(src + c);
    if (scale) y = _mm256_fmadd_ps(y, _mm256_loadu_ps(scale + c), _mm256_loadu_ps(shift + c));
  }
  const __m256i levels = kbit_levels8(y, levels_n);
  const uint32_t valid = kTail ? (1u << n) - 1 : 0xffu;  // padding bits 0
  for (int b = 0; b < bits; ++b) words[b] |= (plane_mask8(levels, b) & valid) << (8 * q);
}

}  // namespace

ZOO_AVX2 void pack_signs_rows_avx2(const float* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                                   int32_t* out, float* absmean) {
  const int64_t Cw = ceil_div(C, kWordBits), full = C / kWordBits;
  for (int64_t p = 0; p < pixels; ++p) {
    const float* src = x + p * C;
    int32_t* dst = out + p * Cw;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};  // channels 0..7 and 8..15 mod 16
    for (int64_t k = 0; k < full; ++k) {
      const int64_t c = k * kWordBits;
      uint32_t word = signs8<false>(src, scale, shift, c, 8, acc[0]);  // (statements: acc[0] in channel order)
      word |= signs8<false>(src, scale, shift, c + 8, 8, acc[1]) << 8;
      word |= signs8<false>(src, scale, shift, c + 16, 8, acc[0]) << 16;
      word |= signs8<false>(src, scale, shift, c + 24, 8, acc[1]) << 24;
      dst[k] = static_cast<int32_t>(word);
    }
    if (full < Cw) {
      uint32_t word = 0;
      for (int q = 0; q < 4 && full * kWordBits + 8 * q < C; ++q) {
        const int64_t c = full * kWordBits + 8 * q;
        word |= signs8<true>(src, scale, shift, c, std::min<int64_t>(8, C - c), acc[q & 1]) << (8 * q);
      }
      dst[full] = static_cast<int32_t>(word);
    }
    if (absmean) absmean[p] = static_cast<float>(fold16(acc[0], acc[1]) / static_cast<double>(C));
  }
}

ZOO_AVX2 void pack_signs_nchw_avx2(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end,
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

ZOO_AVX2 void pack_kbit_rows_avx2(const float* x, int64_t pixels, int64_t C, int bits, const float* scale,
                                  const float* shift, int32_t* out, int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits), full = C / kWordBits;
  const __m256 n = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  for (int64_t p = 0; p < pixels; ++p) {
    const float* src = x + p * C;
    int32_t* dst = out + p * Cw;
    for (int64_t k = 0; k < Cw; ++k) {
      uint32_t words[kPackMaxBits] = {};
      for (int q = 0; q < 4 && k * kWordBits + 8 * q < C; ++q) {
        const int64_t c = k * kWordBits + 8 * q;
        if (k < full)
          kbit8<false>(src, scale, shift, c, 8, n, bits, q, words);
        else
          kbit8<true>(src, scale, shift, c, std::min<int64_t>(8, C - c), n, bits, q, words);
      }
      for (int b = 0; b < bits; ++b) dst[b * pstride + k] = static_cast<int32_t>(words[b]);
    }
  }
}

ZOO_AVX2 void pack_kbit_nchw_avx2(const float* x, int64_t C, int64_t plane, int64_t begin, int64_t end, int bits,
                                  const float* scale, const float* shift, int32_t* out, int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits), blocks = ceil_div(plane, kPackBlockPixels);
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / blocks, q0 = (blk % blocks) * kPackBlockPixels;
    kbit_block(x + n * C * plane, scale, shift, C, plane, q0, std::min(plane, q0 + kPackBlockPixels) - q0, bits,
               out + n * plane * Cw, pstride);
  }
}

}  // namespace zoo_xnor_cpu

#undef ZOO_AVX2
#endif  // ZOO_HAVE_PACK_X86_UKERNELS
