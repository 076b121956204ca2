// The popcount conv's micro-kernels on AVX-512 VPOPCNTDQ (zoo_kernels; see cpu_popcount_ukernels.h for the contracts
// and cpu_popcount.cpp for the driver, which calls them only where the CPU has the ISA).
//
// An indirect gemm (IGemmFn, as XNNPACK's igemm): D[i, j] = sum_k popcount(a_i[k] ^ B[j, k]) for MR = 6 rows (output
// pixels) and NV <= 4 vectors of 16 filters, where row i's K32 words are read in place from the padded image of
// packed words, along the segments (each kernel row's taps when the dilation along the row is 1, else each tap):
// no im2col copy of the rows is made. Vectorised over the filters in 32-bit lanes: per word k, the NV vectors of the
// 64-filter block's k-major weights are loaded once, and each row's 32-bit word is broadcast and XORed with them,
// the popcounts (vpopcntd) added to MR x NV int32 accumulators (24 zmm registers, the weights 4 more), which are
// the sums themselves (no narrowing) and stored with a mask for the filters past oe (the k-major block past O holds
// zero words, never stored). Per 512 binary products: an XOR (with the broadcast word), a vpopcntd and an add, the
// bound of the loop. Fewer than MR rows (the tile's last) and fewer than 4 vectors (a block past O) run smaller
// instances of the same template. Row blocks outer, filter blocks inner: the rows' words stay in L1 while the
// blocks' weights pass. (Copying the rows into an im2col matrix per tile, as the scalar variant does, costs about as
// long as the popcounts at 64 channels.) The epilogue runs 16 filters per vector, with a masked
// tail, the same float operations as the scalar one.
//
// Compiled for the ISA by function attributes, not by flags or a pragma: the extension's other code (and whatever
// inline functions of the standard headers this file instantiates) stays the baseline ISA, so the library loads and
// runs on every x86-64 CPU.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "cpu_popcount_ukernels.h"

namespace zoo_xnor_cpu {

int64_t size_kmajor(int64_t O, int64_t K32) { return (O + 63) / 64 * 64 * K32; }

void layout_kmajor(const int32_t* w, int64_t O, int64_t K32, uint32_t* Wt) {
  std::fill(Wt, Wt + size_kmajor(O, K32), uint32_t(0));
  for (int64_t o = 0; o < O; ++o) {
    uint32_t* dst = Wt + (o / 64) * 64 * K32 + o % 64;
    const int32_t* row = w + o * K32;
    for (int64_t k = 0; k < K32; ++k) dst[64 * k] = static_cast<uint32_t>(row[k]);
  }
}

#ifdef ZOO_HAVE_X86_UKERNELS

#define ZOO_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq")))

namespace {

constexpr int kMR = 6;  // rows per register block

using TileFn = void (*)(const int32_t* const*, const Segment*, int64_t, const uint32_t*, int64_t, int32_t*, int64_t);

// D[i * ldd + j] for i < MR, j < oe (<= 16 NV) from the MR rows at rows[0 .. MR) and a block of k-major weights W (64
// words per k), the rows' words along the segments.
template <int MR, int NV>
ZOO_AVX512 void tile(const int32_t* const* rows, const Segment* segs, int64_t nsegs, const uint32_t* W, int64_t oe,
                     int32_t* D, int64_t ldd) {
  __m512i acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_si512();
  for (int64_t s = 0; s < nsegs; ++s) {
    const int32_t* a[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a[i] = rows[i] + segs[s].offset;
    const int64_t len = segs[s].length;
    for (int64_t k = 0; k < len; ++k, W += 64) {
      __m512i w[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_si512(W + 16 * v);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512i av = _mm512_set1_epi32(a[i][k]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          acc[i][v] = _mm512_add_epi32(acc[i][v], _mm512_popcnt_epi32(_mm512_xor_si512(av, w[v])));
      }
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int64_t left = oe - 16 * v;  // > 0
    const __mmask16 mask = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) _mm512_mask_storeu_epi32(D + i * ldd + 16 * v, mask, acc[i][v]);
  }
}

template <int... M>
constexpr std::array<std::array<TileFn, 4>, sizeof...(M)> make_tiles(std::integer_sequence<int, M...>) {
  return {{{tile<M + 1, 1>, tile<M + 1, 2>, tile<M + 1, 3>, tile<M + 1, 4>}...}};
}
constexpr auto kTiles = make_tiles(std::make_integer_sequence<int, kMR>());  // kTiles[rows - 1][vectors - 1]

// The epilogue rows (EpilogueFn in cpu_popcount_ukernels.h), 16 filters per vector, the tail masked.
template <bool kExtra, bool kStream>
ZOO_AVX512 void epilogue_rows(const int32_t* sums, int64_t ldd, int64_t tp, const int64_t* pixel,
                              const int32_t* pattern, const int32_t* lead_rows, const float* alpha, const float* bias,
                              const float* scale, const float* res_rows, bool relu, int64_t O, int64_t oe, float* out) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < tp; ++i) {
    const int64_t p = pixel[i];
    if (p < 0) continue;
    const int32_t* d = sums + i * ldd;
    const int32_t* lead = lead_rows + (pattern[i] + 1) * ldd;
    const __m512 sv = _mm512_set1_ps(scale ? scale[p] : 1.0f);
    const float* res = res_rows ? res_rows + p * O : nullptr;
    float* dst = out + p * O;
    for (int64_t j = 0; j < oe; j += 16) {
      const __mmask16 m = oe - j >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (oe - j)) - 1);
      const __m512i dv = _mm512_maskz_loadu_epi32(m, d + j);
      const __m512i iv = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, lead + j), _mm512_add_epi32(dv, dv));
      __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iv), _mm512_mul_ps(_mm512_maskz_loadu_ps(m, alpha + j), sv),
                                 _mm512_maskz_loadu_ps(m, bias + j));
      if constexpr (kExtra) {
        if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res + j));
        if (relu) v = _mm512_max_ps(zero, v);  // max_ps returns its second operand when one is NaN
      }
      if (kStream && m == 0xffff && (reinterpret_cast<uintptr_t>(dst + j) & 63) == 0)
        _mm512_stream_ps(dst + j, v);
      else
        _mm512_mask_storeu_ps(dst + j, m, v);
    }
  }
}

}  // namespace

EpilogueFn<int32_t> epilogue32_avx512(bool extra, bool stream) {
  return extra ? (stream ? epilogue_rows<true, true> : epilogue_rows<true, false>)
               : (stream ? epilogue_rows<false, true> : epilogue_rows<false, false>);
}

ZOO_AVX512 void popcount_igemm_avx512(const int32_t* const* rows, int64_t nrows, const Segment* segs, int64_t nsegs,
                                      const uint32_t* Wt, int64_t oe, int64_t K32, int32_t* D, int64_t ldd) {
  const std::array<TileFn, 4>* tiles = kTiles.data();
  for (int64_t i = 0; i < nrows; i += kMR) {
    const int64_t m = std::min<int64_t>(kMR, nrows - i);
    for (int64_t jb = 0; jb < oe; jb += 64) {
      const int64_t n = std::min<int64_t>(64, oe - jb);
      tiles[m - 1][(n + 15) / 16 - 1](rows + i, segs, nsegs, Wt + jb * K32, n, D + i * ldd + jb, ldd);
    }
  }
}

#undef ZOO_AVX512
#endif  // ZOO_HAVE_X86_UKERNELS

}  // namespace zoo_xnor_cpu
