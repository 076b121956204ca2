// The popcount conv's micro-kernels and their table (the XNNPACK layout): plain C++ on raw pointers, one translation
// unit per ISA (cpu_popcount_scalar.cpp, cpu_popcount_avx2.cpp, cpu_popcount_avx512.cpp), each compiled for its ISA
// by function attributes, never by global flags, so that the extension loads on every CPU of its architecture; the
// driver (cpu_popcount.cpp: tiling, threads, padding correction, weight cache) calls them through kPopcountVariants
// only where cpu_features() has the ISA.
//
// Adding a variant: one file with its functions (under a target attribute), their declarations here, one line in
// kPopcountVariants (cpu_popcount.cpp). The tests and `zoo bench` enumerate the table (zoo_kernels.cpu.variant_table).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_ukernels.h"

namespace zoo_xnor_cpu {

constexpr int64_t kWordBits = 32;
constexpr int64_t kNibbleSteps = 63;     // 63 * 4 < 256: uint8 counts
constexpr int64_t kMaxSumSteps = 16383;  // 16383 * 4 < 65536: uint16 sums, then added to int32
constexpr int64_t kPanel = 128;          // filters per weight panel

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Geometry {
  int64_t N, H, W, C, Cw, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo;
  int64_t T() const { return kh * kw; }
  int64_t K32() const { return kh * kw * Cw; }
  int64_t K64() const { return ceil_div(kh * kw * Cw, 2); }
};

// Filters o0 .. o0 + 32 * nv - 1 (those >= O are padding) of the nibble variants' weights; its bytes start at offset
// in the panel buffer.
struct Panel {
  int64_t o0, nv;
  size_t offset;
};

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

// ---------------------------------------------------------------------------------------------- the contracts

// im2col variants: D[i * ldd + j] = sum_k popcount(A[i * K64 + k] ^ B(o0 + j, k)) for rows i < rows of A (output
// pixels, K64 words each) and filters j < oe, B the variant's weight layout starting at filter o0 (o0 a multiple of
// 32; the layout's words of filter block o0 / 32 at o0 * K64).
using GemmFn = void (*)(const uint64_t* A, int64_t rows, const uint64_t* B, int64_t oe, int64_t K64, int32_t* D,
                        int64_t ldd);

// The fused epilogue of a tile's rows i < tp (sums D: ldd per row) that are output pixels (pixel[i] >= 0; lead row
// pattern[i] + 1), for the filters o0 .. o0 + oe - 1 of one panel (alpha, bias, res and out start at o0):
//     out[p * O + j] = fma(float(lead[j] - 2 * D[j]), alpha[j] * scale[p], bias[j]) (+ res[p * O + j], ReLU)
// where lead = |V| * C + 2 * corr holds the pixel's valid taps and padding correction (int = |V| C - 2 (D - corr),
// exact in int32). extra: a residual or a ReLU may follow (a NaN stays NaN under the ReLU, as in torch.relu); stream:
// non-temporal stores, for an output much larger than the caches (O a multiple of 8). Every variant computes the
// same float operations in the same order: the outputs are bit-identical across variants.
template <class D>
using EpilogueFn = void (*)(const D* sums, int64_t ldd, int64_t tp, const int64_t* pixel, const int32_t* pattern,
                            const int32_t* lead, const float* alpha, const float* bias, const float* scale,
                            const float* res, bool relu, int64_t O, int64_t oe, float* out);

// A stretch of a row's words in the padded image of packed words: offset words from the row's tap (0, 0), length of
// them (consecutive words of the rows' K32 words and of the weights').
struct Segment {
  int64_t offset, length;
};

// Indirect variants (as XNNPACK's igemm): D[i * ldd + j] = sum_k popcount(a_i[k] ^ B(o0 + j, k)) for rows i < nrows
// and filters j < oe, where a_i's K32 words are read in place along the segments from rows[i] (row i's tap (0, 0) in
// the padded image of packed words: taps on the padding read zero words, as the padding correction assumes) and B
// is the variant's weight layout starting at filter o0 (o0 a multiple of 64, its words at o0 * K32).
using IGemmFn = void (*)(const int32_t* const* rows, int64_t nrows, const Segment* segs, int64_t nsegs,
                         const uint32_t* B, int64_t oe, int64_t K32, int32_t* D, int64_t ldd);

// Nibble-table variants (AVX2): the sums of one tile of TP rows (tp of them real) and one panel of nv vectors of 32
// filters, over the bit planes by Horner's rule, from the expanded activations (px: per plane, TP pointers to the
// rows' tap (0, 0) in the padded image of nibble offsets; pq: per plane, TP / 2 pointers into the pair offsets) and
// the panel's bytes B (at its first step). wide: int32 sums (sums32), else uint16 (sums16); both TP * 32 nv.
struct NibbleTile {
  bool pairs, wide;
  int64_t bits, TP, tp, nv;
  const std::vector<Chunk>* chunks;
  const uint8_t* const* px;
  const uint16_t* const* pq;
  const uint8_t* B;
  uint16_t* sums16;
  int32_t* sums32;
};

// ---------------------------------------------------------------------------------------------- the variants

// Scalar (cpu_popcount_scalar.cpp): 64-bit popcounts; weights as filter rows of K64 words (the odd last word paired
// with a zero word, as in the rows of A).
void popcount_gemm_scalar(const uint64_t* A, int64_t rows, const uint64_t* B, int64_t oe, int64_t K64, int32_t* D,
                          int64_t ldd);
void layout_rows(const int32_t* w, int64_t O, int64_t K32, uint64_t* B);  // O * K64 words
EpilogueFn<int32_t> epilogue_scalar(bool extra, bool stream);

#if defined(__x86_64__)
#define ZOO_HAVE_X86_UKERNELS 1

// AVX2 (cpu_popcount_avx2.cpp): nibble tables and vpshufb, see there. The padded image of nibble offsets (pixel
// blocks) or of pair offsets (pair blocks) of one bit plane, the weight panels (16 * K64 steps per filter), the
// tile sums and the epilogues (8 filters per vector).
void build_padded_nibbles_avx2(const Geometry& g, const int32_t* x_packed, uint8_t* E);
void build_pair_offsets_avx2(const Geometry& g, const int32_t* x_packed, uint16_t* PE);
void build_panels_avx2(const int32_t* w, int64_t O, int64_t U, const std::vector<Panel>& panels, uint8_t* Bn);
void nibble_tile_avx2(const NibbleTile& tile);
EpilogueFn<int32_t> epilogue32_avx2(bool extra, bool stream);
EpilogueFn<uint16_t> epilogue16_avx2(bool extra, bool stream);
void stream_fence();  // the non-temporal stores of this thread visible before the threads join

// AVX-512 VPOPCNTDQ (cpu_popcount_avx512.cpp). The filters w[o] (O rows of K32 int32 words) re-laid out k-major in
// blocks of 64 filters: Wt[64 b K32 + 64 k + c] = w[64 b + c, k], zero past O; size_kmajor(O, K32) words. The
// indirect gemm (an IGemmFn on that layout) runs 16 filters per vector, as the epilogue does.
int64_t size_kmajor(int64_t O, int64_t K32);
void layout_kmajor(const int32_t* w, int64_t O, int64_t K32, uint32_t* Wt);
void popcount_igemm_avx512(const int32_t* const* rows, int64_t nrows, const Segment* segs, int64_t nsegs,
                           const uint32_t* Wt, int64_t oe, int64_t K32, int32_t* D, int64_t ldd);
EpilogueFn<int32_t> epilogue32_avx512(bool extra, bool stream);
#endif

// How a variant computes the sums: from im2col rows of A with a GemmFn, in place from the padded image with an
// IGemmFn, or from nibble offsets (AVX2 pixel or pair blocks).
enum class SumsKind { kIm2col, kIndirect, kNibbles, kNibblePairs };

// Which weight layout a variant's gemm reads (rows: im2col; k-major: indirect; panels: nibble variants).
enum class WeightLayout { kRows, kKMajor, kPanels };

// One line of the table: a variant of the popcount conv.
struct PopcountVariant {
  const char* name;  // as the op's `variant` argument, kernel_info, zoo bench and the tests name it
  const char* isa;   // the ISA family ZOO_KERNELS_ISA names (avx2: pixel or pair blocks, by shape)
  bool (*runs)(const CpuFeatures&);
  const char* needs;  // the CPU features runs() checks, for the error where they are missing
  SumsKind kind;
  WeightLayout layout;
  GemmFn gemm;                                     // im2col variants
  IGemmFn igemm;                                   // indirect variants
  EpilogueFn<int32_t> (*epilogue32)(bool, bool);   // every variant (int32 sums)
  EpilogueFn<uint16_t> (*epilogue16)(bool, bool);  // nibble variants (uint16 sums), else null
  bool streams;                                    // whether epilogue32/16(_, true) streams
  bool (*suits)(const Geometry&);                  // under auto: whether it is its ISA's pick for g (null: always)
};

// The variants compiled into this build, in the order auto prefers them (the first that runs and suits the shape).
const std::vector<PopcountVariant>& popcount_variants();

}  // namespace zoo_xnor_cpu
