// Bit-packed XNOR-popcount convolution and sign packing on the CPU (zoo_kernels; built and loaded by cpu.py).
//
// Packed format (see packing.py): int32 words, 32 channels per word, bit j (LSB = 0) of word k holds channel
// 32 * k + j, 1 iff value >= 0. Padding bits past C are 0. Activations are (N, H, W, Cw), weights (O, kh, kw, Cw).
//
// Convolution as an implicit GEMM over packed words
// -------------------------------------------------
// Flatten the output pixels p = (n, y, x) (P = N * Ho * Wo of them) and the filter taps t = (ky, kx) (T = kh * kw).
// Row p of the "im2col" matrix A is the concatenation over taps of the Cw words of activation pixel (iy, ix), or
// Cw zero words when the tap falls on the padding; row o of B is filter o flattened the same way. Both rows hold
// K32 = T * Cw words, read as K64 = ceil(K32 / 2) 64-bit words (a final zero word when K32 is odd: 0 ^ 0 has no
// set bit). Then
//
//     D[p, o]   = sum_k popcount(A[p, k] ^ B[o, k])
//     int[p, o] = sum over valid taps t of (C - 2 * popcount(a_t ^ w_t))
//               = |V| * C - 2 * (D[p, o] - sum_{t not in V} popcount(w[o, t]))      (V: taps of p in the image)
//     out[n, o, y, x] = alpha[o] * K[n, y, x] * int[p, o] + bias[o]                 (fused epilogue, float32)
//
// Padding correction: a tap on the padding was read as zero words, i.e. as C activations of -1, which added
// popcount(w[o, t]) to D; it is subtracted again, so that the padding contributes 0, as zeros do in F.conv2d.
//
// Inner loop (AVX2): nibble tables. popcount(a ^ b) is the sum over the 16 nibbles s of a 64-bit word of
// table[nib_s(a)][nib_s(b)], table[u][v] = popcount(u ^ v). One vpshufb looks up 32 bytes in a 16-byte table: the
// table row of one pixel's nibble, indexed by that nibble of 32 output channels' weights, counts 32 x 4 binary
// products; a vpaddb accumulates them (uint8, at most 63 steps, then widened to uint16). A register block is
// MR = 4 pixels x 64 channels (8 accumulators); per nibble step it loads the 2 weight vectors once and 4 table
// rows (movzx of the pixel's pre-scaled nibble + vbroadcasti128), then issues 8 vpshufb + 8 vpaddb.
// Without AVX2 (or with variant "scalar") the same tiling runs a 4 pixel x 8 channel block of 64-bit popcounts.
//
// Tiling and memory access: tiles of TP <= 64 pixels x TO = 64 output channels are distributed over torch's
// intra-op threads (at::parallel_for, consecutive tiles per thread). A tile builds its TP rows of A -- for AVX2
// directly as nibble offsets, KN = 16 * K64 bytes per pixel, copied from the NHWC activation words -- unless the
// previous tile had the same pixels, then sweeps its pixels over 256 nibble steps at a time, so that the slice of
// the weight panel (256 x 64 bytes, contiguous) and of the pixels' offsets stay in L1. The weights are re-laid out
// once per call: panels of 64 channels holding one byte per (nibble step, channel), built with 16 x 16 byte
// transposes. D is channel-major, so the epilogue reads and writes whole output rows out[n, o, y, x0 .. x1].
//
// Sign packing: activations in NCHW are read one image row at a time; for each group of 32 channels the W words of
// the row are built by OR-ing (x >= 0) << j over the 32 channel rows (contiguous, vectorised loads), then written
// to the NHWC words. A channels_last input is packed 32 contiguous channels at a time (AVX2 compare + movemask).
// The optional channel mean of |x| (the A of XNOR-Net's input scale K) is accumulated in the same pass; K itself
// (A convolved with a box filter) is a small separate kernel, input_scale.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kWordBits = 32;
constexpr int64_t MR = 4;  // pixels per register block
constexpr int64_t NR = 8;  // output channels per scalar register block (weights of the scalar path in panels of NR)

constexpr int64_t kMinPackWork = 1 << 18;  // floats per thread, at least, when packing
constexpr int64_t kMinConvWork = 1 << 24;  // binary products per thread, at least, in the convolution

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int popcount64(uint64_t v) { return __builtin_popcountll(v); }

// ------------------------------------------------------------------------------------------------ sign packing

// x (N, C, H, W) contiguous -> out (N, H, W, Cw); absmean (N, H, W) = mean_c |x| if not null.
template <typename scalar_t>
void pack_nchw(const scalar_t* x, int32_t* out, float* absmean, int64_t N, int64_t C, int64_t H, int64_t W) {
  const int64_t Cw = ceil_div(C, kWordBits);
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / std::max<int64_t>(1, C * W));
  at::parallel_for(0, N * H, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> words(W);
    std::vector<scalar_t> part(W);
    std::vector<double> total(absmean ? W : 0);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, h = r % H;
      const scalar_t* row0 = x + (n * C * H + h) * W;  // x[n, 0, h, :]
      if (absmean) std::fill(total.begin(), total.end(), 0.0);
      for (int64_t k = 0; k < Cw; ++k) {
        std::fill(words.begin(), words.end(), 0u);
        std::fill(part.begin(), part.end(), scalar_t(0));
        const int64_t jn = std::min<int64_t>(kWordBits, C - k * kWordBits);
        for (int64_t j = 0; j < jn; ++j) {
          const scalar_t* src = row0 + (k * kWordBits + j) * H * W;
          const uint32_t bit = 1u << j;
          uint32_t* wd = words.data();
          for (int64_t i = 0; i < W; ++i) wd[i] |= (src[i] >= scalar_t(0)) ? bit : 0u;  // NaN >= 0 is false
          if (absmean) {
            scalar_t* pp = part.data();
            for (int64_t i = 0; i < W; ++i) pp[i] += std::fabs(src[i]);
          }
        }
        int32_t* dst = out + r * W * Cw + k;
        for (int64_t i = 0; i < W; ++i) dst[i * Cw] = static_cast<int32_t>(words[i]);
        if (absmean)
          for (int64_t i = 0; i < W; ++i) total[i] += part[i];
      }
      if (absmean)
        for (int64_t i = 0; i < W; ++i) absmean[r * W + i] = static_cast<float>(total[i] / static_cast<double>(C));
    }
  });
}

// x (N, C, H, W) in channels_last memory, i.e. (N * H * W, C) rows -> out (N * H * W, Cw).
template <typename scalar_t>
void pack_nhwc(const scalar_t* x, int32_t* out, float* absmean, int64_t pixels, int64_t C) {
  const int64_t Cw = ceil_div(C, kWordBits);
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / std::max<int64_t>(1, C));
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* src = x + p * C;
      int32_t* dst = out + p * Cw;
      for (int64_t k = 0; k < Cw; ++k) {
        const scalar_t* s = src + k * kWordBits;
        const int64_t jn = std::min<int64_t>(kWordBits, C - k * kWordBits);
        uint32_t word = 0;
#ifdef __AVX2__
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (jn == kWordBits) {
            const __m256 zero = _mm256_setzero_ps();
            for (int q = 0; q < 4; ++q) {
              const __m256 ge = _mm256_cmp_ps(_mm256_loadu_ps(s + 8 * q), zero, _CMP_GE_OQ);  // NaN -> false
              word |= static_cast<uint32_t>(_mm256_movemask_ps(ge)) << (8 * q);  // lane i -> bit 8q + i
            }
            dst[k] = static_cast<int32_t>(word);
            continue;
          }
        }
#endif
        for (int64_t j = 0; j < jn; ++j) word |= (s[j] >= scalar_t(0)) ? (1u << j) : 0u;
        dst[k] = static_cast<int32_t>(word);
      }
      if (absmean) {
        double total = 0.0;
        for (int64_t k = 0; k < Cw; ++k) {
          scalar_t part = 0;
          const int64_t jn = std::min<int64_t>(kWordBits, C - k * kWordBits);
          for (int64_t j = 0; j < jn; ++j) part += std::fabs(src[k * kWordBits + j]);
          total += part;
        }
        absmean[p] = static_cast<float>(total / static_cast<double>(C));
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> pack_signs_cpu(const at::Tensor& x_in, bool with_absmean) {
  TORCH_CHECK(x_in.dim() == 4, "pack_signs: expected a 4D (N, C, H, W) tensor, got ", x_in.dim(), "D");
  TORCH_CHECK(x_in.is_floating_point(), "pack_signs: expected a floating-point tensor, got ", x_in.scalar_type());
  TORCH_CHECK(x_in.device().is_cpu(), "pack_signs: expected a CPU tensor");
  // float32 or float64 as is; half / bfloat16 widen to float32 exactly (signs, zeros and NaN are kept). (float64
  // is not narrowed: a tiny negative double would round to -0.0f, which is >= 0.)
  const at::Tensor x = x_in.scalar_type() == at::kDouble ? x_in : x_in.to(at::kFloat);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C > 0, "pack_signs: zero channels");
  const int64_t Cw = ceil_div(C, kWordBits);
  at::Tensor out = at::empty({N, H, W, Cw}, x.options().dtype(at::kInt));
  at::Tensor am = at::empty({with_absmean ? N : 0, 1, H, W}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {out, am};
  float* am_ptr = with_absmean ? am.data_ptr<float>() : nullptr;
  const bool nhwc = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor xc = nhwc ? x : x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "pack_signs", [&] {
    if (nhwc)
      pack_nhwc(xc.data_ptr<scalar_t>(), out.data_ptr<int32_t>(), am_ptr, N * H * W, C);
    else
      pack_nchw(xc.data_ptr<scalar_t>(), out.data_ptr<int32_t>(), am_ptr, N, C, H, W);
  });
  return {out, am};
}

// ------------------------------------------------------------------------------------------ input scale K

// K[n, 0, y, x] = (1 / (kh * kw)) * sum over the taps inside the image of A[n, 0, iy, ix]: XNOR-Net's K = A * k,
// conv2d of A with a box filter, zero padding counted as 0. Direct sum, kh * kw taps per output: cheap next to the
// convolution, and without the overhead of a one-channel oneDNN conv.
at::Tensor input_scale_cpu(const at::Tensor& absmean, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(absmean.dim() == 4 && absmean.size(1) == 1 && absmean.scalar_type() == at::kFloat &&
                  absmean.device().is_cpu(),
              "input_scale: expected a float32 CPU tensor (N, 1, H, W)");
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "input_scale: kernel_size, stride, padding and dilation must have 2 elements");
  const int64_t N = absmean.size(0), H = absmean.size(2), W = absmean.size(3);
  const int64_t kh = kernel_size[0], kw = kernel_size[1], sh = stride[0], sw = stride[1];
  const int64_t ph = padding[0], pw = padding[1], dh = dilation[0], dw = dilation[1];
  TORCH_CHECK(kh > 0 && kw > 0 && sh > 0 && sw > 0 && dh > 0 && dw > 0 && ph >= 0 && pw >= 0,
              "input_scale: kernel, stride and dilation must be positive, padding non-negative");
  const int64_t Ho = (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1, Wo = (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "input_scale: output size ", Ho, "x", Wo, " is not positive");
  at::Tensor out = at::empty({N, 1, Ho, Wo}, absmean.options());
  if (out.numel() == 0) return out;
  const at::Tensor a = absmean.contiguous();
  const float* src = a.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float inv = 1.0f / static_cast<float>(kh * kw);
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / std::max<int64_t>(1, Wo * kh * kw));
  at::parallel_for(0, N * Ho, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / Ho, y = r % Ho;
      const float* img = src + n * H * W;
      for (int64_t x = 0; x < Wo; ++x) {
        float sum = 0.0f;
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t iy = y * sh - ph + ky * dh;
          if (iy < 0 || iy >= H) continue;
          for (int64_t kx = 0; kx < kw; ++kx) {
            const int64_t ix = x * sw - pw + kx * dw;
            if (ix >= 0 && ix < W) sum += img[iy * W + ix];
          }
        }
        dst[r * Wo + x] = sum * inv;
      }
    }
  });
  return out;
}

// ------------------------------------------------------------------------------------------------- convolution

struct Geometry {
  int64_t N, H, W, C, Cw, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo;
  int64_t T() const { return kh * kw; }
  int64_t K32() const { return kh * kw * Cw; }
  int64_t K64() const { return ceil_div(kh * kw * Cw, 2); }
};

// Taps (ky, kx) of an output pixel whose input (iy0 + ky * dh, ix0 + kx * dw) is inside the image.
struct TapRange {
  int64_t ky_lo, ky_hi, kx_lo, kx_hi;  // inclusive; empty when lo > hi
  int64_t count() const { return std::max<int64_t>(0, ky_hi - ky_lo + 1) * std::max<int64_t>(0, kx_hi - kx_lo + 1); }
  bool contains(int64_t ky, int64_t kx) const { return ky >= ky_lo && ky <= ky_hi && kx >= kx_lo && kx <= kx_hi; }
  int64_t key() const { return ((ky_lo * 4096 + ky_hi + 1) * 4096 + kx_lo) * 4096 + kx_hi + 1; }
};

inline void valid_range(int64_t i0, int64_t d, int64_t k, int64_t size, int64_t& lo, int64_t& hi) {
  lo = i0 >= 0 ? 0 : std::min(k, (-i0 + d - 1) / d);                      // first k with i0 + k * d >= 0
  hi = size - 1 - i0 < 0 ? -1 : std::min(k - 1, (size - 1 - i0) / d);      // last k with i0 + k * d < size
}

inline TapRange valid_taps(const Geometry& g, int64_t iy0, int64_t ix0) {
  TapRange r{};
  valid_range(iy0, g.dh, g.kh, g.H, r.ky_lo, r.ky_hi);
  valid_range(ix0, g.dw, g.kw, g.W, r.kx_lo, r.kx_hi);
  return r;
}

// Walks rows p0 .. p0 + TP - 1 of A: for each pixel i, the taps' words in order, as calls
//     emit.copy(i, pos, src, count)    words src[0 .. count) at word position pos of row i
//     emit.zero(i, pos, count)         zero words (taps on the padding, the odd last word, rows past P)
// where consecutive taps of one kernel row that are all inside the image come as one copy (they are contiguous).
template <class Emit>
void walk_im2col(const Geometry& g, const int32_t* xp, int64_t p0, int64_t TP, Emit& emit) {
  const int64_t K32 = g.K32(), Kpad = 2 * g.K64(), Cw = g.Cw, HoWo = g.Ho * g.Wo, P = g.N * HoWo;
  int64_t n = p0 / HoWo, y = (p0 % HoWo) / g.Wo, x = p0 % g.Wo;  // advanced incrementally, no division per pixel
  for (int64_t i = 0; i < TP; ++i) {
    if (p0 + i >= P) {
      emit.zero(i, 0, Kpad);
      continue;
    }
    const int32_t* img = xp + n * g.H * g.W * Cw;
    const int64_t ix0 = x * g.sw - g.pw;
    int64_t pos = 0;
    for (int64_t ky = 0; ky < g.kh; ++ky, pos += g.kw * Cw) {
      const int64_t iy = y * g.sh - g.ph + ky * g.dh;
      if (iy < 0 || iy >= g.H) {
        emit.zero(i, pos, g.kw * Cw);
        continue;
      }
      const int32_t* src_row = img + iy * g.W * Cw;
      if (g.dw == 1 && ix0 >= 0 && ix0 + g.kw <= g.W) {
        emit.copy(i, pos, src_row + ix0 * Cw, g.kw * Cw);
        continue;
      }
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const int64_t ix = ix0 + kx * g.dw;
        if (ix < 0 || ix >= g.W)
          emit.zero(i, pos + kx * Cw, Cw);
        else
          emit.copy(i, pos + kx * Cw, src_row + ix * Cw, Cw);
      }
    }
    if (K32 < Kpad) emit.zero(i, K32, 1);
    if (++x == g.Wo) {
      x = 0;
      if (++y == g.Ho) y = 0, ++n;
    }
  }
}

// Rows of A as 64-bit words (K64 per row), for the scalar path.
struct EmitWords {
  uint32_t* A;
  int64_t row_words;  // 2 * K64
  void copy(int64_t i, int64_t pos, const int32_t* src, int64_t count) {
    uint32_t* dst = A + i * row_words + pos;
    for (int64_t j = 0; j < count; ++j) dst[j] = static_cast<uint32_t>(src[j]);
  }
  void zero(int64_t i, int64_t pos, int64_t count) { std::memset(A + i * row_words + pos, 0, count * 4); }
};

// Scalar register block: D[j, i] = sum_k popcount(A[i, k] ^ B[k, j]), i < MR pixels, j < NR channels, B one panel
// (K64 x NR words), D channel-major with row stride ldd (so the epilogue reads and writes whole output rows).
void block_scalar(const uint64_t* A, const uint64_t* B, int64_t K64, int32_t* D, int64_t ldd) {
  for (int64_t i = 0; i < MR; ++i) {
    const uint64_t* a = A + i * K64;
    for (int64_t j0 = 0; j0 < NR; j0 += 4) {
      int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (int64_t k = 0; k < K64; ++k) {
        const uint64_t av = a[k];
        const uint64_t* b = B + k * NR + j0;
        c0 += popcount64(av ^ b[0]);
        c1 += popcount64(av ^ b[1]);
        c2 += popcount64(av ^ b[2]);
        c3 += popcount64(av ^ b[3]);
      }
      int32_t* d = D + j0 * ldd + i;
      d[0] = static_cast<int32_t>(c0);
      d[ldd] = static_cast<int32_t>(c1);
      d[2 * ldd] = static_cast<int32_t>(c2);
      d[3 * ldd] = static_cast<int32_t>(c3);
    }
  }
}

// Nibble tables (see the top of the file). Aoff: per pixel, KN = 16 * K64 bytes, byte s = 16 * nib_s(A row), the
// offset of that nibble's table row; Bn: panels of 64 (last: 32) channels, one byte nib_s(w[o]) per (step s,
// channel), 32 channels per vector. vpunpck{l,h}bw, which widens the uint8 counts, works within 128-bit lanes, so
// channel c of a vector is stored at byte byte_slot(c): the unpacked 16-bit lanes are then channels 0..15, 16..31.
constexpr int64_t kNibbleSteps = 63;      // 63 * 4 < 256: uint8 counts
constexpr int64_t kStepsPerSweep = 256;   // < 16384 (16383 * 4 < 65536): uint16 sums of one block_tables call
constexpr int64_t kMaxTilePixels = 64;
constexpr int64_t kTileBytes = 128 * 1024;

inline int64_t byte_slot(int64_t c) {  // byte position of channel c (0..31) in a 32-channel vector; an involution
  return c < 8 ? c : c < 16 ? c + 8 : c < 24 ? c - 8 : c;
}

#ifdef __AVX2__
struct alignas(64) NibbleTable {
  uint8_t v[256];  // v[16 * u + w] = popcount(u ^ w)
};
constexpr NibbleTable make_nibble_table() {
  NibbleTable t{};
  for (int u = 0; u < 16; ++u)
    for (int w = 0; w < 16; ++w) t.v[16 * u + w] = static_cast<uint8_t>(__builtin_popcount(u ^ w));
  return t;
}
constexpr NibbleTable kNibbleTable = make_nibble_table();

// Rows of A as nibble offsets (AVX2 path): word w of a row becomes bytes 8w .. 8w + 7 of the row, byte 8w + q =
// 16 * (nibble q of the word), the offset of that nibble's row of kNibbleTable. KN = 16 * K64 bytes per row.
struct EmitNibbles {
  uint8_t* Aoff;
  int64_t row_bytes;  // KN
  void copy(int64_t i, int64_t pos, const int32_t* src, int64_t count) {
    uint8_t* dst = Aoff + i * row_bytes + 8 * pos;
    const __m128i low = _mm_set1_epi8(0x0f);
    int64_t j = 0;
    for (; j + 2 <= count; j += 2) {  // two words -> 16 bytes
      uint64_t v;
      std::memcpy(&v, src + j, 8);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8 * j), expand(_mm_cvtsi64_si128(static_cast<long long>(v)),
                                                                       low));
    }
    if (j < count) {
      const __m128i e = expand(_mm_cvtsi32_si128(src[j]), low);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + 8 * j), e);
    }
  }
  void zero(int64_t i, int64_t pos, int64_t count) { std::memset(Aoff + i * row_bytes + 8 * pos, 0, 8 * count); }
  // 8 bytes b -> 16 bytes (16 * low nibble of b0, 16 * high nibble of b0, 16 * low nibble of b1, ...)
  static __m128i expand(__m128i v, __m128i low) {
    const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
    return _mm_slli_epi16(_mm_unpacklo_epi8(lo, hi), 4);  // values < 16: no carry into the next byte
  }
};

// 16 x 16 byte transpose: out row c = byte c of rows 0..15.
inline void transpose16x16(const __m128i r[16], __m128i out[16]) {
  __m128i t[16], u[16], v[16];
  for (int i = 0; i < 8; ++i) {  // t[2i], t[2i+1]: rows 2i, 2i+1 interleaved, columns 0..7 and 8..15
    t[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + c]: rows 4i .. 4i+3 of columns 4c .. 4c+3
    u[4 * i + 0] = _mm_unpacklo_epi16(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm_unpackhi_epi16(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm_unpacklo_epi16(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm_unpackhi_epi16(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int h = 0; h < 2; ++h)  // v[8h + 2c + e]: rows 8h .. 8h+7 of columns 4c + 2e, 4c + 2e + 1
    for (int c = 0; c < 4; ++c) {
      v[8 * h + 2 * c] = _mm_unpacklo_epi32(u[8 * h + c], u[8 * h + 4 + c]);
      v[8 * h + 2 * c + 1] = _mm_unpackhi_epi32(u[8 * h + c], u[8 * h + 4 + c]);
    }
  for (int q = 0; q < 8; ++q) {  // columns 2q, 2q + 1: all 16 rows
    out[2 * q] = _mm_unpacklo_epi64(v[q], v[8 + q]);
    out[2 * q + 1] = _mm_unpackhi_epi64(v[q], v[8 + q]);
  }
}

// Bn: for each panel of 64 (last: 32) channels, Bn[panel][s][32 v + byte_slot(c)] = nib_s(w[64 panel + 32 v + c]);
// built 16 channels x one 64-bit word (16 nibbles) at a time with a byte transpose. Zero for padded channels.
void build_weight_panels(const int32_t* w, int64_t O, int64_t Opad, int64_t K32, int64_t K64, int64_t TO,
                         uint8_t* Bn) {
  const int64_t KN = 16 * K64;
  at::parallel_for(0, ceil_div(Opad, 16), std::max<int64_t>(1, 16384 / K64), [&](int64_t begin, int64_t end) {
    const __m128i low = _mm_set1_epi8(0x0f);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t q0 = blk * 16, o0 = q0 / TO * TO, nv = std::min<int64_t>(TO, Opad - o0) / 32;
      const int64_t v = (q0 - o0) / 32, half = (q0 % 32) / 16;  // the 16 byte slots 16 half .. of vector v
      uint8_t* dst = Bn + o0 * KN + v * 32 + half * 16;
      const int32_t* rows[16];  // filter of each slot, or null past O
      for (int q = 0; q < 16; ++q) {
        const int64_t o = o0 + v * 32 + byte_slot(16 * half + q);
        rows[q] = o < O ? w + o * K32 : nullptr;
      }
      for (int64_t k = 0; k < K64; ++k) {
        __m128i r[16], c[16];
        const bool pair = 2 * k + 1 < K32;  // else the odd last word, paired with a zero word
        for (int q = 0; q < 16; ++q) {
          uint64_t word = 0;
          if (rows[q] != nullptr) {
            if (pair)
              std::memcpy(&word, rows[q] + 2 * k, 8);
            else
              word = static_cast<uint32_t>(rows[q][2 * k]);
          }
          const __m128i x = _mm_cvtsi64_si128(static_cast<long long>(word));
          r[q] = _mm_unpacklo_epi8(_mm_and_si128(x, low), _mm_and_si128(_mm_srli_epi16(x, 4), low));  // nibbles
        }
        transpose16x16(r, c);
        for (int m = 0; m < 16; ++m) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (16 * k + m) * nv * 32), c[m]);
      }
    }
  });
}

// D[j, i] (+)= sum_{s0 <= s < s1} table[nib_s(a_i)][nib_s(w_j)] for MR pixels, NV * 32 channels (one panel).
template <int NV>
void block_tables(const uint8_t* Aoff, int64_t lda, const uint8_t* Bn, int64_t s0, int64_t s1, int32_t* D,
                  int64_t ldd, bool accumulate) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i sum[MR][NV][2];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) sum[i][v][0] = sum[i][v][1] = zero;
  for (int64_t c0 = s0; c0 < s1; c0 += kNibbleSteps) {
    const int64_t c1 = std::min(s1, c0 + kNibbleSteps);
    __m256i acc[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc[i][v] = zero;
#pragma GCC unroll 2
    for (int64_t s = c0; s < c1; ++s) {
      __m256i b[NV];
      for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Bn + (s * NV + v) * 32));
      for (int i = 0; i < MR; ++i) {
        const __m256i table = _mm256_broadcastsi128_si256(
            _mm_load_si128(reinterpret_cast<const __m128i*>(kNibbleTable.v + Aoff[i * lda + s])));
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_add_epi8(acc[i][v], _mm256_shuffle_epi8(table, b[v]));
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {
        sum[i][v][0] = _mm256_add_epi16(sum[i][v][0], _mm256_unpacklo_epi8(acc[i][v], zero));  // channels 0..15
        sum[i][v][1] = _mm256_add_epi16(sum[i][v][1], _mm256_unpackhi_epi8(acc[i][v], zero));  // channels 16..31
      }
  }
  // Per group of 8 channels: widen to int32, transpose 4 pixels x 8 channels, store D[j, i .. i + 3].
  for (int v = 0; v < NV; ++v)
    for (int h = 0; h < 2; ++h)
      for (int q = 0; q < 2; ++q) {
        __m256i r[MR];
        for (int i = 0; i < MR; ++i) {
          const __m128i half = q ? _mm256_extracti128_si256(sum[i][v][h], 1) : _mm256_castsi256_si128(sum[i][v][h]);
          r[i] = _mm256_cvtepu16_epi32(half);
        }
        const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        const __m256i c[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2),  // channels 0|4, 1|5
                              _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};  // channels 2|6, 3|7
        int32_t* d = D + (v * 32 + h * 16 + q * 8) * ldd;
        for (int j = 0; j < 4; ++j) {
          for (int e = 0; e < 2; ++e) {
            __m128i* p = reinterpret_cast<__m128i*>(d + (j + 4 * e) * ldd);
            __m128i val = e ? _mm256_extracti128_si256(c[j], 1) : _mm256_castsi256_si128(c[j]);
            if (accumulate) val = _mm_add_epi32(val, _mm_loadu_si128(p));
            _mm_storeu_si128(p, val);
          }
        }
      }
}
constexpr bool kHaveAvx2 = true;
#else
constexpr bool kHaveAvx2 = false;
#endif

at::Tensor xnor_conv2d_cpu(const at::Tensor& x_packed, const at::Tensor& w_packed, const at::Tensor& alpha,
                           const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& bias,
                           int64_t channels, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           int64_t variant) {
  TORCH_CHECK(x_packed.dim() == 4 && w_packed.dim() == 4, "xnor_conv2d: x_packed and w_packed must be 4D");
  TORCH_CHECK(x_packed.scalar_type() == at::kInt && w_packed.scalar_type() == at::kInt,
              "xnor_conv2d: packed tensors must be int32");
  TORCH_CHECK(x_packed.device().is_cpu() && w_packed.device().is_cpu() && alpha.device().is_cpu(),
              "xnor_conv2d: expected CPU tensors");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "xnor_conv2d: stride, padding and dilation must have 2 elements");
  Geometry g{};
  g.N = x_packed.size(0), g.H = x_packed.size(1), g.W = x_packed.size(2), g.Cw = x_packed.size(3);
  g.O = w_packed.size(0), g.kh = w_packed.size(1), g.kw = w_packed.size(2);
  g.C = channels;
  g.sh = stride[0], g.sw = stride[1], g.ph = padding[0], g.pw = padding[1], g.dh = dilation[0], g.dw = dilation[1];
  TORCH_CHECK(w_packed.size(3) == g.Cw && ceil_div(g.C, kWordBits) == g.Cw && g.C > 0,
              "xnor_conv2d: channels ", g.C, " do not match ", g.Cw, " activation and ", w_packed.size(3),
              " weight words");
  TORCH_CHECK(g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0 && g.ph >= 0 && g.pw >= 0,
              "xnor_conv2d: stride and dilation must be positive, padding non-negative");
  g.Ho = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(g.Ho > 0 && g.Wo > 0, "xnor_conv2d: output size ", g.Ho, "x", g.Wo, " is not positive");
  TORCH_CHECK(alpha.numel() == g.O && alpha.scalar_type() == at::kFloat, "xnor_conv2d: alpha must be float32 (O,)");
  const int64_t HoWo = g.Ho * g.Wo, P = g.N * HoWo;
  if (scale.has_value())
    TORCH_CHECK(scale->numel() == P && scale->scalar_type() == at::kFloat && scale->device().is_cpu(),
                "xnor_conv2d: scale must be a float32 CPU tensor with N * Ho * Wo elements");
  if (bias.has_value())
    TORCH_CHECK(bias->numel() == g.O && bias->scalar_type() == at::kFloat && bias->device().is_cpu(),
                "xnor_conv2d: bias must be a float32 CPU tensor (O,)");
  TORCH_CHECK(variant >= 0 && variant <= 2, "xnor_conv2d: variant must be 0 (auto), 1 (scalar) or 2 (avx2)");
  TORCH_CHECK(variant != 2 || kHaveAvx2, "xnor_conv2d: the AVX2 variant was not compiled in");

  at::Tensor out = at::empty({g.N, g.O, g.Ho, g.Wo}, x_packed.options().dtype(at::kFloat));
  if (P == 0 || g.O == 0) return out;
  const at::Tensor xp = x_packed.contiguous(), wp = w_packed.contiguous(), al = alpha.contiguous();
  const at::Tensor sc = scale.has_value() ? scale->contiguous() : at::Tensor();
  const at::Tensor bs = bias.has_value() ? bias->contiguous() : at::Tensor();
  const float* alpha_ptr = al.data_ptr<float>();
  const float* scale_ptr = sc.defined() ? sc.data_ptr<float>() : nullptr;
  const float* bias_ptr = bs.defined() ? bs.data_ptr<float>() : nullptr;
  float* out_ptr = out.data_ptr<float>();

  const bool use_avx2 = kHaveAvx2 && variant != 1;
  const int64_t T = g.T(), K32 = g.K32(), K64 = g.K64(), KN = 16 * K64, Cw = g.Cw, C = g.C;
  const int64_t TO = 64;                           // output channels per tile
  const int64_t Opad = ceil_div(g.O, 32) * 32;     // AVX2 panels of 32 or 64 channels, scalar panels of NR

  // Weights, re-laid out per call (O * K64 words: small next to the convolution itself), the filter rows flattened
  // over (ky, kx, word) exactly like the rows of A. popw[t, o] = popcount(w[o, t, :]), for the padding correction.
  const int32_t* w_ptr = wp.data_ptr<int32_t>();
  std::vector<uint64_t> B;          // scalar: panels of NR channels, B[o / NR, k, o % NR]
  std::unique_ptr<uint8_t[]> Bn;    // AVX2: panels of 64 (last: 32) channels, see build_weight_panels
  std::vector<int32_t> popw(T * Opad, 0);
  for (int64_t o = 0; o < g.O; ++o)
    for (int64_t t = 0; t < T; ++t) {
      const int32_t* words = w_ptr + o * K32 + t * Cw;
      int64_t c0 = 0, c1 = 0, j = 0;
      for (; j + 4 <= Cw; j += 4) {  // two independent 64-bit popcount chains
        uint64_t a, b;
        std::memcpy(&a, words + j, 8);
        std::memcpy(&b, words + j + 2, 8);
        c0 += popcount64(a);
        c1 += popcount64(b);
      }
      for (; j < Cw; ++j) c0 += __builtin_popcount(static_cast<uint32_t>(words[j]));
      popw[t * Opad + o] = static_cast<int32_t>(c0 + c1);
    }
  if (use_avx2) {
#ifdef __AVX2__
    Bn.reset(new uint8_t[Opad * KN]);  // every byte is written
    build_weight_panels(w_ptr, g.O, Opad, K32, K64, TO, Bn.get());
#endif
  } else {
    B.assign(Opad * K64, 0);
    std::vector<uint64_t> row(K64);
    for (int64_t o = 0; o < g.O; ++o) {
      row.back() = 0;
      std::memcpy(row.data(), w_ptr + o * K32, K32 * 4);  // same word order and 64-bit pairing as walk_im2col
      for (int64_t k = 0; k < K64; ++k) B[((o / NR) * K64 + k) * NR + o % NR] = row[k];
    }
  }

  // TP pixels per tile: at most 64 and ~128 KiB of A, balanced so that the last pixel block is not mostly empty.
  const int64_t row_bytes = use_avx2 ? KN : K64 * 8;
  const int64_t TPmax = std::min(std::max<int64_t>(MR, std::min(kMaxTilePixels, (kTileBytes / row_bytes) / MR * MR)),
                                 ceil_div(P, MR) * MR);
  const int64_t TP = ceil_div(ceil_div(P, ceil_div(P, TPmax)), MR) * MR;
  const int64_t n_pblocks = ceil_div(P, TP), n_oblocks = ceil_div(Opad, TO);
  const int32_t* x_ptr = xp.data_ptr<int32_t>();

  // At least ~2^24 binary products (~0.1 ms) per thread: splitting less work costs more in wake-ups than it saves,
  // much more when other processes keep the cores busy.
  const int64_t grain = std::max<int64_t>(1, kMinConvWork / (TP * TO * K64 * 64));
  at::parallel_for(0, n_pblocks * n_oblocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> A(use_avx2 ? 0 : TP * K64);
    std::vector<uint8_t> Aoff(use_avx2 ? TP * KN : 0);
    std::vector<int32_t> D(TO * TP);
    std::vector<int32_t> base(TP), corr;
    std::vector<int64_t> keys;
    std::vector<std::pair<int32_t, int32_t>> border;  // (pixel in tile, pattern)
    const std::vector<float> ones(scale_ptr ? 0 : TP, 1.0f);
    int64_t built = -1;
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t pb = tile / n_oblocks, ob = tile % n_oblocks;
      const int64_t p0 = pb * TP, o0 = ob * TO, to = std::min(TO, Opad - o0);
      if (pb != built) {
        if (use_avx2) {
#ifdef __AVX2__
          EmitNibbles emit{Aoff.data(), KN};
          walk_im2col(g, x_ptr, p0, TP, emit);
#endif
        } else {
          EmitWords emit{reinterpret_cast<uint32_t*>(A.data()), 2 * K64};
          walk_im2col(g, x_ptr, p0, TP, emit);
        }
        built = pb;
      }
      if (use_avx2) {
#ifdef __AVX2__
        const uint8_t* panel = Bn.get() + o0 * KN;
        for (int64_t s0 = 0; s0 < KN; s0 += kStepsPerSweep)
          for (int64_t i = 0; i < TP; i += MR) {
            const int64_t s1 = std::min(KN, s0 + kStepsPerSweep);
            if (to == 64)
              block_tables<2>(Aoff.data() + i * KN, KN, panel, s0, s1, D.data() + i, TP, s0 > 0);
            else
              block_tables<1>(Aoff.data() + i * KN, KN, panel, s0, s1, D.data() + i, TP, s0 > 0);
          }
#endif
      } else {
        for (int64_t j = 0; j < to; j += NR)
          for (int64_t i = 0; i < TP; i += MR)
            block_scalar(A.data() + i * K64, B.data() + (o0 + j) * K64, K64, D.data() + j * TP + i, TP);
      }
      const int64_t tp = std::min(TP, P - p0);
      const int64_t oe = std::min(to, g.O - o0);  // real (unpadded) channels of this tile
      // Valid taps per pixel: a contiguous range ky_lo..ky_hi x kx_lo..kx_hi. A border pixel's taps on the padding
      // were read as zero words, adding popcount(w[o, t]) to D: the padding correction removes it again. Pixels
      // share few distinct ranges (edges, corners), so the correction is summed once per range ("pattern").
      int64_t y = (p0 % HoWo) / g.Wo, x = p0 % g.Wo;
      keys.clear();
      border.clear();
      for (int64_t i = 0; i < tp; ++i) {
        const int64_t iy0 = y * g.sh - g.ph, ix0 = x * g.sw - g.pw;
        base[i] = static_cast<int32_t>(T * C);
        if (iy0 < 0 || iy0 + (g.kh - 1) * g.dh >= g.H || ix0 < 0 || ix0 + (g.kw - 1) * g.dw >= g.W) {
          const TapRange r = valid_taps(g, iy0, ix0);
          base[i] = static_cast<int32_t>(r.count() * C);
          int64_t pat = std::find(keys.begin(), keys.end(), r.key()) - keys.begin();
          if (pat == static_cast<int64_t>(keys.size())) {
            keys.push_back(r.key());
            corr.resize(keys.size() * TO);
            int32_t* c = corr.data() + pat * TO;
            std::fill(c, c + TO, 0);
            for (int64_t ky = 0; ky < g.kh; ++ky)
              for (int64_t kx = 0; kx < g.kw; ++kx) {
                if (r.contains(ky, kx)) continue;
                const int32_t* pw_t = popw.data() + (ky * g.kw + kx) * Opad + o0;
                for (int64_t j = 0; j < oe; ++j) c[j] += pw_t[j];
              }
          }
          border.emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(pat));
        }
        if (++x == g.Wo) {
          x = 0;
          if (++y == g.Ho) y = 0;
        }
      }
      for (int64_t j = 0; j < oe; ++j) {
        int32_t* d = D.data() + j * TP;
        for (const auto& [i, pat] : border) d[i] -= corr[pat * TO + j];
      }
      // Fused epilogue: out = alpha * K * (base - 2 * D) + bias, one contiguous output row segment per image.
      const float* s = scale_ptr ? scale_ptr + p0 : ones.data();
      for (int64_t i0 = 0; i0 < tp;) {
        const int64_t n = (p0 + i0) / HoWo, hw0 = (p0 + i0) % HoWo;
        const int64_t i1 = std::min(tp, i0 + HoWo - hw0);
        for (int64_t j = 0; j < oe; ++j) {
          const int64_t o = o0 + j;
          const float a = alpha_ptr[o], b = bias_ptr ? bias_ptr[o] : 0.0f;
          float* dst = out_ptr + (n * g.O + o) * HoWo + hw0 - i0;
          const int32_t* d = D.data() + j * TP;
          for (int64_t i = i0; i < i1; ++i) dst[i] = a * s[i] * static_cast<float>(base[i] - 2 * d[i]) + b;
        }
        i0 = i1;
      }
    }
  });
  return out;
}

std::string kernel_info() {
  return std::string("xnor_conv2d: ") + (kHaveAvx2 ? "avx2 (vpshufb nibble tables)" : "scalar popcount") +
         ", threads " + std::to_string(at::get_num_threads());
}

}  // namespace

TORCH_LIBRARY(zoo_xnor_cpu, m) {
  m.def("pack_signs(Tensor x, bool absmean) -> (Tensor, Tensor)");
  m.def("input_scale(Tensor absmean, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  m.def(
      "xnor_conv2d(Tensor x_packed, Tensor w_packed, Tensor alpha, Tensor? scale, Tensor? bias, int channels, "
      "int[2] stride, int[2] padding, int[2] dilation, int variant) -> Tensor");
  m.def("kernel_info() -> str", &kernel_info);
}

TORCH_LIBRARY_IMPL(zoo_xnor_cpu, CPU, m) {
  m.impl("pack_signs", &pack_signs_cpu);
  m.impl("input_scale", &input_scale_cpu);
  m.impl("xnor_conv2d", &xnor_conv2d_cpu);
}
