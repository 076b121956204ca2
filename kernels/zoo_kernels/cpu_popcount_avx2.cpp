// The popcount conv's AVX2 micro-kernels (zoo_kernels; see cpu_popcount_ukernels.h for the contracts and
// cpu_popcount.cpp for the driver that calls them where the CPU has AVX2).
//
// Inner loop: nibble tables. popcount(a ^ b) is the sum over the nibbles s of a word of table[nib_s(a)][nib_s(b)],
// table[u][v] = popcount(u ^ v). One vpshufb looks up 32 bytes in a 16-byte table: the table row of one pixel's
// nibble (broadcast to both 128-bit lanes), indexed by that nibble of 32 filters' weights, counts 32 x 4 binary
// products; a vpaddb accumulates them (uint8, at most 63 steps, then added to uint16 sums). A register block is
// MR = 4 pixels x NV = 2 vectors of 32 filters (a 128-filter panel runs it on each half, a 96- or 32-filter one adds
// 4 x 1); per nibble step it loads NV weight vectors and MR table rows (movzx of the pixel's pre-scaled nibble +
// vbroadcasti128), then issues MR * NV vpshufb + vpaddb, the bound of the loop (2 vpshufb per cycle on Zen 3 and
// recent Intel cores). The 4 x 2 step is inline assembly: GCC spills the accumulators of the intrinsics form; and the
// accumulators live in a scope of at most 63 steps (GCC stores longer-lived ones to the stack at every step). Pair
// blocks (the default where the output width is even or at least 5) go further: a table row for the nibbles of two
// horizontally adjacent pixels, precomputed as a pair offset per padded pixel, counts both pixels in the two halves
// of each byte with the same vpshufb (see block_pairs): 1.15-1.35x faster in situ.
//
// Weights: panels of 128 filters (the last one 32 * NV, NV = 1..4), one byte nib_s(w[o]) per (nibble step, filter),
// 32 filters per vector, built with 16 x 16 byte transposes (build_panels_avx2).
//
// Activations: no im2col matrix is built. The packed input is expanded once per call into a zero-padded image of
// nibble offsets, (N, H + 2 ph, W + 2 pw) pixels of L = 8 Cw bytes (byte 8 w + q = 16 * nibble q of word w, the
// offset of its row of the table); the padding pixels are zero bytes, i.e. zero words. Row p of A is then never
// copied: tap t of pixel p is the L bytes at a fixed offset (ky dh Wp + kx dw) L from the pixel's tap (0, 0), so a
// register block reads its MR pixels' nibbles for tap t at MR pointers plus that offset, and a 3x3 conv reads each
// expanded pixel nine times from cache instead of copying it nine times. The pair blocks read pair offsets instead
// (see build_pair_offsets_avx2), laid out the same way and built row by row through one row of that image.
//
// Compiled for AVX2 by function attributes (ZOO_AVX2), not by flags or a pragma: the extension's other code, and the
// inline functions of the standard headers this file instantiates, stay the baseline ISA. Lambdas do not inherit
// the attribute, so the ones passed to at::parallel_for call attributed functions.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu_popcount_ukernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define ZOO_AVX2 __attribute__((target("avx2,fma,popcnt")))

namespace zoo_xnor_cpu {
namespace {

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
ZOO_AVX2 inline std::pair<__m128i, __m128i> split_nibbles(__m128i v) {
  const __m128i low = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
  return {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
}

// Nibble offsets (AVX2 path): word w of a pixel becomes bytes 8w .. 8w + 7, byte 8w + q = 16 * (nibble q of the
// word), the offset of that nibble's row of kNibbleTable; dst gets 8 * count bytes.
ZOO_AVX2 inline std::pair<__m128i, __m128i> expand(__m128i v) {  // 16 * each nibble: < 256, no carry
  const auto [a, b] = split_nibbles(v);
  return std::make_pair(_mm_slli_epi16(a, 4), _mm_slli_epi16(b, 4));
}

ZOO_AVX2 void expand_nibbles(const int32_t* src, int64_t count, uint8_t* dst) {
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
ZOO_AVX2 void build_padded_row(const Geometry& g, const int32_t* xp, int64_t n, int64_t yp, uint8_t* row) {
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
void build_padded_nibbles_impl(const Geometry& g, const int32_t* xp, uint8_t* E) {
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
ZOO_AVX2 inline __m256i widen_bytes(const uint8_t* p) {  // 16 bytes to 16 uint16
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

ZOO_AVX2 void build_pair_row(const Geometry& g, const uint8_t* E, uint16_t* PE) {
  const int64_t Wp = g.W + 2 * g.pw, L = 8 * g.Cw;
  for (int64_t x = 0; x < Wp; ++x) {
    const uint8_t* a = E + x * L;
    const uint8_t* c = x + g.sw < Wp ? a + g.sw * L : nullptr;  // the partner, or none past the row's end
    uint16_t* dst = PE + x * L;
    int64_t k = 0;
    for (; k + 16 <= L; k += 16) {
      __m256i v = _mm256_slli_epi16(widen_bytes(a + k), 4);
      if (c) v = _mm256_add_epi16(v, widen_bytes(c + k));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), v);
    }
    for (; k < L; ++k) dst[k] = static_cast<uint16_t>(16 * a[k] + (c ? c[k] : 0));
  }
}

// The whole image PE, rows in parallel, each through a row of E in a small per-thread buffer (E itself is not kept:
// the pair blocks read only PE).
void build_pair_offsets_impl(const Geometry& g, const int32_t* xp, uint16_t* PE) {
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
ZOO_AVX2 inline void transpose16x16(const __m128i r[16], __m128i out[16]) {
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
// One 16-filter half-vector h of panel pn: its bytes for every nibble step, at dst.
ZOO_AVX2 void build_panel_half(const int32_t* w, int64_t O, int64_t U, const Panel& pn, int64_t v, int64_t half,
                               uint8_t* dst) {
  const int64_t pairs = ceil_div(U, 2);
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
    for (int m = 0; m < 16; ++m) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (16 * k + m) * pn.nv * 32), c[m]);
  }
}

// One nibble step: acc[i][v] += vpshufb(kNibbleTable row off[i] of pixel i, weight vector v of b). The general
// form is intrinsics; the block that does nearly all the work (4 x 2) is inline assembly.
template <int MR, int NV>
ZOO_AVX2 inline __attribute__((always_inline)) void step(__m256i (&acc)[MR][NV], const uint64_t* off,
                                                         const uint8_t* b) {
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
ZOO_AVX2 inline
    __attribute__((always_inline)) void step<4, 2>(__m256i (&acc)[4][2], const uint64_t* off, const uint8_t* b) {
  __m256i w0, w1, t, x;  // one register for the 4 table rows in turn: renaming keeps them independent
  asm("vmovdqu (%[b]), %[w0]\n\tvmovdqu 32(%[b]), %[w1]\n\t"
      "vbroadcasti128 (%[tab],%[o0]), %[t]\n\t" ZOO_SHUF_ADD(w0, t, a00)
          ZOO_SHUF_ADD(w1, t, a01) "vbroadcasti128 (%[tab],%[o1]), %[t]\n\t" ZOO_SHUF_ADD(w0, t, a10)
              ZOO_SHUF_ADD(w1, t, a11) "vbroadcasti128 (%[tab],%[o2]), %[t]\n\t" ZOO_SHUF_ADD(w0, t, a20)
                  ZOO_SHUF_ADD(w1, t, a21) "vbroadcasti128 (%[tab],%[o3]), %[t]\n\t" ZOO_SHUF_ADD(w0, t, a30)
                      ZOO_SHUF_ADD(w1, t, a31)
      : [a00] "+x"(acc[0][0]), [a01] "+x"(acc[0][1]), [a10] "+x"(acc[1][0]), [a11] "+x"(acc[1][1]),
        [a20] "+x"(acc[2][0]), [a21] "+x"(acc[2][1]), [a30] "+x"(acc[3][0]), [a31] "+x"(acc[3][1]), [w0] "=&x"(w0),
        [w1] "=&x"(w1), [t] "=&x"(t), [x] "=&x"(x)
      : [b] "r"(b), [tab] "r"(kNibbleTable.v), [o0] "r"(off[0]), [o1] "r"(off[1]), [o2] "r"(off[2]), [o3] "r"(off[3]),
        "m"(*reinterpret_cast<const uint8_t (*)[64]>(b)), ZOO_TABLE);
}
#undef ZOO_SHUF_ADD
#undef ZOO_TABLE

// sums[i * ldd + j] += D over a chunk's runs for MR pixels (px[i]: their tap (0, 0) in the padded image) and NV * 32
// filters: NV vectors of the panel, from B (at the chunk's first step; bstride bytes per step).
template <int MR, int NV>
ZOO_AVX2 void block_avx2(const uint8_t* const* px, const Run* runs, int64_t n_runs, const uint8_t* B, int64_t bstride,
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
        _mm256_storeu_si256(p + 1, _mm256_add_epi16(_mm256_loadu_si256(p + 1), _mm256_unpackhi_epi8(acc[i][v], zero)));
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
    case 4:
      return {{{two, 0}, {two, 2}}, 2};
    case 3:
      return {{{two, 0}, {one, 2}}, 2};
    case 2:
      return {{{two, 0}, {}}, 1};
    default:
      return {{{one, 0}, {}}, 1};
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
#define ZOO_PAIR_STEP2(ow, op, w)                        \
  ZOO_PAIR_LOAD(ow)                                      \
  "vmovdqu " w ", %%ymm12\n\tvmovdqu 32+" w              \
  ", %%ymm13\n\t"                                        \
  "vbroadcasti128 (%[tab],%%rax), %%ymm14\n\t" op(12, 0) \
      op(13, 1) "vbroadcasti128 (%[tab],%%rdx), %%ymm14\n\t" op(12, 2) op(13, 3)
#define ZOO_PAIR_STEP1(ow, op, w) \
  ZOO_PAIR_LOAD(ow)               \
  "vmovdqu " w                    \
  ", %%ymm12\n\t"                 \
  "vbroadcasti128 (%[tab],%%rax), %%ymm14\n\t" op(12, 0) "vbroadcasti128 (%[tab],%%rdx), %%ymm14\n\t" op(12, 1)
#define ZOO_W0 "(%[b])"
#define ZOO_W1 "(%[b],%[bs],1)"
#define ZOO_W2 "(%[b],%[bs],2)"
#define ZOO_SET(w, f) "vpshufb %%ymm" #w ", %%ymm14, %%ymm" #f "\n\t"
#define ZOO_ADD(w, f) "vpshufb %%ymm" #w ", %%ymm14, %%ymm15\n\tvpaddb %%ymm15, %%ymm" #f ", %%ymm" #f "\n\t"
#define ZOO_SPLIT1(f, lo, hi)                                             \
  "vpaddb %%ymm" #f ", %%ymm" #lo ", %%ymm" #lo "\n\tvpsrlw $4, %%ymm" #f \
  ", %%ymm15\n\t"                                                         \
  "vpaddb %%ymm15, %%ymm" #hi ", %%ymm" #hi "\n\t"
// acc vectors klo, khi <-> registers lo, hi
#define ZOO_ACC_IO(op, lo, hi, klo, khi) op(lo, klo) op(hi, khi)
#define ZOO_LOAD_ACC(r, k) "vmovdqu " #k "*32(%[acc]), %%ymm" #r "\n\t"
#define ZOO_STORE_ACC(r, k) "vmovdqu %%ymm" #r ", " #k "*32(%[acc])\n\t"
#define ZOO_ZERO_ACC(r, k) "vpxor %%xmm" #r ", %%xmm" #r ", %%xmm" #r "\n\t"
// Flush of one pair and vector: the exact counts recovered (ZOO_FIXUP, the steps described above), then lo and hi
// widened and added to (ZOO_FLUSH1) or stored as (ZOO_FIRST1) the uint16 sums of rows rlo, rhi at byte offset off
// (filters 0..15 and 16..31 of the vector, see byte_slot); ymm14 = 0.
#define ZOO_WIDEN1(c, row, off)                                                                                     \
  "vpunpcklbw %%ymm14, %%ymm" #c ", %%ymm15\n\tvpaddw " #off row ", %%ymm15, %%ymm15\n\tvmovdqu %%ymm15, " #off row \
  "\n\tvpunpckhbw %%ymm14, %%ymm" #c ", %%ymm15\n\tvpaddw 32+" #off row                                             \
  ", %%ymm15, %%ymm15\n\t"                                                                                          \
  "vmovdqu %%ymm15, 32+" #off row "\n\t"
#define ZOO_STORE1(c, row, off)                                            \
  "vpunpcklbw %%ymm14, %%ymm" #c ", %%ymm15\n\tvmovdqu %%ymm15, " #off row \
  "\n\t"                                                                   \
  "vpunpckhbw %%ymm14, %%ymm" #c ", %%ymm15\n\tvmovdqu %%ymm15, 32+" #off row "\n\t"
#define ZOO_SUB16(x, t, d) /* d -= 16 (x & 15), bytewise */                     \
  "vpand %[mask], %%ymm" #x ", %%ymm" #t "\n\tvpsllw $4, %%ymm" #t ", %%ymm" #t \
  "\n\t"                                                                        \
  "vpsubb %%ymm" #t ", %%ymm" #d ", %%ymm" #d "\n\t"
#define ZOO_FIXUP(lo, hi)                                                                                           \
  "vmovdqa %%ymm" #lo ", %%ymm12\n\t" ZOO_SUB16(hi, 15, 12) "vpsrlw $8, %%ymm12, %%ymm12\n\t" ZOO_SUB16(12, 12, hi) \
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
#define ZOO_PAIR_GROUP(STEP, SPLIT, o0, o1, o2) \
  STEP(o0, ZOO_SET, ZOO_W0) STEP(o1, ZOO_ADD, ZOO_W1) STEP(o2, ZOO_ADD, ZOO_W2) SPLIT "add %[bs3], %[b]\n\t"
#define ZOO_PAIR_RUN(STEP, SPLIT, ACC_IO, FLUSH) \
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
ZOO_AVX2 inline void pair_run(const uint16_t* q0, const uint16_t* q1, const uint8_t* b, int64_t bstride, int64_t steps,
                              uint8_t* acc, int64_t flags, uint16_t* dst, int64_t ldd) {
  static const __m256i low_nibbles = _mm256_set1_epi8(15);
  int64_t pairs_of_groups = steps / 6, rest = steps % 6, i = 0;
  const int64_t bstride3 = 3 * bstride, ldd_bytes = 2 * ldd;
  if constexpr (V == 2) {
#define ZOO_IO2(op) \
  ZOO_ACC_IO(op, 4, 8, 0, 4) ZOO_ACC_IO(op, 5, 9, 1, 5) ZOO_ACC_IO(op, 6, 10, 2, 6) ZOO_ACC_IO(op, 7, 11, 3, 7)
#define ZOO_FLUSH2(op)                                                                              \
  op(4, 8, ZOO_ROW0, ZOO_ROW1, 0) op(5, 9, ZOO_ROW0, ZOO_ROW1, 64) op(6, 10, ZOO_ROW2, ZOO_ROW3, 0) \
      op(7, 11, ZOO_ROW2, ZOO_ROW3, 64)
    asm volatile(
        ZOO_PAIR_RUN(ZOO_PAIR_STEP2, ZOO_SPLIT1(0, 4, 8) ZOO_SPLIT1(1, 5, 9) ZOO_SPLIT1(2, 6, 10) ZOO_SPLIT1(3, 7, 11),
                     ZOO_IO2, ZOO_FLUSH2)
        : [i] "+r"(i), [b] "+r"(b), [g] "+r"(pairs_of_groups), [r] "+r"(rest)
        : [q0] "r"(q0), [q1] "r"(q1), [bs] "r"(bstride), [bs3] "m"(bstride3), [tab] "r"(kPairTable.v),
          [mask] "m"(low_nibbles), [acc] "r"(acc), [flags] "r"(flags), [dst] "r"(dst), [ldd] "m"(ldd_bytes)
        : "rax", "rdx", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
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
ZOO_AVX2 void block_pairs(const uint16_t* const* pq, const Run* runs, int64_t n_runs, const uint8_t* B, int64_t bstride,
                          uint16_t* sums, int64_t ldd, bool fresh) {
  alignas(32) uint8_t acc[4 * V * 32];  // the accumulators between the runs of a flush group
  int64_t first = 1, store = fresh ? 4 : 0;
  for (int64_t r = 0; r < n_runs; ++r) {  // a flush after at most kNibbleSteps steps: the uint8 counts do not overflow
    const Run& run = runs[r];
    pair_run<V>(pq[0] + run.offset, pq[1] + run.offset, B, bstride, run.steps, acc, first | (run.flush ? 2 | store : 0),
                sums, ldd);
    B += run.steps * bstride;
    first = run.flush;
    if (run.flush) store = 0;
  }
}

using PairBlockFn = void (*)(const uint16_t* const*, const Run*, int64_t, const uint8_t*, int64_t, uint16_t*, int64_t,
                             bool);

// The tile sums of NibbleTile (see cpu_popcount_ukernels.h).
ZOO_AVX2 void tile_sums(const NibbleTile& t) {
  const Passes<BlockFn> passes = panel_passes<BlockFn>(t.nv, block_avx2<4, 2>, block_avx2<4, 1>);
  const Passes<PairBlockFn> ppasses = panel_passes<PairBlockFn>(t.nv, block_pairs<2>, block_pairs<1>);
  const int64_t ldd = 32 * t.nv, TP = t.TP, tp = t.tp;
  uint16_t* sums16 = t.sums16;
  int32_t* sums32 = t.sums32;
  if (t.wide) std::fill(sums32, sums32 + TP * ldd, 0);
  // (pair blocks overwrite the uint16 sums at their first flush: no fill)
  if (!t.pairs) std::fill(sums16, sums16 + TP * ldd, 0);
  int64_t in16 = 0;  // steps summed in the uint16 sums
  const auto widen = [&] {
    for (int64_t k = 0; k < tp * ldd; ++k) sums32[k] += sums16[k];
    if (!t.pairs) std::fill(sums16, sums16 + TP * ldd, 0);
    in16 = 0;
  };
  for (int64_t b = t.bits - 1; b >= 0; --b) {  // bit planes by Horner's rule, the highest first
    if (b != t.bits - 1) {                     // the sums so far count twice
      if (t.wide) {
        widen();
        for (int64_t k = 0; k < tp * ldd; ++k) sums32[k] *= 2;
      } else {
        for (int64_t k = 0; k < tp * ldd; ++k) sums16[k] = static_cast<uint16_t>(sums16[k] << 1);
        in16 *= 2;
      }
    }
    const uint16_t* const* pqb = t.pq + b * (TP / 2);
    const uint8_t* const* pxb = t.px + b * TP;
    for (const Chunk& c : *t.chunks) {
      if (in16 + c.steps > kMaxSumSteps) widen();  // only when wide
      const uint8_t* Bc = t.B + c.s0 * ldd;
      const int64_t n_runs = static_cast<int64_t>(c.runs.size());
      for (int64_t i = 0; i < tp; i += 4) {  // row-major: a group of 4 rows through every pass
        if (t.pairs) {
          for (const auto& ps : ppasses)
            ps.fn(pqb + i / 2, c.runs.data(), n_runs, Bc + ps.v0 * 32, ldd, sums16 + i * ldd + ps.v0 * 32, ldd,
                  in16 == 0);
        } else {
          for (const auto& ps : passes)
            ps.fn(pxb + i, c.runs.data(), n_runs, Bc + ps.v0 * 32, ldd, sums16 + i * ldd + ps.v0 * 32, ldd);
        }
      }
      in16 += c.steps;
    }
  }
  if (t.wide) widen();
}

// The epilogue of one pixel and panel (EpilogueFn in cpu_popcount_ukernels.h), 8 filters per vector; the scalar
// tail computes the same (as cpu_popcount_scalar.cpp does).
template <bool kExtra, bool kStream, class D>
ZOO_AVX2 inline __attribute__((always_inline)) void epilogue(const D* d, const int32_t* lead, const float* alpha,
                                                             const float* bias, float s, const float* res, bool relu,
                                                             int64_t oe, float* dst) {
  int64_t j = 0;
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
  for (; j < oe; ++j) {
    float v = std::fma(static_cast<float>(lead[j] - 2 * static_cast<int32_t>(d[j])), alpha[j] * s, bias[j]);
    if (kExtra && res) v += res[j];
    if (kExtra && relu) v = v < 0.0f ? 0.0f : v;
    dst[j] = v;
  }
}

template <bool kExtra, bool kStream, class D>
ZOO_AVX2 void epilogue_rows(const D* sums, int64_t ldd, int64_t tp, const int64_t* pixel, const int32_t* pattern,
                            const int32_t* lead, const float* alpha, const float* bias, const float* scale,
                            const float* res, bool relu, int64_t O, int64_t oe, float* out) {
  for (int64_t i = 0; i < tp; ++i) {
    const int64_t p = pixel[i];
    if (p < 0) continue;
    epilogue<kExtra, kStream, D>(sums + i * ldd, lead + (pattern[i] + 1) * ldd, alpha, bias, scale ? scale[p] : 1.0f,
                                 res ? res + p * O : nullptr, relu, oe, out + p * O);
  }
}

template <class D>
EpilogueFn<D> epilogue_fn(bool extra, bool stream) {
  return extra ? (stream ? epilogue_rows<true, true, D> : epilogue_rows<true, false, D>)
               : (stream ? epilogue_rows<false, true, D> : epilogue_rows<false, false, D>);
}

}  // namespace

void build_padded_nibbles_avx2(const Geometry& g, const int32_t* x_packed, uint8_t* E) {
  build_padded_nibbles_impl(g, x_packed, E);
}

void build_pair_offsets_avx2(const Geometry& g, const int32_t* x_packed, uint16_t* PE) {
  build_pair_offsets_impl(g, x_packed, PE);
}

// Panel bytes: Bn[panel.offset + (s * nv + v) * 32 + byte_slot(c)] = nib_s(w[o0 + 32 v + c]) for the nibble steps
// s = 8 u + q (word u of the flattened filter, nibble q); built 16 filters x two words (16 nibbles) at a time.
// Padded filters and the steps of a missing odd last word are 0 (as the odd last word of the rows of A).
void build_panels_avx2(const int32_t* w, int64_t O, int64_t U, const std::vector<Panel>& panels, uint8_t* Bn) {
  const int64_t pairs = ceil_div(U, 2);
  std::vector<std::pair<int64_t, int64_t>> jobs;  // (panel, 16-filter half-vector)
  for (int64_t pi = 0; pi < static_cast<int64_t>(panels.size()); ++pi)
    for (int64_t h = 0; h < 2 * panels[pi].nv; ++h) jobs.emplace_back(pi, h);
  at::parallel_for(0, static_cast<int64_t>(jobs.size()), std::max<int64_t>(1, 8192 / pairs), [&](int64_t b, int64_t e) {
    for (int64_t job = b; job < e; ++job) {
      const Panel& pn = panels[jobs[job].first];
      const int64_t v = jobs[job].second / 2, half = jobs[job].second % 2;
      build_panel_half(w, O, U, pn, v, half, Bn + pn.offset + v * 32 + half * 16);
    }
  });
}

void nibble_tile_avx2(const NibbleTile& tile) { tile_sums(tile); }

EpilogueFn<int32_t> epilogue32_avx2(bool extra, bool stream) { return epilogue_fn<int32_t>(extra, stream); }
EpilogueFn<uint16_t> epilogue16_avx2(bool extra, bool stream) { return epilogue_fn<uint16_t>(extra, stream); }

void stream_fence() { _mm_sfence(); }

}  // namespace zoo_xnor_cpu

#endif  // __x86_64__
