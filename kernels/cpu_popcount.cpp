// Bit-packed XNOR-popcount convolution on the CPU (zoo_kernels; built with cpu_pack.cpp and loaded by cpu.py).
//
// Packed format (see packing.py): int32 words, 32 channels per word, bit j (LSB = 0) of word k holds channel
// 32 * k + j, 1 iff value >= 0. Padding bits past C are 0. Activations are (N, H, W, Cw), weights (O, kh, kw, Cw).
//
// Convolution as an implicit GEMM over packed words
// -------------------------------------------------
// Flatten the output pixels p = (n, y, x) (P = N * Ho * Wo of them) and the filter taps t = (ky, kx) (T = kh * kw).
// Row p of the "im2col" matrix A is the concatenation over taps of the Cw words of activation pixel (iy, ix), or
// Cw zero words when the tap falls on the padding; row o of B is filter o flattened the same way. Both rows hold
// U = T * Cw words (and a final zero word when U is odd: the rows are read in pairs). Then
//
//     D[p, o]   = sum_k popcount(A[p, k] ^ B[o, k])
//     int[p, o] = sum over valid taps t of (C - 2 * popcount(a_t ^ w_t))
//               = |V| * C - 2 * (D[p, o] - sum_{t not in V} popcount(w[o, t]))      (V: taps of p in the image)
//     out[n, o, y, x] = alpha[o] * K[n, y, x] * int[p, o] + bias[o]                 (fused epilogue, float32)
//
// Padding correction: a tap on the padding was read as zero words, i.e. as C activations of -1, which added
// popcount(w[o, t]) to D; it is subtracted again, so that the padding contributes 0, as zeros do in F.conv2d.
//
// Inner loop (AVX2): nibble tables. popcount(a ^ b) is the sum over the nibbles s of a word of
// table[nib_s(a)][nib_s(b)], table[u][v] = popcount(u ^ v). One vpshufb looks up 32 bytes in a 16-byte table: the
// table row of one pixel's nibble (broadcast to both 128-bit lanes), indexed by that nibble of 32 filters' weights,
// counts 32 x 4 binary products; a vpaddb accumulates them (uint8, at most 63 steps, then added to uint16 sums). A
// register block is MR = 4 pixels x NV = 2 vectors of 32 filters (a 128-filter panel runs it on each half, a 96- or
// 32-filter one adds 4 x 1); per nibble step it loads NV weight vectors and MR table rows (movzx of the pixel's
// pre-scaled nibble + vbroadcasti128), then issues MR * NV vpshufb + vpaddb, the bound of the loop (2 vpshufb per
// cycle on Zen 3 and recent Intel cores). The 4 x 2 step is inline assembly: GCC spills the accumulators of the
// intrinsics form; and the accumulators live in a scope of at most 63 steps (GCC stores longer-lived ones to the
// stack at every step). Pair blocks (the default where the output width is even or at least 5) go further: a table
// row for the nibbles of two horizontally adjacent pixels, precomputed as a pair offset per padded pixel, counts both
// pixels in the two halves of each byte with the same vpshufb (see block_pairs): 1.15-1.35x faster in situ.
// Without AVX2 (or with variant "scalar") the same tiles run 64-bit popcounts; with variant "avx512" they run the
// AVX-512 VPOPCNTDQ micro-kernel of cpu_popcount_avx512.cpp (8 filters per vector, the weights laid out k-major once
// per weight tensor and cached with the panels), where the CPU has that ISA (see resolve_variant).
//
// Weights: re-laid out once per weight tensor and cached. The panels hold 128 filters (the last one 32 * NV,
// NV = 1..4), one byte nib_s(w[o]) per (nibble step, filter), 32 filters per vector, built with 16 x 16 byte
// transposes; with them popw[t, o] = popcount(w[o, t, :]) for the padding correction. The cache is keyed by the
// tensor's storage, offset, shape, strides and the fingerprint of its words (cpu_fingerprint.cpp: any change of the
// weights is seen, also a write through .data that no version counter records) and drops entries whose storage was
// freed.
//
// Activations (AVX2 path): no im2col matrix is built. The packed input is expanded once per call into a zero-padded
// image of nibble offsets, (N, H + 2 ph, W + 2 pw) pixels of L = 8 Cw bytes (byte 8 w + q = 16 * nibble q of word w,
// the offset of its row of the table); the padding pixels are zero bytes, i.e. zero words. Row p of A is then never
// copied: tap t of pixel p is the L bytes at a fixed offset (ky dh Wp + kx dw) L from the pixel's tap (0, 0), so a
// register block reads its MR pixels' nibbles for tap t at MR pointers plus that offset, and a 3x3 conv reads each
// expanded pixel nine times from cache instead of copying it nine times. The pair blocks read pair offsets instead
// (see build_pair_offsets), laid out the same way and built row by row through one row of that image.
//
// Tiling and memory access: tiles of TP pixels x one panel are distributed over torch's intra-op threads
// (at::parallel_for, consecutive tiles per thread, pixel-major). A tile sweeps the T * L steps in chunks of about
// kChunkBytes of the panel, so that the chunk of the panel, the pixels' bytes and the tile's uint16 sums stay in L1
// while every register block of the tile passes over them. A chunk is a list of runs: each kernel row's taps (one
// contiguous segment of the pixel's bytes when dw == 1, else each tap) cut into equal runs of at most 63 steps, the
// uint8 counts flushed only between whole runs, so that the loops' trip counts repeat and their exits are predicted.
// The threads take tiles from a shared counter. The output is channels_last: a pixel's filters are contiguous, so the
// epilogue writes whole vectors (non-temporal stores when the output is far larger than the caches), and the next
// layer's sign packing reads 32 contiguous channels per word. The scalar path builds the im2col rows of A as 64-bit
// words per tile.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/Storage.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cpu_kernels.h"
#include "cpu_ukernels.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kWordBits = 32;
constexpr int64_t kMinConvWork = 1 << 24;  // binary products per thread, at least
constexpr int64_t kNibbleSteps = 63;       // 63 * 4 < 256: uint8 counts
constexpr int64_t kChunkBytes = 16384;     // panel bytes per chunk of steps (L1 share)
constexpr int64_t kMaxSumSteps = 16383;    // 16383 * 4 < 65536: uint16 sums, then added to int32
constexpr int64_t kPanel = 128;            // filters per weight panel
constexpr int64_t kStreamBytes = int64_t(4) << 20;  // outputs larger than this are streamed to memory
constexpr size_t kKeepPaddedBytes = size_t(64) << 20;  // the padded image buffer kept between calls, at most

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int popcount64(uint64_t v) { return __builtin_popcountll(v); }

struct Geometry {
  int64_t N, H, W, C, Cw, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo;
  int64_t T() const { return kh * kw; }
  int64_t K32() const { return kh * kw * Cw; }
  int64_t K64() const { return ceil_div(kh * kw * Cw, 2); }
};

// Filters o0 .. o0 + 32 * nv - 1 (those >= O are padding); its bytes start at offset in the panel buffer.
struct Panel {
  int64_t o0, nv;
  size_t offset;
};

std::vector<Panel> make_panels(int64_t O, int64_t steps) {
  std::vector<Panel> panels;
  size_t offset = 0;
  for (int64_t o0 = 0; o0 < O; o0 += kPanel) {
    const int64_t nv = ceil_div(std::min(kPanel, O - o0), 32);
    panels.push_back({o0, nv, offset});
    offset += static_cast<size_t>(steps * nv * 32);
  }
  return panels;
}

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

// D[i * ldd + j] = sum_k popcount(A[i, k] ^ B[j, k]) for the rows i of A and filters j < oe of B (K64 words each).
void block_scalar(const uint64_t* A, int64_t rows, const uint64_t* B, int64_t oe, int64_t K64, int32_t* D,
                  int64_t ldd) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < oe; ++j) {
      const uint64_t* a = A + i * K64;
      const uint64_t* b = B + j * K64;
      int64_t c0 = 0, c1 = 0, k = 0;
      for (; k + 2 <= K64; k += 2) {  // two independent popcount chains
        c0 += popcount64(a[k] ^ b[k]);
        c1 += popcount64(a[k + 1] ^ b[k + 1]);
      }
      if (k < K64) c0 += popcount64(a[k] ^ b[k]);
      D[i * ldd + j] = static_cast<int32_t>(c0 + c1);
    }
}

// ------------------------------------------------------------------------------------------ AVX2 kernels
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

// The nibbles of 16 bytes b, in memory order: (low nibble of b0, high nibble of b0, low of b1, ...), low 8 bytes of b
// in the first half, high 8 in the second.
inline std::pair<__m128i, __m128i> split_nibbles(__m128i v) {
  const __m128i low = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
  return {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
}

// Nibble offsets (AVX2 path): word w of a pixel becomes bytes 8w .. 8w + 7, byte 8w + q = 16 * (nibble q of the
// word), the offset of that nibble's row of kNibbleTable; dst gets 8 * count bytes.
void expand_nibbles(const int32_t* src, int64_t count, uint8_t* dst) {
  auto expand = [](__m128i v) {  // 16 * each nibble: values < 16, so no carry into the next byte
    const auto [a, b] = split_nibbles(v);
    return std::make_pair(_mm_slli_epi16(a, 4), _mm_slli_epi16(b, 4));
  };
  int64_t j = 0;
  for (; j + 4 <= count; j += 4) {  // four words -> 32 bytes
    const auto [a, b] = expand(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8 * j), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8 * j + 16), b);
  }
  for (; j < count; ++j)
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + 8 * j), expand(_mm_cvtsi32_si128(src[j])).first);
}

// The zero-padded image of nibble offsets: E[n, yp, xp, :] (L = 8 Cw bytes) is pixel (yp - ph, xp - pw) of image n
// expanded, or L zero bytes (zero words, as the im2col rows of the scalar path) on the padding; Hp = H + 2 ph rows of
// Wp = W + 2 pw pixels. Output pixel (n, y, x)'s tap (ky, kx) is then E[n, y sh + ky dh, x sw + kx dw]: a fixed byte
// offset from the tap (0, 0) of the pixel, whatever the pixel. This builds row yp of image n (Wp * L bytes).
void build_padded_row(const Geometry& g, const int32_t* xp, int64_t n, int64_t yp, uint8_t* row) {
  const int64_t Wp = g.W + 2 * g.pw, L = 8 * g.Cw, iy = yp - g.ph;
  if (iy < 0 || iy >= g.H) {
    std::memset(row, 0, Wp * L);
    return;
  }
  std::memset(row, 0, g.pw * L);
  expand_nibbles(xp + (n * g.H + iy) * g.W * g.Cw, g.W * g.Cw, row + g.pw * L);
  std::memset(row + (g.pw + g.W) * L, 0, g.pw * L);
}

// The whole image E, rows in parallel.
void build_padded_nibbles(const Geometry& g, const int32_t* xp, uint8_t* E) {
  const int64_t Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw, L = 8 * g.Cw;
  at::parallel_for(0, g.N * Hp, std::max<int64_t>(1, 65536 / (Wp * L)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) build_padded_row(g, xp, r / Hp, r % Hp, E + r * Wp * L);
  });
}

// Pair tables (pair path): kPairTable row (u1, u2), at byte 16 * (16 * u1 + u2), holds pc(u1 ^ w) + 16 * pc(u2 ^ w)
// for w = 0..15: one vpshufb counts the products of two pixels' nibbles (u1, u2) with 32 filters' nibbles, in the
// two 4-bit halves of each byte.
struct alignas(64) PairTable {
  uint8_t v[4096];
};
constexpr PairTable make_pair_table() {
  PairTable t{};
  for (int u = 0; u < 256; ++u)
    for (int w = 0; w < 16; ++w)
      t.v[16 * u + w] = static_cast<uint8_t>(__builtin_popcount((u >> 4) ^ w) + 16 * __builtin_popcount((u & 15) ^ w));
  return t;
}
constexpr PairTable kPairTable = make_pair_table();

// Pair offsets: PE[n, yp, xp, s] = 16 * E[n, yp, xp, s] + E[n, yp, xp + sw, s] (E = 0 past the row's end) =
// 256 * nib + 16 * nib', the offset of the kPairTable row of padded pixels xp and xp + sw: the taps of two
// horizontally adjacent output pixels (x, x + 1) at the same offsets as in E. One row, from that row of E.
void build_pair_row(const Geometry& g, const uint8_t* E, uint16_t* PE) {
  const int64_t Wp = g.W + 2 * g.pw, L = 8 * g.Cw;
  for (int64_t x = 0; x < Wp; ++x) {
    const uint8_t* a = E + x * L;
    const uint8_t* c = x + g.sw < Wp ? a + g.sw * L : nullptr;  // the partner, or none past the row's end
    uint16_t* dst = PE + x * L;
    int64_t k = 0;
    const auto widen = [](const uint8_t* p) {  // 16 bytes to 16 uint16
      return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    };
    for (; k + 16 <= L; k += 16) {
      __m256i v = _mm256_slli_epi16(widen(a + k), 4);
      if (c) v = _mm256_add_epi16(v, widen(c + k));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), v);
    }
    for (; k < L; ++k) dst[k] = static_cast<uint16_t>(16 * a[k] + (c ? c[k] : 0));
  }
}

// The whole image PE, rows in parallel, each through a row of E in a small per-thread buffer (E itself is not kept:
// the pair blocks read only PE).
void build_pair_offsets(const Geometry& g, const int32_t* xp, uint16_t* PE) {
  const int64_t Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw, L = 8 * g.Cw;
  at::parallel_for(0, g.N * Hp, std::max<int64_t>(1, 32768 / (Wp * L)), [&](int64_t b, int64_t e) {
    std::vector<uint8_t> row(Wp * L);
    for (int64_t r = b; r < e; ++r) {
      build_padded_row(g, xp, r / Hp, r % Hp, row.data());
      build_pair_row(g, row.data(), PE + r * Wp * L);
    }
  });
}

inline int64_t byte_slot(int64_t c) {  // byte position of filter c (0..31) in a 32-filter vector; an involution
  // vpunpck{l,h}bw, which widens the uint8 counts, works within 128-bit lanes: with this order the widened 16-bit
  // lanes are filters 0..15 (low) and 16..31 (high).
  return c < 8 ? c : c < 16 ? c + 8 : c < 24 ? c - 8 : c;
}

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

// Panel bytes: Bn[panel.offset + (s * nv + v) * 32 + byte_slot(c)] = nib_s(w[o0 + 32 v + c]) for the nibble steps
// s = 8 u + q (word u of the flattened filter, nibble q); built 16 filters x two words (16 nibbles) at a time.
// Padded filters and the steps of a missing odd last word are 0 (as the odd last word of the rows of A).
void build_panels(const int32_t* w, int64_t O, int64_t U, const std::vector<Panel>& panels, uint8_t* Bn) {
  const int64_t pairs = ceil_div(U, 2);
  std::vector<std::pair<int64_t, int64_t>> jobs;  // (panel, 16-filter half-vector)
  for (int64_t pi = 0; pi < static_cast<int64_t>(panels.size()); ++pi)
    for (int64_t h = 0; h < 2 * panels[pi].nv; ++h) jobs.emplace_back(pi, h);
  at::parallel_for(0, static_cast<int64_t>(jobs.size()), std::max<int64_t>(1, 8192 / pairs), [&](int64_t b, int64_t e) {
    for (int64_t job = b; job < e; ++job) {
      const Panel& pn = panels[jobs[job].first];
      const int64_t v = jobs[job].second / 2, half = jobs[job].second % 2;
      uint8_t* dst = Bn + pn.offset + v * 32 + half * 16;
      const int32_t* rows[16];  // filter of each byte slot, or null past O
      for (int q = 0; q < 16; ++q) {
        const int64_t o = pn.o0 + v * 32 + byte_slot(16 * half + q);
        rows[q] = o < O ? w + o * U : nullptr;
      }
      for (int64_t k = 0; k < pairs; ++k) {
        __m128i r[16], c[16];
        const bool pair = 2 * k + 1 < U;  // else the odd last word, paired with a zero word
        for (int q = 0; q < 16; ++q) {
          uint64_t word = 0;
          if (rows[q] != nullptr) {
            if (pair)
              std::memcpy(&word, rows[q] + 2 * k, 8);
            else
              word = static_cast<uint32_t>(rows[q][2 * k]);
          }
          const __m128i x = _mm_cvtsi64_si128(static_cast<long long>(word));
          r[q] = split_nibbles(x).first;  // the 16 nibbles of the two words
        }
        transpose16x16(r, c);
        for (int m = 0; m < 16; ++m)
          _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (16 * k + m) * pn.nv * 32), c[m]);
      }
    }
  });
}

// One nibble step: acc[i][v] += vpshufb(kNibbleTable row off[i] of pixel i, weight vector v of b). The general
// form is intrinsics; the block that does nearly all the work (4 x 2) is inline assembly.
template <int MR, int NV>
inline __attribute__((always_inline)) void step(__m256i (&acc)[MR][NV], const uint64_t* off, const uint8_t* b) {
  __m256i w[NV];
  for (int v = 0; v < NV; ++v) w[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + v * 32));
  for (int i = 0; i < MR; ++i) {
    const __m256i row =
        _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kNibbleTable.v + off[i])));
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_add_epi8(acc[i][v], _mm256_shuffle_epi8(row, w[v]));
  }
}

#define ZOO_SHUF_ADD(w, t, a) "vpshufb %[" #w "], %[" #t "], %[x]\n\tvpaddb %[x], %[" #a "], %[" #a "]\n\t"
#define ZOO_TABLE "m"(kNibbleTable)

template <>
inline __attribute__((always_inline)) void step<4, 2>(__m256i (&acc)[4][2], const uint64_t* off, const uint8_t* b) {
  __m256i w0, w1, t, x;  // one register for the 4 table rows in turn: renaming keeps them independent
  asm("vmovdqu (%[b]), %[w0]\n\tvmovdqu 32(%[b]), %[w1]\n\t"
      "vbroadcasti128 (%[tab],%[o0]), %[t]\n\t" ZOO_SHUF_ADD(w0, t, a00) ZOO_SHUF_ADD(w1, t, a01)
      "vbroadcasti128 (%[tab],%[o1]), %[t]\n\t" ZOO_SHUF_ADD(w0, t, a10) ZOO_SHUF_ADD(w1, t, a11)
      "vbroadcasti128 (%[tab],%[o2]), %[t]\n\t" ZOO_SHUF_ADD(w0, t, a20) ZOO_SHUF_ADD(w1, t, a21)
      "vbroadcasti128 (%[tab],%[o3]), %[t]\n\t" ZOO_SHUF_ADD(w0, t, a30) ZOO_SHUF_ADD(w1, t, a31)
      : [a00] "+x"(acc[0][0]), [a01] "+x"(acc[0][1]), [a10] "+x"(acc[1][0]), [a11] "+x"(acc[1][1]),
        [a20] "+x"(acc[2][0]), [a21] "+x"(acc[2][1]), [a30] "+x"(acc[3][0]), [a31] "+x"(acc[3][1]),
        [w0] "=&x"(w0), [w1] "=&x"(w1), [t] "=&x"(t), [x] "=&x"(x)
      : [b] "r"(b), [tab] "r"(kNibbleTable.v), [o0] "r"(off[0]), [o1] "r"(off[1]), [o2] "r"(off[2]),
        [o3] "r"(off[3]), "m"(*reinterpret_cast<const uint8_t(*)[64]>(b)), ZOO_TABLE);
}
#undef ZOO_SHUF_ADD
#undef ZOO_TABLE

// A stretch of nibble steps inside one tap: its first byte's offset from a pixel's tap (0, 0) in the padded image,
// its length, and whether the uint8 counts are added to the uint16 sums after it. A chunk of the steps is a list of
// runs; the panel's steps follow one another across them.
struct Run {
  int64_t offset, steps;
  bool flush;
};

struct Chunk {
  int64_t s0, steps;  // its first step and number of steps
  std::vector<Run> runs;
};

// The runs of all T * L steps. A pixel's taps along a kernel row are contiguous in the padded image when dw == 1 (as
// are the panel's steps): such a row of kw * L steps is one segment, else each tap is. Each segment is cut into equal
// runs of at most kNibbleSteps steps (an even length where one divides it), the counts flushed after as many whole
// runs as fit in kNibbleSteps steps; then the runs are cut into chunks of about chunk_steps steps at flush points.
// Regular runs keep the loop trip counts predictable (the counts are never flushed in the middle of a run), and long
// segments flush less often: a 3x3 conv of 128 channels flushes every 48 steps instead of every 32 (one tap).
std::vector<Chunk> make_chunks(const Geometry& g, int64_t Wp, int64_t chunk_steps) {
  const int64_t L = 8 * g.Cw, taps = g.dw == 1 ? g.kw : 1, S = taps * L;  // taps and steps per segment
  int64_t parts = ceil_div(S, kNibbleSteps);
  for (int64_t p = parts; p < parts + 4; ++p)
    if (S % p == 0 && (S / p) % 2 == 0) {
      parts = p;
      break;
    }
  std::vector<Run> runs;
  int64_t since_flush = 0;
  for (int64_t t = 0; t < g.T(); t += taps) {
    const int64_t tap = ((t / g.kw) * g.dh * Wp + (t % g.kw) * g.dw) * L;
    for (int64_t k = 0; k < parts; ++k) {
      const int64_t lo = S * k / parts, hi = S * (k + 1) / parts;
      if (since_flush + hi - lo > kNibbleSteps) runs.back().flush = true, since_flush = 0;
      runs.push_back({tap + lo, hi - lo, false});
      since_flush += hi - lo;
    }
  }
  runs.back().flush = true;
  std::vector<Chunk> chunks;
  int64_t s0 = 0;
  for (size_t r = 0; r < runs.size();) {
    Chunk c{s0, 0, {}};
    do {  // whole flush groups, until the chunk holds chunk_steps steps
      do {
        c.runs.push_back(runs[r]);
        c.steps += runs[r].steps;
      } while (!runs[r++].flush);
    } while (r < runs.size() && c.steps < chunk_steps);
    s0 += c.steps;
    chunks.push_back(std::move(c));
  }
  return chunks;
}

// sums[i * ldd + j] += D over a chunk's runs for MR pixels (px[i]: their tap (0, 0) in the padded image) and NV * 32
// filters: NV vectors of the panel, from B (at the chunk's first step; bstride bytes per step).
template <int MR, int NV>
void block_avx2(const uint8_t* const* px, const Run* runs, int64_t n_runs, const uint8_t* B, int64_t bstride,
                uint16_t* sums, int64_t ldd) {
  for (int64_t r = 0; r < n_runs;) {
    // The runs up to a flush, with the uint8 counts in registers (scoped to them, or GCC stores the accumulators to
    // the stack at every step), then added to the uint16 sums.
    __m256i acc[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_si256();
    bool flush = false;
    while (!flush) {
      const Run& run = runs[r++];
      const uint8_t* q[MR];
      for (int i = 0; i < MR; ++i) q[i] = px[i] + run.offset;
#pragma GCC unroll 2
      for (int64_t s = 0; s < run.steps; ++s, B += bstride) {
        uint64_t off[MR];
        for (int i = 0; i < MR; ++i) off[i] = q[i][s];
        step<MR, NV>(acc, off, B);
      }
      flush = run.flush;
    }
    const __m256i zero = _mm256_setzero_si256();
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {  // filters 0..15 and 16..31 of the vector (see byte_slot)
        __m256i* p = reinterpret_cast<__m256i*>(sums + i * ldd + v * 32);
        _mm256_storeu_si256(p, _mm256_add_epi16(_mm256_loadu_si256(p), _mm256_unpacklo_epi8(acc[i][v], zero)));
        _mm256_storeu_si256(p + 1,
                            _mm256_add_epi16(_mm256_loadu_si256(p + 1), _mm256_unpackhi_epi8(acc[i][v], zero)));
      }
  }
}

using BlockFn = void (*)(const uint8_t* const*, const Run*, int64_t, const uint8_t*, int64_t, uint16_t*, int64_t);

// The register blocks that cover a panel of nv vectors of 32 filters, each with its first vector: a block kernel of 2
// vectors (`two`) on each pair of them, one of 1 vector (`one`) on an odd last one. Wide panels run 2-vector blocks on
// each half rather than one 4-vector block: 2-5% faster with one thread in same-process A/B runs (with two threads
// the difference was within the machine's noise). Shared by the pixel blocks and the pair blocks.
template <class Fn>
struct Passes {  // at most two, by value: chosen once per tile, no allocation
  struct Pass {
    Fn fn;
    int64_t v0;
  } pass[2];
  int n;
  const Pass* begin() const { return pass; }
  const Pass* end() const { return pass + n; }
};
template <class Fn>
Passes<Fn> panel_passes(int64_t nv, Fn two, Fn one) {
  switch (nv) {
    case 4: return {{{two, 0}, {two, 2}}, 2};
    case 3: return {{{two, 0}, {one, 2}}, 2};
    case 2: return {{{two, 0}, {}}, 1};
    default: return {{{one, 0}, {}}, 1};
  }
}

// Pair blocks: 2 pairs of pixels (4 pixels) x V vectors of 32 filters. Per nibble step, one kPairTable row per pair
// (broadcast) and one vpshufb per vector count both pixels' products, in the two 4-bit halves of each byte; the 2V
// "field" accumulators F (ymm0-3) take 3 steps (at most 12 per half, so no half overflows), then are split:
//     lo += F                 (per byte: lo_count + 16 hi_count, modulo 256)
//     hi += F >> 4            (16-bit shift: per byte hi_count, plus 16 times the next byte's lo_count in even bytes)
// and the exact counts (at most 63 * 4 = 252 each) are recovered modulo 256 at the flush: in odd bytes
// lo = lo - 16 hi; that lo, shifted into the even bytes, gives hi_even = hi - 16 lo_odd; then lo = lo - 16 hi in all
// bytes. Per 3 steps and vector: 3 vpshufb, 2 vpaddb and 3 split instructions for 2 pixels, against 6 vpshufb and
// 6 vpaddb with one pixel per table row (the pixel blocks above): the vector pipes, which bound both loops, do a third
// less work. Registers: F ymm0-3, lo ymm4-7, hi ymm8-11, weights ymm12-13, table row ymm14, scratch ymm15; lo and hi
// live in acc (memory) between the runs of a flush group. The whole run is one asm statement (its own loop, two
// groups of 3 steps per iteration): GCC cannot keep 12 accumulators in registers across separate statements.
#define ZOO_PAIR_LOAD(ow) "movzwl " #ow "(%[q0],%[i]), %%eax\n\tmovzwl " #ow "(%[q1],%[i]), %%edx\n\t"
#define ZOO_PAIR_STEP2(ow, op, w)                                                                                    \
  ZOO_PAIR_LOAD(ow)                                                                                                   \
  "vmovdqu " w ", %%ymm12\n\tvmovdqu 32+" w ", %%ymm13\n\t"                                                            \
  "vbroadcasti128 (%[tab],%%rax), %%ymm14\n\t" op(12, 0) op(13, 1)                                                    \
  "vbroadcasti128 (%[tab],%%rdx), %%ymm14\n\t" op(12, 2) op(13, 3)
#define ZOO_PAIR_STEP1(ow, op, w)                                                                                    \
  ZOO_PAIR_LOAD(ow)                                                                                                   \
  "vmovdqu " w ", %%ymm12\n\t"                                                                                        \
  "vbroadcasti128 (%[tab],%%rax), %%ymm14\n\t" op(12, 0) "vbroadcasti128 (%[tab],%%rdx), %%ymm14\n\t" op(12, 1)
#define ZOO_W0 "(%[b])"
#define ZOO_W1 "(%[b],%[bs],1)"
#define ZOO_W2 "(%[b],%[bs],2)"
#define ZOO_SET(w, f) "vpshufb %%ymm" #w ", %%ymm14, %%ymm" #f "\n\t"
#define ZOO_ADD(w, f) "vpshufb %%ymm" #w ", %%ymm14, %%ymm15\n\tvpaddb %%ymm15, %%ymm" #f ", %%ymm" #f "\n\t"
#define ZOO_SPLIT1(f, lo, hi)                                                                                         \
  "vpaddb %%ymm" #f ", %%ymm" #lo ", %%ymm" #lo "\n\tvpsrlw $4, %%ymm" #f ", %%ymm15\n\t"                             \
  "vpaddb %%ymm15, %%ymm" #hi ", %%ymm" #hi "\n\t"
// acc vectors klo, khi <-> registers lo, hi
#define ZOO_ACC_IO(op, lo, hi, klo, khi) op(lo, klo) op(hi, khi)
#define ZOO_LOAD_ACC(r, k) "vmovdqu " #k "*32(%[acc]), %%ymm" #r "\n\t"
#define ZOO_STORE_ACC(r, k) "vmovdqu %%ymm" #r ", " #k "*32(%[acc])\n\t"
#define ZOO_ZERO_ACC(r, k) "vpxor %%xmm" #r ", %%xmm" #r ", %%xmm" #r "\n\t"
// Flush of one pair and vector: the exact counts recovered (ZOO_FIXUP, the steps described above), then lo and hi
// widened and added to (ZOO_FLUSH1) or stored as (ZOO_FIRST1) the uint16 sums of rows rlo, rhi at byte offset off
// (filters 0..15 and 16..31 of the vector, see byte_slot); ymm14 = 0.
#define ZOO_WIDEN1(c, row, off)                                                                                       \
  "vpunpcklbw %%ymm14, %%ymm" #c ", %%ymm15\n\tvpaddw " #off row ", %%ymm15, %%ymm15\n\tvmovdqu %%ymm15, " #off row  \
  "\n\tvpunpckhbw %%ymm14, %%ymm" #c ", %%ymm15\n\tvpaddw 32+" #off row ", %%ymm15, %%ymm15\n\t"                    \
  "vmovdqu %%ymm15, 32+" #off row "\n\t"
#define ZOO_STORE1(c, row, off)                                                                                       \
  "vpunpcklbw %%ymm14, %%ymm" #c ", %%ymm15\n\tvmovdqu %%ymm15, " #off row "\n\t"                                    \
  "vpunpckhbw %%ymm14, %%ymm" #c ", %%ymm15\n\tvmovdqu %%ymm15, 32+" #off row "\n\t"
#define ZOO_SUB16(x, t, d) /* d -= 16 (x & 15), bytewise */                                                           \
  "vpand %[mask], %%ymm" #x ", %%ymm" #t "\n\tvpsllw $4, %%ymm" #t ", %%ymm" #t "\n\t"                                 \
  "vpsubb %%ymm" #t ", %%ymm" #d ", %%ymm" #d "\n\t"
#define ZOO_FIXUP(lo, hi)                                                                                             \
  "vmovdqa %%ymm" #lo ", %%ymm12\n\t" ZOO_SUB16(hi, 15, 12) "vpsrlw $8, %%ymm12, %%ymm12\n\t" ZOO_SUB16(12, 12, hi)  \
      ZOO_SUB16(hi, 15, lo)
#define ZOO_FLUSH1(lo, hi, rlo, rhi, off) ZOO_FIXUP(lo, hi) ZOO_WIDEN1(lo, rlo, off) ZOO_WIDEN1(hi, rhi, off)
#define ZOO_FIRST1(lo, hi, rlo, rhi, off) ZOO_FIXUP(lo, hi) ZOO_STORE1(lo, rlo, off) ZOO_STORE1(hi, rhi, off)
#define ZOO_ROW0 "(%[dst])"
#define ZOO_ROW1 "(%[dst],%%rdx,1)"
#define ZOO_ROW2 "(%[dst],%%rdx,2)"
#define ZOO_ROW3 "(%%rax,%%rdx,1)"
// A run: accumulators zeroed (flags bit 0) or loaded from acc; groups of 3 steps (two per loop iteration), then the
// rest (0-2 steps); then flushed to the sums at dst (flags bit 1) or stored to acc. i: the offset (bytes) into the
// pair offsets, b: the panel at the group's first step.
#define ZOO_PAIR_GROUP(STEP, SPLIT, o0, o1, o2)                                                                        \
  STEP(o0, ZOO_SET, ZOO_W0) STEP(o1, ZOO_ADD, ZOO_W1) STEP(o2, ZOO_ADD, ZOO_W2) SPLIT "add %[bs3], %[b]\n\t"
#define ZOO_PAIR_RUN(STEP, SPLIT, ACC_IO, FLUSH)                                                                      \
  "test $1, %[flags]\n\tjz 5f\n\t" ACC_IO(ZOO_ZERO_ACC) "jmp 6f\n5:\n\t" ACC_IO(ZOO_LOAD_ACC)                         \
  "6:\n\ttest %[g], %[g]\n\tjz 2f\n\t.p2align 5\n"                                                                    \
  "1:\n\t" ZOO_PAIR_GROUP(STEP, SPLIT, 0, 2, 4) ZOO_PAIR_GROUP(STEP, SPLIT, 6, 8, 10)                                 \
  "add $12, %[i]\n\tdec %[g]\n\tjnz 1b\n"                                                                             \
  "2:\n\tcmp $3, %[r]\n\tjb 10f\n\t" ZOO_PAIR_GROUP(STEP, SPLIT, 0, 2, 4) "add $6, %[i]\n\tsub $3, %[r]\n"            \
  "10:\n\ttest %[r], %[r]\n\tjz 3f\n\t" STEP(0, ZOO_SET, ZOO_W0) "cmp $1, %[r]\n\tje 4f\n\t" STEP(2, ZOO_ADD, ZOO_W1) \
  "4:\n\t" SPLIT "3:\n\ttest $2, %[flags]\n\tjz 7f\n\t"                                                               \
  "vpxor %%xmm14, %%xmm14, %%xmm14\n\tmov %[ldd], %%rdx\n\tlea (%[dst],%%rdx,2), %%rax\n\ttest $4, %[flags]\n\t"       \
  "jnz 9f\n\t" FLUSH(ZOO_FLUSH1) "jmp 8f\n9:\n\t" FLUSH(ZOO_FIRST1) "jmp 8f\n7:\n\t" ACC_IO(ZOO_STORE_ACC) "8:\n\t"

// One run of steps for 2 pairs (q0, q1: their pair offsets at the run's first step) and V vectors (b: the panel at
// the run's first step). Between runs the accumulators live in acc (lo[p][v] at 32 (V p + v), hi[p][v] at
// 32 (2 V + V p + v)); the first run after a flush starts them at zero (flags bit 0), the last one before a flush
// (flags bit 1) adds them to the uint16 sums of the block's 4 rows at dst (ldd elements apart), or stores them there
// (flags bit 2: the sums' first flush).
template <int V>
inline void pair_run(const uint16_t* q0, const uint16_t* q1, const uint8_t* b, int64_t bstride, int64_t steps,
                     uint8_t* acc, int64_t flags, uint16_t* dst, int64_t ldd) {
  static const __m256i low_nibbles = _mm256_set1_epi8(15);
  int64_t pairs_of_groups = steps / 6, rest = steps % 6, i = 0;
  const int64_t bstride3 = 3 * bstride, ldd_bytes = 2 * ldd;
  if constexpr (V == 2) {
#define ZOO_IO2(op) \
  ZOO_ACC_IO(op, 4, 8, 0, 4) ZOO_ACC_IO(op, 5, 9, 1, 5) ZOO_ACC_IO(op, 6, 10, 2, 6) ZOO_ACC_IO(op, 7, 11, 3, 7)
#define ZOO_FLUSH2(op) \
  op(4, 8, ZOO_ROW0, ZOO_ROW1, 0) op(5, 9, ZOO_ROW0, ZOO_ROW1, 64) op(6, 10, ZOO_ROW2, ZOO_ROW3, 0) \
      op(7, 11, ZOO_ROW2, ZOO_ROW3, 64)
    asm volatile(ZOO_PAIR_RUN(ZOO_PAIR_STEP2,
                              ZOO_SPLIT1(0, 4, 8) ZOO_SPLIT1(1, 5, 9) ZOO_SPLIT1(2, 6, 10) ZOO_SPLIT1(3, 7, 11),
                              ZOO_IO2, ZOO_FLUSH2)
                 : [i] "+r"(i), [b] "+r"(b), [g] "+r"(pairs_of_groups), [r] "+r"(rest)
                 : [q0] "r"(q0), [q1] "r"(q1), [bs] "r"(bstride), [bs3] "m"(bstride3), [tab] "r"(kPairTable.v),
                   [mask] "m"(low_nibbles), [acc] "r"(acc), [flags] "r"(flags), [dst] "r"(dst), [ldd] "m"(ldd_bytes)
                 : "rax", "rdx", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                   "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
#undef ZOO_IO2
#undef ZOO_FLUSH2
  } else {
#define ZOO_IO1(op) ZOO_ACC_IO(op, 4, 8, 0, 2) ZOO_ACC_IO(op, 5, 9, 1, 3)
#define ZOO_FLUSH_1(op) op(4, 8, ZOO_ROW0, ZOO_ROW1, 0) op(5, 9, ZOO_ROW2, ZOO_ROW3, 0)
    asm volatile(ZOO_PAIR_RUN(ZOO_PAIR_STEP1, ZOO_SPLIT1(0, 4, 8) ZOO_SPLIT1(1, 5, 9), ZOO_IO1, ZOO_FLUSH_1)
                 : [i] "+r"(i), [b] "+r"(b), [g] "+r"(pairs_of_groups), [r] "+r"(rest)
                 : [q0] "r"(q0), [q1] "r"(q1), [bs] "r"(bstride), [bs3] "m"(bstride3), [tab] "r"(kPairTable.v),
                   [mask] "m"(low_nibbles), [acc] "r"(acc), [flags] "r"(flags), [dst] "r"(dst), [ldd] "m"(ldd_bytes)
                 : "rax", "rdx", "memory", "cc", "xmm0", "xmm1", "xmm4", "xmm5", "xmm8", "xmm9", "xmm12", "xmm14",
                   "xmm15");
#undef ZOO_IO1
#undef ZOO_FLUSH_1
  }
}
#undef ZOO_PAIR_LOAD
#undef ZOO_PAIR_STEP2
#undef ZOO_PAIR_STEP1
#undef ZOO_SET
#undef ZOO_ADD
#undef ZOO_SPLIT1
#undef ZOO_ACC_IO
#undef ZOO_LOAD_ACC
#undef ZOO_STORE_ACC
#undef ZOO_ZERO_ACC
#undef ZOO_WIDEN1
#undef ZOO_STORE1
#undef ZOO_FIXUP
#undef ZOO_SUB16
#undef ZOO_FIRST1
#undef ZOO_W0
#undef ZOO_W1
#undef ZOO_W2
#undef ZOO_FLUSH1
#undef ZOO_ROW0
#undef ZOO_ROW1
#undef ZOO_ROW2
#undef ZOO_ROW3
#undef ZOO_PAIR_RUN
#undef ZOO_PAIR_GROUP

// sums[i * ldd + j] += D over a chunk's runs for the 2 pairs pq[0], pq[1] (their tap (0, 0) in the pair offsets;
// rows 0, 1: pixels x, x + 1 of pair 0, rows 2, 3: of pair 1) and V * 32 filters of the panel from B; fresh: the sums
// start here (are overwritten, not added to, by the first flush).
template <int V>
void block_pairs(const uint16_t* const* pq, const Run* runs, int64_t n_runs, const uint8_t* B, int64_t bstride,
                 uint16_t* sums, int64_t ldd, bool fresh) {
  alignas(32) uint8_t acc[4 * V * 32];  // the accumulators between the runs of a flush group
  int64_t first = 1, store = fresh ? 4 : 0;
  for (int64_t r = 0; r < n_runs; ++r) {  // a flush after at most kNibbleSteps steps: the uint8 counts do not overflow
    const Run& run = runs[r];
    pair_run<V>(pq[0] + run.offset, pq[1] + run.offset, B, bstride, run.steps, acc,
                first | (run.flush ? 2 | store : 0), sums, ldd);
    B += run.steps * bstride;
    first = run.flush;
    if (run.flush) store = 0;
  }
}

using PairBlockFn = void (*)(const uint16_t* const*, const Run*, int64_t, const uint8_t*, int64_t, uint16_t*,
                             int64_t, bool);
constexpr bool kHaveAvx2 = true;
#else
constexpr bool kHaveAvx2 = false;
#endif

// ------------------------------------------------------------------------------------------ weight cache

// A weight tensor, re-laid out: the AVX2 panels (absent without AVX2), the k-major words of the AVX-512 micro-kernel
// (where the CPU runs it) and popw[t * O + o] = popcount(w[o, t, :]).
struct Prepared {
  std::vector<Panel> panels;
  std::unique_ptr<uint8_t, decltype(&std::free)> bytes{nullptr, &std::free};
  std::vector<uint64_t> kmajor;
  std::vector<int32_t> popw;
  size_t size = 0;
};

std::shared_ptr<const Prepared> prepare(const int32_t* w, const Geometry& g) {
  auto p = std::make_shared<Prepared>();
  const int64_t T = g.T(), Cw = g.Cw, steps = 16 * g.K64();
  p->popw.assign(T * g.O, 0);
  for (int64_t o = 0; o < g.O; ++o)
    for (int64_t t = 0; t < T; ++t) {
      int32_t c = 0;
      for (int64_t k = 0; k < Cw; ++k) c += __builtin_popcount(static_cast<uint32_t>(w[(o * T + t) * Cw + k]));
      p->popw[t * g.O + o] = c;
    }
  p->panels = make_panels(g.O, steps);
  p->size = p->popw.size() * 4;
  if (zoo_xnor_cpu::cpu_features().avx512()) {
    p->kmajor.resize(zoo_xnor_cpu::size_kmajor(g.O, g.K64()));
    zoo_xnor_cpu::layout_kmajor(w, g.O, g.K32(), p->kmajor.data());
    p->size += p->kmajor.size() * 8;
  }
#ifdef __AVX2__
  const size_t bytes = static_cast<size_t>(steps * ceil_div(g.O, 32) * 32);
  p->bytes.reset(static_cast<uint8_t*>(std::aligned_alloc(64, ceil_div(bytes, 64) * 64)));
  TORCH_CHECK(p->bytes != nullptr, "xnor_conv2d: out of memory for the weight panels");
  build_panels(w, g.O, g.K32(), p->panels, p->bytes.get());
  p->size += bytes;
#endif
  return p;
}

struct CacheEntry {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const void* data;
  std::vector<int64_t> sizes, strides;
  uint64_t fingerprint;
  std::shared_ptr<const Prepared> prepared;
  uint64_t last_use;
};

constexpr size_t kCacheBytes = size_t(256) << 20;
std::mutex g_cache_mutex;
std::vector<CacheEntry> g_cache;
uint64_t g_cache_clock = 0;

// The re-laid-out form of weight tensor w (wc: its contiguous words): from the cache when w is unchanged since.
std::shared_ptr<const Prepared> prepared_weights(const at::Tensor& w, const at::Tensor& wc, const Geometry& g) {
  const uint64_t fingerprint =
      zoo_xnor_cpu::fingerprint_bytes(wc.data_ptr<int32_t>(), static_cast<size_t>(wc.numel()) * sizeof(int32_t));
  const c10::StorageImpl* storage = w.storage().unsafeGetStorageImpl();
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  ++g_cache_clock;
  g_cache.erase(std::remove_if(g_cache.begin(), g_cache.end(), [](const CacheEntry& e) { return e.storage.expired(); }),
                g_cache.end());
  for (auto e = g_cache.begin(); e != g_cache.end(); ++e) {
    if (e->storage._unsafe_get_target() == storage && e->data == w.data_ptr() && e->sizes == w.sizes().vec() &&
        e->strides == w.strides().vec()) {
      if (e->fingerprint == fingerprint) {
        e->last_use = g_cache_clock;
        return e->prepared;
      }
      g_cache.erase(e);  // the same tensor, changed since: its panels are stale
      break;
    }
  }
  auto prepared = prepare(wc.data_ptr<int32_t>(), g);
  size_t total = prepared->size;
  for (const CacheEntry& e : g_cache) total += e.prepared->size;
  while (total > kCacheBytes && !g_cache.empty()) {  // least recently used first
    auto lru = std::min_element(g_cache.begin(), g_cache.end(),
                                [](const CacheEntry& a, const CacheEntry& b) { return a.last_use < b.last_use; });
    total -= lru->prepared->size;
    g_cache.erase(lru);
  }
  g_cache.push_back({w.storage().getWeakStorageImpl(), w.data_ptr(), w.sizes().vec(), w.strides().vec(), fingerprint,
                     prepared, g_cache_clock});
  return prepared;
}

int64_t cached_weights() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  return static_cast<int64_t>(std::count_if(g_cache.begin(), g_cache.end(),
                                            [](const CacheEntry& e) { return !e.storage.expired(); }));
}

// ------------------------------------------------------------------------------------------ convolution

// The fused epilogue of one pixel and panel: for j < oe,
//     dst[j] = fma(float(lead[j] - 2 * d[j]), alpha[j] * s, bias[j]) (+ residual[j], then max(., 0) if relu)
// where lead[j] = |V| * C + 2 * corr[j] holds the pixel's valid taps and padding correction (int = |V| * C - 2 * (D -
// corr), exact in int32). kExtra: a residual or ReLU may follow (a NaN stays NaN under the ReLU, as in torch.relu);
// kStream: non-temporal stores (dst 32-byte aligned), for an output much larger than the caches. 8 filters per
// AVX2 vector; the scalar tail computes the same.
template <bool kExtra, bool kStream, class D>
inline __attribute__((always_inline)) void epilogue(const D* d, const int32_t* lead, const float* alpha,
                                                    const float* bias, float s, const float* res, bool relu,
                                                    int64_t oe, float* dst) {
  int64_t j = 0;
#ifdef __AVX2__
  const __m256 sv = _mm256_set1_ps(s), zero = _mm256_setzero_ps();
  for (; j + 8 <= oe; j += 8) {
    __m256i dv;
    if constexpr (sizeof(D) == 2)
      dv = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d + j)));
    else
      dv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + j));
    const __m256i iv =
        _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lead + j)), _mm256_add_epi32(dv, dv));
    __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iv), _mm256_mul_ps(_mm256_loadu_ps(alpha + j), sv),
                               _mm256_loadu_ps(bias + j));
    if constexpr (kExtra) {
      if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + j));
      if (relu) v = _mm256_max_ps(zero, v);  // max_ps returns its second operand when one is NaN
    }
    if constexpr (kStream)
      _mm256_stream_ps(dst + j, v);
    else
      _mm256_storeu_ps(dst + j, v);
  }
#endif
  for (; j < oe; ++j) {
    float v = std::fma(static_cast<float>(lead[j] - 2 * static_cast<int32_t>(d[j])), alpha[j] * s, bias[j]);
    if (kExtra && res) v += res[j];
    if (kExtra && relu) v = v < 0.0f ? 0.0f : v;
    dst[j] = v;
  }
}

// The epilogue of a tile's rows i < tp (sums: ldd per row) that are output pixels (pixel[i] >= 0; lead row
// pattern[i] + 1, see conv), for the panel's filters o0 .. o0 + oe - 1: alpha, bias, out and res start at o0.
template <bool kExtra, bool kStream, class D>
void epilogue_rows(const D* sums, int64_t ldd, int64_t tp, const int64_t* pixel, const int32_t* pattern,
                   const int32_t* lead, const float* alpha, const float* bias, const float* scale, const float* res,
                   bool relu, int64_t O, int64_t oe, float* out) {
  for (int64_t i = 0; i < tp; ++i) {
    const int64_t p = pixel[i];
    if (p < 0) continue;
    epilogue<kExtra, kStream, D>(sums + i * ldd, lead + (pattern[i] + 1) * ldd, alpha, bias,
                                 scale ? scale[p] : 1.0f, res ? res + p * O : nullptr, relu, oe, out + p * O);
  }
}

template <class D>
using EpilogueFn = void (*)(const D*, int64_t, int64_t, const int64_t*, const int32_t*, const int32_t*, const float*,
                            const float*, const float*, const float*, bool, int64_t, int64_t, float*);

template <class D>
EpilogueFn<D> epilogue_fn(bool extra, bool stream) {
  return extra ? (stream ? epilogue_rows<true, true, D> : epilogue_rows<true, false, D>)
               : (stream ? epilogue_rows<false, true, D> : epilogue_rows<false, false, D>);
}

// The rows r0 .. r0 + TP - 1 of a tile (rows: output pixels in order, or with pairs places, Wq per output row, R
// in all): row i's output pixel (pixel[i] = (n Ho + y) Wo + x, or -1 for a place past Wo or a row past R), its tap
// (0, 0) in the padded image of Wp pixels per row (at[i], in pixels), and its border pattern (pattern[i]: an index
// into ranges, whose valid taps it has; -1 when all its taps are in the image). Rows past R repeat the last pixel
// (or pair): computed, never written. Arguments by value: the loop stores through pointers, and the compiler would
// reload captured values after each store.
__attribute__((noinline)) void map_rows(const Geometry g, const int64_t Wq, const int64_t R, const int64_t r0,
                                        const int64_t TP, const bool pairs, const int64_t Wp, int64_t* at,
                                        int64_t* pixel, int32_t* pattern, std::vector<TapRange>& ranges) {
  const int64_t Hp = g.H + 2 * g.ph, tp = std::min(TP, R - r0);
  ranges.clear();
  int64_t n = r0 / (g.Ho * Wq), y = (r0 / Wq) % g.Ho, x = r0 % Wq;  // of row r0 + i, advanced incrementally
  for (int64_t i = 0; i < TP; ++i) {
    if (i == tp) {
      const int64_t r = pairs ? R - 2 : R - 1;
      n = r / (g.Ho * Wq), y = (r / Wq) % g.Ho, x = r % Wq;
    } else if (i > tp && pairs) {
      x ^= 1;
    }
    at[i] = (n * Hp + y * g.sh) * Wp + x * g.sw;
    const int64_t p = i < tp && x < g.Wo ? (n * g.Ho + y) * g.Wo + x : -1;
    pixel[i] = p;
    int32_t pat = -1;
    const int64_t iy0 = y * g.sh - g.ph, ix0 = x * g.sw - g.pw;
    if (p >= 0 && (iy0 < 0 || iy0 + (g.kh - 1) * g.dh >= g.H || ix0 < 0 || ix0 + (g.kw - 1) * g.dw >= g.W)) {
      const TapRange tr = valid_taps(g, iy0, ix0);
      auto it = std::find_if(ranges.begin(), ranges.end(), [&](const TapRange& q) { return q.key() == tr.key(); });
      pat = static_cast<int32_t>(it - ranges.begin());
      if (it == ranges.end()) ranges.push_back(tr);
    }
    pattern[i] = pat;
    if (i < tp && ++x == Wq) {
      x = 0;
      if (++y == g.Ho) y = 0, ++n;
    }
  }
}

// ------------------------------------------------------------------------------------------ variants

// By number, as cpu.py passes them: auto, then the variants that run a call.
constexpr const char* kVariantNames[] = {"auto", "scalar", "avx2", "avx2_pairs", "avx512"};
std::atomic<int64_t> g_forced_isa{0};  // ZOO_KERNELS_ISA (set_auto_isa): the variant of auto calls, 2 meaning avx2

// Why this build and CPU cannot run variant v ("" when they can).
std::string missing(int64_t v) {
  if ((v == 2 || v == 3) && !kHaveAvx2) return "the AVX2 variants were not compiled in";
  if (v == 4) {
#ifdef ZOO_HAVE_AVX512_UKERNEL
    const zoo_xnor_cpu::CpuFeatures& f = zoo_xnor_cpu::cpu_features();
    std::string lacks;
    for (const auto& [name, has] : {std::pair<const char*, bool>{"avx512f", f.avx512f}, {"avx512bw", f.avx512bw},
                                    {"avx512vl", f.avx512vl}, {"avx512vpopcntdq", f.avx512vpopcntdq}})
      if (!has) lacks += std::string(lacks.empty() ? "the CPU lacks " : ", ") + name;
    return lacks;
#else
    return "the AVX-512 micro-kernel is x86-64 only";
#endif
  }
  return "";
}

std::vector<std::string> variants() {  // those that run here, in order
  std::vector<std::string> names;
  for (int64_t v = 1; v <= 4; ++v)
    if (missing(v).empty()) names.emplace_back(kVariantNames[v]);
  return names;
}

void set_auto_isa(int64_t v) {
  TORCH_CHECK(v == 0 || v == 1 || v == 2 || v == 4, "set_auto_isa: 0 (none), 1 (scalar), 2 (avx2) or 4 (avx512)");
  g_forced_isa.store(v);
}

// The variant a call runs (1-4): an explicit one, checked against the build and the CPU; for auto (0) the ISA that
// ZOO_KERNELS_ISA forces, else the fastest here: avx512 wherever the CPU runs it (1.1-1.6x faster than the AVX2 pair
// blocks at every ResNet-18 3x3 shape, batch 1 and 16, 1 and 2 bit planes, and as fast or faster at 1x1 and 8-1024
// channel shapes, 2 threads on a Sapphire Rapids core pair), else avx2, else scalar; then for AVX2, pair blocks where
// few of them are wasted (an odd width leaves one empty place per row), else pixel blocks.
int64_t resolve_variant(int64_t variant, const Geometry& g) {
  TORCH_CHECK(variant >= 0 && variant <= 4, "xnor_conv2d: variant must be 0 (auto), 1 (scalar), 2 (avx2 pixel ",
              "blocks), 3 (avx2 pair blocks) or 4 (avx512), got ", variant);
  if (variant != 0) {
    TORCH_CHECK(missing(variant).empty(), "xnor_conv2d: variant ", kVariantNames[variant], ": ", missing(variant));
    return variant;
  }
  const int64_t forced = g_forced_isa.load(std::memory_order_relaxed);
  if (forced != 0) {
    std::string choices;
    for (int64_t v : {1, 2, 4})
      if (missing(v).empty()) choices += std::string(choices.empty() ? "" : ", ") + kVariantNames[v];
    TORCH_CHECK(missing(forced).empty(), "xnor_conv2d: ZOO_KERNELS_ISA=", kVariantNames[forced], ", but ",
                missing(forced), "; choices here: ", choices);
    variant = forced;
  } else {
    variant = missing(4).empty() ? 4 : kHaveAvx2 ? 2 : 1;
  }
  return variant == 2 && (g.Wo % 2 == 0 || g.Wo >= 5) ? 3 : variant;
}

// ------------------------------------------------------------------------------------------ convolution driver

// The convolution; its epilogue optionally adds residual (N, O, Ho, Wo) and applies a ReLU (a ResNet block's end).
//
// Bit planes: x_packed (bits, N, H, W, Cw) holds the sign planes s_b of a k-bit input (see kbit.py), and the conv
// computes int = sum_b 2^b int_b, int_b the XNOR conv of plane b: with int_b = lead - 2 D_b (lead = |V| C + 2 corr,
// the same for every plane), int = n lead - 2 sum_b 2^b D_b, n = 2^bits - 1. Each tile sums D over the planes by
// Horner's rule (from the highest plane: double the sums, add the next plane's D), so the epilogue runs once, on
// n lead - 2 D. The caller divides alpha by n. A 4D x_packed is one plane.
at::Tensor conv(const at::Tensor& x_packed, const at::Tensor& w_packed, const at::Tensor& alpha,
                const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& bias, int64_t channels,
                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t variant,
                const std::optional<at::Tensor>& residual, bool relu) {
  TORCH_CHECK((x_packed.dim() == 4 || x_packed.dim() == 5) && w_packed.dim() == 4,
              "xnor_conv2d: x_packed must be 4D (or 5D: bit planes) and w_packed 4D");
  const int64_t bits = x_packed.dim() == 5 ? x_packed.size(0) : 1, d0 = x_packed.dim() - 4;
  TORCH_CHECK(bits >= 1 && bits <= 16, "xnor_conv2d: 1 to 16 bit planes, got ", bits);
  const int64_t n_levels = (int64_t(1) << bits) - 1;  // n: the weight of lead
  TORCH_CHECK(x_packed.scalar_type() == at::kInt && w_packed.scalar_type() == at::kInt,
              "xnor_conv2d: packed tensors must be int32");
  TORCH_CHECK(x_packed.device().is_cpu() && w_packed.device().is_cpu() && alpha.device().is_cpu(),
              "xnor_conv2d: expected CPU tensors");
  Geometry g{};
  g.N = x_packed.size(d0), g.H = x_packed.size(d0 + 1), g.W = x_packed.size(d0 + 2), g.Cw = x_packed.size(d0 + 3);
  g.O = w_packed.size(0), g.kh = w_packed.size(1), g.kw = w_packed.size(2);
  g.C = channels;
  TORCH_CHECK(w_packed.size(3) == g.Cw && g.C > 0 && ceil_div(g.C, kWordBits) == g.Cw,
              "xnor_conv2d: channels ", g.C, " do not match ", g.Cw, " activation and ", w_packed.size(3),
              " weight words");
  std::tie(g.Ho, g.Wo) = zoo_xnor_cpu::check_conv_geometry("xnor_conv2d", bits, g.N, g.H, g.W, g.Cw, g.O, g.kh, g.kw,
                                                           stride, padding, dilation);
  g.sh = stride[0], g.sw = stride[1], g.ph = padding[0], g.pw = padding[1], g.dh = dilation[0], g.dw = dilation[1];
  TORCH_CHECK(alpha.numel() == g.O && alpha.scalar_type() == at::kFloat, "xnor_conv2d: alpha must be float32 (O,)");
  const int64_t HoWo = g.Ho * g.Wo, P = g.N * HoWo;
  if (scale.has_value())
    TORCH_CHECK(scale->numel() == P && scale->scalar_type() == at::kFloat && scale->device().is_cpu(),
                "xnor_conv2d: scale must be a float32 CPU tensor with N * Ho * Wo elements");
  if (bias.has_value())
    TORCH_CHECK(bias->numel() == g.O && bias->scalar_type() == at::kFloat && bias->device().is_cpu(),
                "xnor_conv2d: bias must be a float32 CPU tensor (O,)");
  if (residual.has_value())
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({g.N, g.O, g.Ho, g.Wo}) &&
                    residual->scalar_type() == at::kFloat && residual->device().is_cpu(),
                "xnor_conv2d: residual must be a float32 CPU tensor of the output's shape");
  variant = resolve_variant(variant, g);  // 1 scalar, 2 avx2 pixel blocks, 3 avx2 pair blocks, 4 avx512

  at::Tensor out = at::empty({g.N, g.O, g.Ho, g.Wo}, x_packed.options().dtype(at::kFloat),
                             at::MemoryFormat::ChannelsLast);  // (N, Ho, Wo, O) in memory
  if (P == 0 || g.O == 0) return out;
  const at::Tensor xp = x_packed.contiguous(), wp = w_packed.contiguous(), al = alpha.contiguous();
  const at::Tensor sc = scale.has_value() ? scale->contiguous() : at::Tensor();
  const at::Tensor bs = bias.has_value() ? bias->contiguous() : at::Tensor();
  const at::Tensor rs = residual.has_value() ? residual->contiguous(at::MemoryFormat::ChannelsLast) : at::Tensor();
  const float* res_ptr = rs.defined() ? rs.data_ptr<float>() : nullptr;
  const float* alpha_ptr = al.data_ptr<float>();
  const float* scale_ptr = sc.defined() ? sc.data_ptr<float>() : nullptr;
  const float* bias_ptr = bs.defined() ? bs.data_ptr<float>() : nullptr;
  const int32_t* x_ptr = xp.data_ptr<int32_t>();
  float* out_ptr = out.data_ptr<float>();

  const bool use_avx2 = variant == 2 || variant == 3, use_pairs = variant == 3;
  const int64_t T = g.T(), K32 = g.K32(), K64 = g.K64(), C = g.C;
  const std::shared_ptr<const Prepared> prepared = prepared_weights(w_packed, wp, g);
  const std::vector<Panel>& panels = prepared->panels;
  const int32_t* popw = prepared->popw.data();
  // The im2col paths' micro-kernel and its weights, filter o0's at o0 * K64 in both layouts: for the scalar one,
  // filter rows of K64 words (the odd last word paired with a zero word), for avx512 the cached k-major words.
  using MicroKernel = void (*)(const uint64_t*, int64_t, const uint64_t*, int64_t, int64_t, int32_t*, int64_t);
  MicroKernel micro = block_scalar;
  std::vector<uint64_t> Bw;
  const uint64_t* Wim = nullptr;
#ifdef ZOO_HAVE_AVX512_UKERNEL
  if (variant == 4) micro = zoo_xnor_cpu::popcount_block_avx512, Wim = prepared->kmajor.data();
#endif
  if (variant == 1) {
    Bw.assign(g.O * K64, 0);
    for (int64_t o = 0; o < g.O; ++o) std::memcpy(Bw.data() + o * K64, wp.data_ptr<int32_t>() + o * K32, K32 * 4);
    Wim = Bw.data();
  }

  // The rows of the tiles: output pixels in order, or with pairs, places (n, y, x) for x < 2 * ceil(Wo / 2), a
  // place past Wo computed but not written. TP rows per tile, a multiple of every register block's rows (4): the
  // tile's uint16 sums (TP x 32 nv x 2 bytes, 16 KB at most), a chunk of the panel (about kChunkBytes) and the pixels'
  // bytes of that chunk stay in L1 and L2. (Tiles of half the size were 3-8% slower at batch 16.) Balanced so that
  // the last tile is not mostly empty.
  const int64_t Wq = use_pairs ? 2 * ceil_div(g.Wo, 2) : g.Wo;  // places per output row
  const int64_t R = g.N * g.Ho * Wq;
  const int64_t nv0 = panels.front().nv;
  const int64_t TP = ceil_div(ceil_div(R, ceil_div(R, std::min<int64_t>(128, 256 / nv0))), 4) * 4;
  const int64_t n_pblocks = ceil_div(R, TP);  // after rounding TP up: no tile is empty
  const int64_t n_panels = static_cast<int64_t>(panels.size());
  const int64_t L = 8 * g.Cw, steps = T * L;  // nibble steps per tap and in all (AVX2 path)
  const bool wide = !use_avx2 || steps * n_levels > kMaxSumSteps;  // int32 sums (else D fits the uint16 sums)
  const int64_t plane_words = g.N * g.H * g.W * g.Cw;

  // AVX2 path: the padded image of nibble offsets (read by all threads), or with pairs only the pair offsets (built
  // row by row through a row of it), and the chunks of the steps as runs.
  const int64_t Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw;
  thread_local std::vector<uint8_t> padded;  // reused across calls: no page faults for a fresh buffer each time
  thread_local std::vector<uint16_t> pair_offsets;
  std::vector<Chunk> chunks;
  if (use_avx2) {
#ifdef __AVX2__
    if (use_pairs) {
      pair_offsets.resize(static_cast<size_t>(bits * g.N * Hp * Wp * L));
      for (int64_t b = 0; b < bits; ++b)
        build_pair_offsets(g, x_ptr + b * plane_words, pair_offsets.data() + b * g.N * Hp * Wp * L);
    } else {
      padded.resize(static_cast<size_t>(bits * g.N * Hp * Wp * L));
      for (int64_t b = 0; b < bits; ++b)
        build_padded_nibbles(g, x_ptr + b * plane_words, padded.data() + b * g.N * Hp * Wp * L);
    }
    chunks = make_chunks(g, Wp, kChunkBytes / (32 * nv0));
#endif
  }
  const uint8_t* E = padded.data();  // not the names inside the workers: each thread has its own thread_locals
  const uint16_t* PE = pair_offsets.data();

  // Outputs far larger than L2 are written with non-temporal stores: no read of each line before it is written.
  const bool stream = variant != 1 && g.O % 8 == 0 && P * g.O * 4 > kStreamBytes;
  const EpilogueFn<uint16_t> ep16 = epilogue_fn<uint16_t>(res_ptr != nullptr || relu, stream);
  const EpilogueFn<int32_t> ep32 = epilogue_fn<int32_t>(res_ptr != nullptr || relu, stream);
  const std::vector<float> zeros(bias_ptr ? 0 : g.O, 0.0f);  // the bias when there is none

  // Workers: at most one per ~2^24 binary products (~0.05 ms; splitting less work costs more in wake-ups than it
  // saves). They take the tiles (pixel-major: a pixel block's panels in a row) one at a time from a shared counter
  // rather than in fixed shares: this VM's cores run at different speeds from moment to moment, and with fixed
  // shares the faster one waited for the slower (OpenMP spin-waits were 15-20% of the samples of a profile at batch
  // 16). A worker rebuilds its pixel block's pointers and border patterns when the block changes.
  const int64_t n_tiles = n_pblocks * n_panels;
  const int64_t tiles_per_worker = std::max<int64_t>(1, kMinConvWork / (TP * 32 * nv0 * K32 * kWordBits));
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), ceil_div(n_tiles, tiles_per_worker));
  std::atomic<int64_t> next_tile{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    std::vector<uint64_t> A(use_avx2 ? 0 : bits * TP * K64);  // per plane
    std::vector<uint16_t> sums16(use_avx2 ? TP * kPanel : 0);
    std::vector<int32_t> sums32(wide ? TP * kPanel : 0), plane_sums(!use_avx2 && bits > 1 ? TP * kPanel : 0);
    std::vector<const uint8_t*> px(bits * TP);  // per plane
    std::vector<const uint16_t*> pq(bits * (TP / 2));
    std::vector<int64_t> pixel(TP), at(TP);  // see map_rows
    std::vector<int32_t> pattern(TP), lead;
    std::vector<TapRange> ranges;
    int64_t built = -1;
    for (int64_t tile = next_tile.fetch_add(1, std::memory_order_relaxed); tile < n_tiles;
         tile = next_tile.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t pb = tile / n_panels;
      const Panel& pn = panels[tile % n_panels];
      const int64_t r0 = pb * TP, tp = std::min(TP, R - r0), oe = std::min(32 * pn.nv, g.O - pn.o0);
      const int64_t ldd = 32 * pn.nv;  // row stride of the tile's sums
      if (pb != built) {
        for (int64_t b = 0; !use_avx2 && b < bits; ++b) {
          EmitWords emit{reinterpret_cast<uint32_t*>(A.data() + b * TP * K64), 2 * K64};
          walk_im2col(g, x_ptr + b * plane_words, r0, TP, emit);
        }
        // Valid taps per pixel: a range ky_lo..ky_hi x kx_lo..kx_hi; border pixels share few ranges ("patterns").
        map_rows(g, Wq, R, r0, TP, use_pairs, Wp, at.data(), pixel.data(), pattern.data(), ranges);
        for (int64_t b = 0; use_avx2 && b < bits; ++b) {  // with pairs, the pair offsets only (E is not built)
          const int64_t off = b * g.N * Hp * Wp * L;
          for (int64_t i = 0; i < TP; ++i) {
            if (use_pairs && i % 2 == 0) pq[b * (TP / 2) + i / 2] = PE + off + at[i] * L;
            if (!use_pairs) px[b * TP + i] = E + off + at[i] * L;
          }
        }
        built = pb;
      }
      // lead[r + 1] = |V_r| * C + 2 * (popcounts of the taps that pattern r misses) for this panel's filters; lead[0]
      // (pixels with every tap in the image) = T * C.
      lead.assign((ranges.size() + 1) * ldd, static_cast<int32_t>(T * C));  // (times n below, for bit planes)
      for (size_t r = 0; r < ranges.size(); ++r) {
        int32_t* row = lead.data() + (r + 1) * ldd;
        std::fill(row, row + ldd, static_cast<int32_t>(ranges[r].count() * C));
        for (int64_t ky = 0; ky < g.kh; ++ky)
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            if (ranges[r].contains(ky, kx)) continue;
            const int32_t* pw_t = popw + (ky * g.kw + kx) * g.O + pn.o0;
            for (int64_t j = 0; j < oe; ++j) row[j] += 2 * pw_t[j];
          }
      }
      if (n_levels > 1)
        for (int32_t& v : lead) v *= static_cast<int32_t>(n_levels);
      if (use_avx2) {
#ifdef __AVX2__
        const Passes<BlockFn> passes = panel_passes<BlockFn>(pn.nv, block_avx2<4, 2>, block_avx2<4, 1>);
        const Passes<PairBlockFn> ppasses = panel_passes<PairBlockFn>(pn.nv, block_pairs<2>, block_pairs<1>);
        const uint8_t* B = prepared->bytes.get() + pn.offset;
        if (wide) std::fill(sums32.begin(), sums32.begin() + TP * ldd, 0);
        // (pair blocks overwrite the uint16 sums at their first flush: no fill)
        if (!use_pairs) std::fill(sums16.begin(), sums16.begin() + TP * ldd, 0);
        int64_t in16 = 0;  // steps summed in the uint16 sums
        auto widen = [&] {
          for (int64_t k = 0; k < tp * ldd; ++k) sums32[k] += sums16[k];
          if (!use_pairs) std::fill(sums16.begin(), sums16.begin() + TP * ldd, 0);
          in16 = 0;
        };
        for (int64_t b = bits - 1; b >= 0; --b) {  // bit planes by Horner's rule, the highest first
          if (b != bits - 1) {  // the sums so far count twice
            if (wide) {
              widen();
              for (int64_t k = 0; k < tp * ldd; ++k) sums32[k] *= 2;
            } else {
              for (int64_t k = 0; k < tp * ldd; ++k) sums16[k] = static_cast<uint16_t>(sums16[k] << 1);
              in16 *= 2;
            }
          }
          const uint16_t* const* pqb = pq.data() + b * (TP / 2);
          const uint8_t* const* pxb = px.data() + b * TP;
          for (const Chunk& c : chunks) {
            if (in16 + c.steps > kMaxSumSteps) widen();  // only when wide
            const uint8_t* Bc = B + c.s0 * 32 * pn.nv;
            const int64_t n_runs = static_cast<int64_t>(c.runs.size());
            for (int64_t i = 0; i < tp; i += 4) {  // row-major: a group of 4 rows through every pass
              if (use_pairs) {
                for (const auto& ps : ppasses)
                  ps.fn(pqb + i / 2, c.runs.data(), n_runs, Bc + ps.v0 * 32, 32 * pn.nv,
                        sums16.data() + i * ldd + ps.v0 * 32, ldd, in16 == 0);
              } else {
                for (const auto& ps : passes)
                  ps.fn(pxb + i, c.runs.data(), n_runs, Bc + ps.v0 * 32, 32 * pn.nv,
                        sums16.data() + i * ldd + ps.v0 * 32, ldd);
              }
            }
            in16 += c.steps;
          }
        }
        if (wide) widen();
#endif
      } else {
        for (int64_t b = bits - 1; b >= 0; --b) {  // bit planes by Horner's rule, as above
          int32_t* D = b == bits - 1 ? sums32.data() : plane_sums.data();
          micro(A.data() + b * TP * K64, tp, Wim + pn.o0 * K64, oe, K64, D, ldd);
          if (b != bits - 1)
            for (int64_t i = 0; i < tp; ++i)
              for (int64_t j = 0; j < oe; ++j) sums32[i * ldd + j] = 2 * sums32[i * ldd + j] + D[i * ldd + j];
        }
      }
      // Fused epilogue: out = alpha * K * (|V| * C - 2 * (D - corr)) + bias (+ residual, ReLU), one pixel's
      // contiguous run of filters at a time.
      const float* b = (bias_ptr ? bias_ptr : zeros.data()) + pn.o0;
      const float* r = res_ptr ? res_ptr + pn.o0 : nullptr;
      if (wide)
        ep32(sums32.data(), ldd, tp, pixel.data(), pattern.data(), lead.data(), alpha_ptr + pn.o0, b, scale_ptr, r,
             relu, g.O, oe, out_ptr + pn.o0);
      else
        ep16(sums16.data(), ldd, tp, pixel.data(), pattern.data(), lead.data(), alpha_ptr + pn.o0, b, scale_ptr, r,
             relu, g.O, oe, out_ptr + pn.o0);
    }
#ifdef __AVX2__
    if (stream) _mm_sfence();  // the streamed stores are visible before the threads join
#endif
  });
  if (padded.capacity() > kKeepPaddedBytes) std::vector<uint8_t>().swap(padded);  // keep only moderate buffers
  if (pair_offsets.capacity() * 2 > kKeepPaddedBytes) std::vector<uint16_t>().swap(pair_offsets);
  return out;
}

at::Tensor xnor_conv2d_cpu(const at::Tensor& x_packed, const at::Tensor& w_packed, const at::Tensor& alpha,
                           const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& bias,
                           int64_t channels, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           int64_t variant) {
  return conv(x_packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation, variant, std::nullopt,
              false);
}

// The float-input conv in one call (one dispatch, which matters at batch 1): sign packing with the optional fused
// affine (and mean_c |.|), K when input_scale, then the popcount conv, with the residual and ReLU epilogue.
at::Tensor xnor_conv2d_float_cpu(const at::Tensor& x, const at::Tensor& w_packed, const at::Tensor& alpha,
                                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& norm_scale,
                                 const std::optional<at::Tensor>& norm_shift, int64_t channels,
                                 at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, bool input_scale, const std::optional<at::Tensor>& residual,
                                 bool relu) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == channels, "xnor_conv2d: x must be (N, ", channels, ", H, W)");
  TORCH_CHECK(kernel_size.size() == 2 && w_packed.dim() == 4 && w_packed.size(1) == kernel_size[0] &&
                  w_packed.size(2) == kernel_size[1],
              "xnor_conv2d: w_packed does not match the kernel size");
  zoo_xnor_cpu::check_conv_geometry("xnor_conv2d", 1, x.size(0), x.size(2), x.size(3), ceil_div(channels, kWordBits),
                                    w_packed.size(0), kernel_size[0], kernel_size[1], stride, padding, dilation);
  const auto [packed, absmean] = zoo_xnor_cpu::pack_signs(x, input_scale, norm_scale, norm_shift);
  std::optional<at::Tensor> scale;
  if (input_scale) scale = zoo_xnor_cpu::input_scale(absmean, kernel_size, stride, padding, dilation);
  return conv(packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation, 0, residual, relu);
}

// The k-bit-input conv in one call: the input's sign planes (pack_kbit_planes, with the optional fused affine), K
// when input_scale (from mean_c |.| of the same affine), then one conv over the planes (Horner sums, see conv) with
// alpha / (2^bits - 1), and the residual and ReLU epilogue.
at::Tensor kbit_conv2d_float_cpu(const at::Tensor& x, const at::Tensor& w_packed, const at::Tensor& alpha,
                                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& norm_scale,
                                 const std::optional<at::Tensor>& norm_shift, int64_t channels,
                                 at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t bits, bool input_scale,
                                 const std::optional<at::Tensor>& residual, bool relu) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == channels, "kbit_conv2d: x must be (N, ", channels, ", H, W)");
  TORCH_CHECK(kernel_size.size() == 2 && w_packed.dim() == 4 && w_packed.size(1) == kernel_size[0] &&
                  w_packed.size(2) == kernel_size[1],
              "kbit_conv2d: w_packed does not match the kernel size");
  TORCH_CHECK(alpha.scalar_type() == at::kFloat, "kbit_conv2d: alpha must be float32");
  TORCH_CHECK(bits >= 1 && bits <= 16, "kbit_conv2d: bits must be from 1 to 16, got ", bits);
  zoo_xnor_cpu::check_conv_geometry("kbit_conv2d", bits, x.size(0), x.size(2), x.size(3), ceil_div(channels, kWordBits),
                                    w_packed.size(0), kernel_size[0], kernel_size[1], stride, padding, dilation);
  const at::Tensor planes = zoo_xnor_cpu::pack_kbit_planes(x, bits, norm_scale, norm_shift);
  std::optional<at::Tensor> scale;
  if (input_scale) {
    const at::Tensor absmean = std::get<1>(zoo_xnor_cpu::pack_signs(x, true, norm_scale, norm_shift));
    scale = zoo_xnor_cpu::input_scale(absmean, kernel_size, stride, padding, dilation);
  }
  const at::Tensor alpha_n = alpha / static_cast<double>((int64_t(1) << bits) - 1);
  return conv(planes, w_packed, alpha_n, scale, bias, channels, stride, padding, dilation, 0, residual, relu);
}

std::string kernel_info() {
  std::string info = "xnor_conv2d: variants";
  for (const std::string& v : variants()) info += " " + v;
  const int64_t forced = g_forced_isa.load();
  info += std::string(", auto: ") + (forced ? std::string("ZOO_KERNELS_ISA=") + kVariantNames[forced] : "by shape");
  const zoo_xnor_cpu::CpuFeatures& f = zoo_xnor_cpu::cpu_features();
  const std::pair<const char*, bool> features[] = {
      {"avx2", f.avx2}, {"avx512bw", f.avx512bw}, {"avx512vpopcntdq", f.avx512vpopcntdq},
      {"avx512_vnni", f.avx512_vnni}, {"amx_int8", f.amx_int8}, {"amx_bf16", f.amx_bf16}};
  info += "; cpu";
  for (const auto& [name, has] : features) info += std::string(" ") + (has ? "+" : "-") + name;
  return info + "; threads " + std::to_string(at::get_num_threads());
}

}  // namespace

int64_t zoo_xnor_cpu::forced_isa() { return g_forced_isa.load(std::memory_order_relaxed); }

const zoo_xnor_cpu::CpuFeatures& zoo_xnor_cpu::cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f{};
#if defined(__x86_64__)
    __builtin_cpu_init();  // (also checks that the OS saves the AVX-512 state)
    f.avx2 = __builtin_cpu_supports("avx2");
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512vpopcntdq = __builtin_cpu_supports("avx512vpopcntdq");
    f.avx512_vnni = __builtin_cpu_supports("avx512vnni");
    f.amx_int8 = __builtin_cpu_supports("amx-int8");
    f.amx_bf16 = __builtin_cpu_supports("amx-bf16");
#endif
    return f;
  }();
  return features;
}

TORCH_LIBRARY(zoo_xnor_cpu, m) {
  m.def(
      "xnor_conv2d(Tensor x_packed, Tensor w_packed, Tensor alpha, Tensor? scale, Tensor? bias, int channels, "
      "int[2] stride, int[2] padding, int[2] dilation, int variant) -> Tensor");
  m.def(
      "xnor_conv2d_float(Tensor x, Tensor w_packed, Tensor alpha, Tensor? bias, Tensor? norm_scale, "
      "Tensor? norm_shift, int channels, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool input_scale, Tensor? residual, bool relu) -> Tensor");
  m.def(
      "kbit_conv2d_float(Tensor x, Tensor w_packed, Tensor alpha, Tensor? bias, Tensor? norm_scale, "
      "Tensor? norm_shift, int channels, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "int bits, bool input_scale, Tensor? residual, bool relu) -> Tensor");
  m.def("kernel_info() -> str", &kernel_info);
  m.def("cached_weights() -> int", &cached_weights);
  m.def("variants() -> str[]", &variants);
  m.def("set_auto_isa(int variant) -> ()", &set_auto_isa);
}

TORCH_LIBRARY_IMPL(zoo_xnor_cpu, CPU, m) {
  m.impl("xnor_conv2d", &xnor_conv2d_cpu);
  m.impl("xnor_conv2d_float", &xnor_conv2d_float_cpu);
  m.impl("kbit_conv2d_float", &kbit_conv2d_float_cpu);
}
