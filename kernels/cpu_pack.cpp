// Sign packing of activations and XNOR-Net's input scale K on the CPU (zoo_kernels; built with cpu_popcount.cpp by
// cpu.py into one extension, ops zoo_xnor_cpu::pack_signs and zoo_xnor_cpu::input_scale).
//
// Packed format (see packing.py): int32 words, 32 channels per word, bit j (LSB = 0) of word k holds channel
// 32 * k + j, 1 iff value >= 0 (NaN packs as 0). Padding bits past C are 0. Activations (N, C, H, W) -> (N, H, W, Cw).
//
// Fused per-channel affine: with scale and shift given, the packed value is y = fma(x, scale[c], shift[c]) instead of
// x: an inference BatchNorm in front of the sign (BN(x) = x * a + b with a = gamma / sqrt(var + eps),
// b = beta - mean * a) costs nothing extra in the packing pass, and the float activation is read once. The optional
// channel mean of |y| (the A of XNOR-Net's input scale K) is accumulated in the same pass.
//
// Memory access: a channels_last input is read pixel by pixel, 32 contiguous channels per word (AVX2: 4 x 8 lanes,
// fma, compare, movemask); an NCHW input 64 pixels of an image at a time (contiguous in each channel plane): 8 compares
// + movemasks per channel give 64 pixel bits, 8 x 8 bit transposes turn them into channel bits per pixel. K (A
// convolved with a box filter) is a small separate kernel, input_scale.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kWordBits = 32;
constexpr int64_t kMinPackWork = 1 << 16;  // floats per thread, at least, when packing (2^18: batch 1 on 1 thread)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The packed value of x for channel c: x, or fma(x, scale[c], shift[c]) (one rounding, as torch's CPU BatchNorm).
template <typename scalar_t>
struct Affine {
  const float* scale;  // null: identity
  const float* shift;
  scalar_t operator()(scalar_t x, int64_t c) const {
    return scale ? std::fma(x, static_cast<scalar_t>(scale[c]), static_cast<scalar_t>(shift[c])) : x;
  }
};

#ifdef __AVX2__
// Bits of 32 channels x 64 pixels, from channel-major masks (bit p of bits[j]: channel j of pixel p) to pixel-major
// words (bit j of words[p]). Per 8 channels an 8 x 8 byte transpose (unpacks) gathers, per 8 pixels, the 8 channels'
// bytes; an 8 x 8 bit transpose of each (bit p of byte j -> bit j of byte p; 3 delta swaps, 4 at a time in the 64-bit
// lanes of a ymm) gives a byte of channel bits per pixel; a last unpack interleaves the 4 bytes of each word.
inline __m256i transpose8x8_bits(__m256i x) {
  const auto swap = [](__m256i v, int shift, int64_t keep, int64_t move) {
    const __m256i m = _mm256_set1_epi64x(move);
    const __m128i n = _mm_cvtsi32_si128(shift);
    const __m256i moved = _mm256_or_si256(_mm256_sll_epi64(_mm256_and_si256(v, m), n),
                                          _mm256_and_si256(_mm256_srl_epi64(v, n), m));
    return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi64x(keep)), moved);
  };
  x = swap(x, 7, static_cast<int64_t>(0xAA55AA55AA55AA55ull), 0x00AA00AA00AA00AAll);
  x = swap(x, 14, static_cast<int64_t>(0xCCCC3333CCCC3333ull), 0x0000CCCC0000CCCCll);
  return swap(x, 28, static_cast<int64_t>(0xF0F0F0F00F0F0F0Full), 0x00000000F0F0F0F0ll);
}

void transpose_word_bits(const uint64_t bits[32], uint32_t words[64]) {
  alignas(32) uint64_t x[4][8];  // x[g][pb]: byte j = byte pb of bits[8 g + j], then (transposed) byte p = pixel 8 pb + p
  const auto row = [&](int64_t j) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(bits + j)); };
  for (int64_t g = 0; g < 4; ++g) {
    const int64_t j = 8 * g;
    const __m128i s0 = _mm_unpacklo_epi8(row(j), row(j + 1)), s1 = _mm_unpacklo_epi8(row(j + 2), row(j + 3));
    const __m128i s2 = _mm_unpacklo_epi8(row(j + 4), row(j + 5)), s3 = _mm_unpacklo_epi8(row(j + 6), row(j + 7));
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
    const auto t = [&](int64_t g) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(x[g] + pb)); };
    const __m128i q01 = _mm_unpacklo_epi8(t(0), t(1)), q23 = _mm_unpacklo_epi8(t(2), t(3));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(words + 8 * pb), _mm_unpacklo_epi16(q01, q23));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(words + 8 * pb + 4), _mm_unpackhi_epi16(q01, q23));
  }
}

constexpr int64_t kBlockPixels = 64;  // NCHW: pixels per block, one 64-bit mask per channel

constexpr int64_t kPrefetchChannels = 16;  // software prefetch distance, in channel rows of a block

inline void prefetch_row(const float* p, int64_t n) {  // the cache lines of n floats from p
  for (int64_t i = 0; i < n; i += 16) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T0);
}

// Pixels q .. q + qn - 1 (qn <= 64) of an NCHW float image (channel c's plane at img + c * plane): per channel, up
// to 8 compares + movemasks give a 64-bit mask of the pixels' bits (the last 8 pixels by a masked load), which
// transpose_word_bits turns into words. dst: the image's NHWC words; total[p] += sum_c |y| of pixel q + p (kAbs).
// Instantiated per case (affine or not, |y| sums or not, a full block of 64 pixels or not) so that the inner loop
// carries no branch and no unused work.
template <bool kAffine, bool kAbs, bool kFull>
void pack_nchw_block(const float* img, const Affine<float>& f, int64_t C, int64_t plane, int64_t q, int64_t qn,
                     int32_t* dst, double* total, const float* next, int64_t next_n) {
  const int64_t Cw = ceil_div(C, kWordBits), nvec = kFull ? 8 : ceil_div(qn, 8);
  const __m256 zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(qn - 8 * (nvec - 1))),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));  // lanes of the last vector
  alignas(16) uint64_t bits[kWordBits];
  uint32_t words[kBlockPixels];
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
      if constexpr (kAffine) a = _mm256_set1_ps(f.scale[c]), b = _mm256_set1_ps(f.shift[c]);
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
      alignas(32) float lanes[kBlockPixels];
      for (int v = 0; v < 8; ++v) _mm256_store_ps(lanes + 8 * v, part[v]);
      for (int64_t p = 0; p < qn; ++p) total[p] += lanes[p];
    }
  }
}

using PackBlockFn = void (*)(const float*, const Affine<float>&, int64_t, int64_t, int64_t, int64_t, int32_t*,
                             double*, const float*, int64_t);

PackBlockFn pack_block_fn(bool affine, bool abs, bool full) {
  static constexpr PackBlockFn fns[8] = {
      pack_nchw_block<false, false, false>, pack_nchw_block<false, false, true>, pack_nchw_block<false, true, false>,
      pack_nchw_block<false, true, true>,   pack_nchw_block<true, false, false>, pack_nchw_block<true, false, true>,
      pack_nchw_block<true, true, false>,   pack_nchw_block<true, true, true>};
  return fns[4 * affine + 2 * abs + full];
}
#endif

// x (N, C, H, W) contiguous -> out (N, H, W, Cw); absmean (N, H, W) = mean_c |y| if not null. An image's pixels
// are contiguous in each channel plane: blocks of 64 of them with AVX2 (float32), else one at a time.
template <typename scalar_t>
void pack_nchw(const scalar_t* x, Affine<scalar_t> f, int32_t* out, float* absmean, int64_t N, int64_t C, int64_t H,
               int64_t W) {
  const int64_t Cw = ceil_div(C, kWordBits), plane = H * W;
  const int64_t blocks = ceil_div(plane, kBlockPixels);
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / std::max<int64_t>(1, C * kBlockPixels));
  at::parallel_for(0, N * blocks, grain, [&](int64_t begin, int64_t end) {
    double total[kBlockPixels];
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t n = blk / blocks, q0 = (blk % blocks) * kBlockPixels, q1 = std::min(plane, q0 + kBlockPixels);
      const scalar_t* img = x + n * C * plane;
      int32_t* dst = out + n * plane * Cw;
      float* am = absmean ? absmean + n * plane : nullptr;
      int64_t q = q0;
#ifdef __AVX2__
      if constexpr (std::is_same_v<scalar_t, float>) {
        std::fill(total, total + kBlockPixels, 0.0);
        const float* next = nullptr;
        int64_t next_n = 0;
        if (blk + 1 < end) {  // this thread's next block, whose first channels are prefetched
          const int64_t nq = ((blk + 1) % blocks) * kBlockPixels;
          next = x + (blk + 1) / blocks * C * plane + nq;
          next_n = std::min(plane, nq + kBlockPixels) - nq;
        }
        pack_block_fn(f.scale != nullptr, am != nullptr, q1 - q0 == kBlockPixels)(
            img, f, C, plane, q0, q1 - q0, dst, am ? total : nullptr, next, next_n);
        if (am)
          for (int64_t p = 0; p < q1 - q0; ++p) am[q0 + p] = static_cast<float>(total[p] / static_cast<double>(C));
        q = q1;
      }
#endif
      for (; q < q1; ++q) {
        double sum = 0.0;
        for (int64_t k = 0; k < Cw; ++k) {
          const int64_t jn = std::min<int64_t>(kWordBits, C - k * kWordBits);
          uint32_t word = 0;
          scalar_t part = 0;
          for (int64_t j = 0; j < jn; ++j) {
            const int64_t c = k * kWordBits + j;
            const scalar_t y = f(img[c * plane + q], c);
            word |= (y >= scalar_t(0)) ? (1u << j) : 0u;  // NaN >= 0 is false
            part += std::fabs(y);
          }
          dst[q * Cw + k] = static_cast<int32_t>(word);
          sum += part;
        }
        if (am) am[q] = static_cast<float>(sum / static_cast<double>(C));
      }
    }
  });
}

// One pixel of a channels_last input, C channels -> Cw words; returns sum_c |y| (0 when !with_abs).
template <typename scalar_t>
double pack_pixel(const scalar_t* src, Affine<scalar_t> f, int64_t C, int32_t* dst, bool with_abs) {
  const int64_t Cw = ceil_div(C, kWordBits);
  double total = 0.0;
  int64_t k = 0;
#ifdef __AVX2__
  if constexpr (std::is_same_v<scalar_t, float>) {
    const __m256 zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
    __m256 abs_sum = zero;
    for (; k < C / kWordBits; ++k) {
      uint32_t word = 0;
      for (int q = 0; q < 4; ++q) {
        const int64_t c = k * kWordBits + 8 * q;
        __m256 y = _mm256_loadu_ps(src + c);
        if (f.scale) y = _mm256_fmadd_ps(y, _mm256_loadu_ps(f.scale + c), _mm256_loadu_ps(f.shift + c));
        const __m256 ge = _mm256_cmp_ps(y, zero, _CMP_GE_OQ);  // NaN -> false
        word |= static_cast<uint32_t>(_mm256_movemask_ps(ge)) << (8 * q);  // lane i -> bit 8q + i
        abs_sum = _mm256_add_ps(abs_sum, _mm256_andnot_ps(sign, y));
      }
      dst[k] = static_cast<int32_t>(word);
    }
    if (with_abs) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, abs_sum);
      for (float v : lanes) total += v;
    }
  }
#endif
  for (; k < Cw; ++k) {
    const int64_t jn = std::min<int64_t>(kWordBits, C - k * kWordBits);
    uint32_t word = 0;
    scalar_t part = 0;
    for (int64_t j = 0; j < jn; ++j) {
      const scalar_t y = f(src[k * kWordBits + j], k * kWordBits + j);
      word |= (y >= scalar_t(0)) ? (1u << j) : 0u;
      part += std::fabs(y);
    }
    dst[k] = static_cast<int32_t>(word);
    total += part;
  }
  return total;
}

// x (N, C, H, W) in channels_last memory, i.e. (N * H * W, C) rows -> out (N * H * W, Cw).
template <typename scalar_t>
void pack_nhwc(const scalar_t* x, Affine<scalar_t> f, int32_t* out, float* absmean, int64_t pixels, int64_t C) {
  const int64_t Cw = ceil_div(C, kWordBits);
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / std::max<int64_t>(1, C));
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const double total = pack_pixel(x + p * C, f, C, out + p * Cw, absmean != nullptr);
      if (absmean) absmean[p] = static_cast<float>(total / static_cast<double>(C));
    }
  });
}

// ---------------------------------------------------------------------------------------- k-bit sign planes
// XNOR-Net's k-bit quantizer as sign planes (see kbit.py): the level L = floor(n (clamp(y, -1, 1) + 1) / 2 + 1/2),
// n = 2^bits - 1 (NaN: level 0), and plane b holds bit b of L, packed as the signs are. The level is computed with
// the operations of the PyTorch definition, in the same order, so that both give the same L.

constexpr int kMaxBits = 16;

template <typename scalar_t>
inline int32_t kbit_level(scalar_t y, scalar_t n) {
  if (std::isnan(y)) return 0;
  const scalar_t t = std::min(std::max(y, scalar_t(-1)), scalar_t(1));
  return static_cast<int32_t>(std::floor(n * (t + scalar_t(1)) / scalar_t(2) + scalar_t(0.5)));
}

// The planes' words of one pixel (channels c = 0 .. C-1 at src[c * cstride]), scalar: dst[b * pstride + k].
template <typename scalar_t>
void kbit_pixel_scalar(const scalar_t* src, int64_t cstride, const Affine<scalar_t>& f, int64_t C, int64_t k0,
                       int bits, int32_t* dst, int64_t pstride) {
  const scalar_t n = static_cast<scalar_t>((1 << bits) - 1);
  for (int64_t k = k0; k < ceil_div(C, kWordBits); ++k) {
    uint32_t words[kMaxBits] = {};
    for (int64_t j = 0; j < kWordBits && k * kWordBits + j < C; ++j) {
      const int64_t c = k * kWordBits + j;
      const uint32_t level = static_cast<uint32_t>(kbit_level(f(src[c * cstride], c), n));
      for (int b = 0; b < bits; ++b) words[b] |= ((level >> b) & 1u) << j;
    }
    for (int b = 0; b < bits; ++b) dst[b * pstride + k] = static_cast<int32_t>(words[b]);
  }
}

#ifdef __AVX2__
// Levels of 8 values (as kbit_level: halving is exact, so the order of the multiplications does not matter).
inline __m256i kbit_levels8(__m256 y, __m256 n) {
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
  __m256 t = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(-1.0f)), one);
  t = _mm256_mul_ps(_mm256_mul_ps(n, _mm256_add_ps(t, one)), half);
  t = _mm256_floor_ps(_mm256_add_ps(t, half));
  const __m256 ordered = _mm256_cmp_ps(y, y, _CMP_ORD_Q);  // NaN: level 0
  return _mm256_and_si256(_mm256_cvttps_epi32(t), _mm256_castps_si256(ordered));
}

inline uint32_t plane_mask8(__m256i levels, int b) {  // bit b of each of the 8 levels
  return static_cast<uint32_t>(
      _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_sll_epi32(levels, _mm_cvtsi32_si128(31 - b)))));
}

// One channels_last pixel: whole words 8 channels at a time, the rest scalar.
void kbit_pixel_nhwc(const float* src, const Affine<float>& f, int64_t C, int bits, int32_t* dst, int64_t pstride) {
  const __m256 n = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  int64_t k = 0;
  for (; k < C / kWordBits; ++k) {
    uint32_t words[kMaxBits] = {};
    for (int q = 0; q < 4; ++q) {
      const int64_t c = k * kWordBits + 8 * q;
      __m256 y = _mm256_loadu_ps(src + c);
      if (f.scale) y = _mm256_fmadd_ps(y, _mm256_loadu_ps(f.scale + c), _mm256_loadu_ps(f.shift + c));
      const __m256i levels = kbit_levels8(y, n);
      for (int b = 0; b < bits; ++b) words[b] |= plane_mask8(levels, b) << (8 * q);
    }
    for (int b = 0; b < bits; ++b) dst[b * pstride + k] = static_cast<int32_t>(words[b]);
  }
  kbit_pixel_scalar(src, 1, f, C, k, bits, dst, pstride);
}

// Pixels q .. q + qn - 1 (qn <= 64) of an NCHW image, as pack_nchw_block: per channel a 64-bit mask per plane, then
// per plane the bit transposes. dst: the image's words in plane 0 (planes pstride apart).
void kbit_nchw_block(const float* img, const Affine<float>& f, int64_t C, int64_t plane, int64_t q, int64_t qn,
                     int bits, int32_t* dst, int64_t pstride) {
  const int64_t Cw = ceil_div(C, kWordBits), nvec = ceil_div(qn, 8);
  const __m256 n = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(qn - 8 * (nvec - 1))),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  alignas(16) uint64_t masks[kMaxBits][kWordBits];
  uint32_t words[kBlockPixels];
  for (int64_t k = 0; k < Cw; ++k) {
    for (int64_t j = 0; j < kWordBits; ++j) {
      const int64_t c = k * kWordBits + j;
      for (int b = 0; b < bits; ++b) masks[b][j] = 0;  // padding bits stay 0
      if (c >= C) continue;
      const float* src = img + c * plane + q;
      if (c + kPrefetchChannels < C) prefetch_row(img + (c + kPrefetchChannels) * plane + q, qn);
      const __m256 a = f.scale ? _mm256_set1_ps(f.scale[c]) : _mm256_setzero_ps();
      const __m256 sh = f.scale ? _mm256_set1_ps(f.shift[c]) : _mm256_setzero_ps();
      for (int64_t v = 0; v < nvec; ++v) {
        __m256 y = v + 1 < nvec || qn % 8 == 0 ? _mm256_loadu_ps(src + 8 * v) : _mm256_maskload_ps(src + 8 * v, tail);
        if (f.scale) y = _mm256_fmadd_ps(y, a, sh);
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
#endif

// x (N, C, H, W), NCHW or channels_last contiguous -> out (bits, N, H, W, Cw).
template <typename scalar_t>
void pack_kbit(const scalar_t* x, bool nhwc, const Affine<scalar_t>& f, int bits, int32_t* out, int64_t N, int64_t C,
               int64_t H, int64_t W) {
  const int64_t Cw = ceil_div(C, kWordBits), plane = H * W, pstride = N * plane * Cw;
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / std::max<int64_t>(1, C * bits));
  if (nhwc) {
    at::parallel_for(0, N * plane, grain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
#ifdef __AVX2__
        if constexpr (std::is_same_v<scalar_t, float>) {
          kbit_pixel_nhwc(x + p * C, f, C, bits, out + p * Cw, pstride);
          continue;
        }
#endif
        kbit_pixel_scalar(x + p * C, 1, f, C, 0, bits, out + p * Cw, pstride);
      }
    });
    return;
  }
#ifdef __AVX2__
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int64_t blocks = ceil_div(plane, kBlockPixels);
    at::parallel_for(0, N * blocks, std::max<int64_t>(1, grain / kBlockPixels), [&](int64_t begin, int64_t end) {
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t n = blk / blocks, q0 = (blk % blocks) * kBlockPixels;
        kbit_nchw_block(x + n * C * plane, f, C, plane, q0, std::min(plane, q0 + kBlockPixels) - q0, bits,
                        out + n * plane * Cw, pstride);
      }
    });
    return;
  }
#endif
  at::parallel_for(0, N * plane, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / plane, q = p % plane;
      kbit_pixel_scalar(x + n * C * plane + q, plane, f, C, 0, bits, out + p * Cw, pstride);
    }
  });
}

// The fused affine's (scale, shift) of an op `what` for C channels, checked and contiguous; undefined without them.
std::pair<at::Tensor, at::Tensor> affine_tensors(const char* what, int64_t C, const std::optional<at::Tensor>& scale,
                                                 const std::optional<at::Tensor>& shift) {
  TORCH_CHECK(scale.has_value() == shift.has_value(), what, ": give both scale and shift, or neither");
  if (!scale.has_value()) return {};
  TORCH_CHECK(scale->numel() == C && shift->numel() == C && scale->scalar_type() == at::kFloat &&
                  shift->scalar_type() == at::kFloat && scale->device().is_cpu() && shift->device().is_cpu(),
              what, ": scale and shift must be float32 CPU tensors of C = ", C, " elements");
  return {scale->contiguous(), shift->contiguous()};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> zoo_xnor_cpu::pack_signs(const at::Tensor& x_in, bool with_absmean,
                                                            const std::optional<at::Tensor>& scale_in,
                                                            const std::optional<at::Tensor>& shift_in) {
  TORCH_CHECK(x_in.dim() == 4, "pack_signs: expected a 4D (N, C, H, W) tensor, got ", x_in.dim(), "D");
  TORCH_CHECK(x_in.is_floating_point(), "pack_signs: expected a floating-point tensor, got ", x_in.scalar_type());
  TORCH_CHECK(x_in.device().is_cpu(), "pack_signs: expected a CPU tensor");
  // float32 or float64 as is; half / bfloat16 widen to float32 exactly (signs, zeros and NaN are kept). (float64
  // is not narrowed: a tiny negative double would round to -0.0f, which is >= 0.)
  const at::Tensor x = x_in.scalar_type() == at::kDouble ? x_in : x_in.to(at::kFloat);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C > 0, "pack_signs: zero channels");
  at::Tensor scale, shift;
  std::tie(scale, shift) = affine_tensors("pack_signs", C, scale_in, shift_in);
  const int64_t Cw = ceil_div(C, kWordBits);
  at::Tensor out = at::empty({N, H, W, Cw}, x.options().dtype(at::kInt));
  at::Tensor am = at::empty({with_absmean ? N : 0, 1, H, W}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {out, am};
  float* am_ptr = with_absmean ? am.data_ptr<float>() : nullptr;
  const bool nhwc = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor xc = nhwc ? x : x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "pack_signs", [&] {
    const Affine<scalar_t> f{scale.defined() ? scale.data_ptr<float>() : nullptr,
                             shift.defined() ? shift.data_ptr<float>() : nullptr};
    if (nhwc)
      pack_nhwc(xc.data_ptr<scalar_t>(), f, out.data_ptr<int32_t>(), am_ptr, N * H * W, C);
    else
      pack_nchw(xc.data_ptr<scalar_t>(), f, out.data_ptr<int32_t>(), am_ptr, N, C, H, W);
  });
  return {out, am};
}

at::Tensor zoo_xnor_cpu::pack_kbit_planes(const at::Tensor& x, int64_t bits, const std::optional<at::Tensor>& scale_in,
                                          const std::optional<at::Tensor>& shift_in) {
  TORCH_CHECK(x.dim() == 4, "pack_kbit_planes: expected a 4D (N, C, H, W) tensor, got ", x.dim(), "D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "pack_kbit_planes: expected a float32 or float64 tensor, got ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu(), "pack_kbit_planes: expected a CPU tensor");
  TORCH_CHECK(bits >= 1 && bits <= kMaxBits, "pack_kbit_planes: bits must be from 1 to ", kMaxBits, ", got ", bits);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C > 0, "pack_kbit_planes: zero channels");
  at::Tensor scale, shift;
  std::tie(scale, shift) = affine_tensors("pack_kbit_planes", C, scale_in, shift_in);
  at::Tensor out = at::empty({bits, N, H, W, ceil_div(C, kWordBits)}, x.options().dtype(at::kInt));
  if (x.numel() == 0) return out;
  const bool nhwc = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor xc = nhwc ? x : x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "pack_kbit_planes", [&] {
    const Affine<scalar_t> f{scale.defined() ? scale.data_ptr<float>() : nullptr,
                             shift.defined() ? shift.data_ptr<float>() : nullptr};
    pack_kbit(xc.data_ptr<scalar_t>(), nhwc, f, static_cast<int>(bits), out.data_ptr<int32_t>(), N, C, H, W);
  });
  return out;
}

namespace {

constexpr int64_t kMaxGeometry = int64_t(1) << 16;
constexpr int64_t kMaxElements = int64_t(1) << 32;

void check_range(const char* what, const char* name, int64_t i, int64_t v, int64_t low) {
  TORCH_CHECK(v >= low && v <= kMaxGeometry, what, ": ", name, "[", i, "] = ", v, " is outside [", low, ", ",
              kMaxGeometry, "]");
}

void check_elements(const char* what, const char* label, std::initializer_list<int64_t> dims) {
  int64_t n = 1;
  for (const int64_t d : dims) {
    TORCH_CHECK(!__builtin_mul_overflow(n, std::max<int64_t>(d, 1), &n) && n <= kMaxElements, what, ": ", label,
                " ", at::IntArrayRef(dims), " has more than ", kMaxElements, " elements");
  }
}

}  // namespace

std::pair<int64_t, int64_t> zoo_xnor_cpu::check_conv_geometry(const char* what, int64_t planes, int64_t N, int64_t H,
                                                              int64_t W, int64_t Cw, int64_t O, int64_t kh,
                                                              int64_t kw, at::IntArrayRef stride,
                                                              at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, what,
              ": stride, padding and dilation must have 2 elements");
  for (int64_t i = 0; i < 2; ++i) {
    check_range(what, "stride", i, stride[i], 1);
    check_range(what, "padding", i, padding[i], 0);
    check_range(what, "dilation", i, dilation[i], 1);
  }
  check_range(what, "kernel_size", 0, kh, 1);
  check_range(what, "kernel_size", 1, kw, 1);
  // H and W first: then H + 2 ph cannot overflow
  check_elements(what, "the input (planes, N, H, W, words)", {planes, N, H, W, Cw});
  const int64_t Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
  const int64_t Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, what, ": input ", H, "x", W, " is too small for kernel ", kh, "x", kw, ": output ",
              Ho, "x", Wo);
  check_elements(what, "the padded input (planes, N, H + 2 ph, W + 2 pw, words)",
                 {planes, N, H + 2 * padding[0], W + 2 * padding[1], Cw});
  check_elements(what, "the output (N, O, Ho, Wo)", {N, O, Ho, Wo});
  check_elements(what, "the weights (O, kh, kw, words)", {O, kh, kw, Cw});
  return {Ho, Wo};
}

// K[n, 0, y, x] = (1 / (kh * kw)) * sum over the taps inside the image of A[n, 0, iy, ix]: XNOR-Net's K = A * k,
// conv2d of A with a box filter, zero padding counted as 0. Separable: per output row, the sums over the kernel's rows
// of each input column (contiguous, vectorised), then per output the sum of kw of them. kh + kw additions per output
// instead of kh * kw, and without the overhead of a one-channel oneDNN conv.
at::Tensor zoo_xnor_cpu::input_scale(const at::Tensor& absmean, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(absmean.dim() == 4 && absmean.size(1) == 1 && absmean.scalar_type() == at::kFloat &&
                  absmean.device().is_cpu(),
              "input_scale: expected a float32 CPU tensor (N, 1, H, W)");
  TORCH_CHECK(kernel_size.size() == 2, "input_scale: kernel_size must have 2 elements");
  const int64_t N = absmean.size(0), H = absmean.size(2), W = absmean.size(3);
  const int64_t kh = kernel_size[0], kw = kernel_size[1];
  const auto [Ho, Wo] = check_conv_geometry("input_scale", 1, N, H, W, 1, 1, kh, kw, stride, padding, dilation);
  const int64_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1], dh = dilation[0], dw = dilation[1];
  at::Tensor out = at::empty({N, 1, Ho, Wo}, absmean.options());
  if (out.numel() == 0) return out;
  const at::Tensor a = absmean.contiguous();
  const float* src = a.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float inv = 1.0f / static_cast<float>(kh * kw);
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / std::max<int64_t>(1, W * kh + Wo * kw));
  at::parallel_for(0, N * Ho, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> cols(W);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / Ho, y = r % Ho;
      const float* img = src + n * H * W;
      std::fill(cols.begin(), cols.end(), 0.0f);
      for (int64_t ky = 0; ky < kh; ++ky) {
        const int64_t iy = y * sh - ph + ky * dh;
        if (iy < 0 || iy >= H) continue;
        const float* row = img + iy * W;
        for (int64_t ix = 0; ix < W; ++ix) cols[ix] += row[ix];
      }
      for (int64_t x = 0; x < Wo; ++x) {
        float sum = 0.0f;
        for (int64_t kx = 0; kx < kw; ++kx) {
          const int64_t ix = x * sw - pw + kx * dw;
          if (ix >= 0 && ix < W) sum += cols[ix];
        }
        dst[r * Wo + x] = sum * inv;
      }
    }
  });
  return out;
}

TORCH_LIBRARY_FRAGMENT(zoo_xnor_cpu, m) {
  m.def("pack_signs(Tensor x, bool absmean, Tensor? scale, Tensor? shift) -> (Tensor, Tensor)");
  m.def("input_scale(Tensor absmean, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  m.def("pack_kbit_planes(Tensor x, int bits, Tensor? scale, Tensor? shift) -> Tensor");
}

TORCH_LIBRARY_IMPL(zoo_xnor_cpu, CPU, m) {
  m.impl("pack_signs", &zoo_xnor_cpu::pack_signs);
  m.impl("input_scale", &zoo_xnor_cpu::input_scale);
  m.impl("pack_kbit_planes", &zoo_xnor_cpu::pack_kbit_planes);
}
