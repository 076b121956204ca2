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
// Variants (cpu_popcount_ukernels.h: the table, kPopcountVariants below): the inner loop over the words is a
// micro-kernel of one ISA in a file of its own. The im2col variant (scalar: 64-bit popcnt) runs on tiles of rows of
// A that the driver builds; the indirect variant (avx512: VPOPCNTDQ over 16 filters per vector,
// cpu_popcount_avx512.cpp) reads the rows' words in place from a zero-padded copy of the packed input, through a
// pointer per row and the taps' offsets (an igemm, as in XNNPACK); the nibble-table variants (avx2 pixel and pair
// blocks, cpu_popcount_avx2.cpp) read an expanded image of the packed input instead of rows of A. The driver picks
// the first variant of the table that the CPU runs (resolve_variant), or the one asked for.
//
// Weights: re-laid out once per weight tensor for each variant that runs here (the AVX2 panels, the AVX-512 k-major
// blocks) and cached, with popw[t, o] = popcount(w[o, t, :]) for the padding correction. The cache is keyed by the
// tensor's storage, offset, shape, strides and the fingerprint of its words (cpu_fingerprint.cpp: any change of the
// weights is seen, also a write through .data that no version counter records) and drops entries whose storage was
// freed.
//
// Tiling and memory access: tiles of TP pixels x one panel are distributed over torch's intra-op threads
// (at::parallel_for, consecutive tiles per thread, pixel-major). A tile sweeps the T * L steps in chunks of about
// kChunkBytes of the panel, so that the chunk of the panel, the pixels' bytes and the tile's uint16 sums stay in L1
// while every register block of the tile passes over them. A chunk is a list of runs: each kernel row's taps (one
// contiguous segment of the pixel's bytes when dw == 1, else each tap) cut into equal runs of at most 63 steps, the
// uint8 counts flushed only between whole runs, so that the loops' trip counts repeat and their exits are predicted.
// The threads take tiles from a shared counter. The output is channels_last: a pixel's filters are contiguous, so the
// epilogue writes whole vectors (non-temporal stores when the output is far larger than the caches), and the next
// layer's sign packing reads 32 contiguous channels per word. The im2col variant builds the rows of A as 64-bit
// words per tile; the indirect variant only a pointer per row.

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
#include "cpu_pack_ukernels.h"
#include "cpu_popcount_ukernels.h"

namespace {

using namespace zoo_xnor_cpu;

constexpr int64_t kMinConvWork = 1 << 24;              // binary products per thread, at least
constexpr int64_t kChunkBytes = 16384;                 // panel bytes per chunk of steps (L1 share)
constexpr int64_t kStreamBytes = int64_t(4) << 20;     // outputs larger than this are streamed to memory
constexpr size_t kKeepPaddedBytes = size_t(64) << 20;  // the padded image buffer kept between calls, at most

struct TapRange {
  int64_t ky_lo, ky_hi, kx_lo, kx_hi;  // inclusive; empty when lo > hi
  int64_t count() const { return std::max<int64_t>(0, ky_hi - ky_lo + 1) * std::max<int64_t>(0, kx_hi - kx_lo + 1); }
  bool contains(int64_t ky, int64_t kx) const { return ky >= ky_lo && ky <= ky_hi && kx >= kx_lo && kx <= kx_hi; }
  int64_t key() const { return ((ky_lo * 4096 + ky_hi + 1) * 4096 + kx_lo) * 4096 + kx_hi + 1; }
};

inline void valid_range(int64_t i0, int64_t d, int64_t k, int64_t size, int64_t& lo, int64_t& hi) {
  lo = i0 >= 0 ? 0 : std::min(k, (-i0 + d - 1) / d);                   // first k with i0 + k * d >= 0
  hi = size - 1 - i0 < 0 ? -1 : std::min(k - 1, (size - 1 - i0) / d);  // last k with i0 + k * d < size
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

// The runs of all T * L steps of the nibble variants. A pixel's taps along a kernel row are contiguous in the padded
// image when dw == 1 (as are the panel's steps): such a row of kw * L steps is one segment, else each tap is. Each
// segment is cut into equal runs of at most kNibbleSteps steps (an even length where one divides it), the counts
// flushed after as many whole runs as fit in kNibbleSteps steps; then the runs are cut into chunks of about
// chunk_steps steps at flush points. Regular runs keep the loop trip counts predictable (the counts are never flushed
// in the middle of a run), and long segments flush less often: a 3x3 conv of 128 channels flushes every 48 steps
// instead of every 32 (one tap).
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

// ------------------------------------------------------------------------------------------ weight cache

// A weight tensor, re-laid out for each variant that runs here (WeightLayout: filter rows, the k-major blocks of
// the AVX-512 gemm, the AVX2 nibble panels), and popw[t * O + o] = popcount(w[o, t, :]).
struct Prepared {
  std::vector<Panel> panels;
  std::unique_ptr<uint8_t, decltype(&std::free)> bytes{nullptr, &std::free};
  std::vector<uint64_t> rows;
  std::vector<uint32_t> kmajor;
  std::vector<int32_t> popw;
  size_t size = 0;
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

bool layout_runs(WeightLayout layout) {
  for (const PopcountVariant& v : popcount_variants())
    if (v.layout == layout && v.runs(cpu_features())) return true;
  return false;
}

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
  p->size = p->popw.size() * 4;
  p->panels = make_panels(g.O, steps);  // the tiles' filter blocks, for every variant
  if (layout_runs(WeightLayout::kRows)) {
    p->rows.resize(g.O * g.K64());
    layout_rows(w, g.O, g.K32(), p->rows.data());
    p->size += p->rows.size() * 8;
  }
#ifdef ZOO_HAVE_X86_UKERNELS
  if (layout_runs(WeightLayout::kKMajor)) {
    p->kmajor.resize(size_kmajor(g.O, g.K32()));
    layout_kmajor(w, g.O, g.K32(), p->kmajor.data());
    p->size += p->kmajor.size() * 4;
  }
  if (layout_runs(WeightLayout::kPanels)) {
    const size_t bytes = static_cast<size_t>(steps * ceil_div(g.O, 32) * 32);
    p->bytes.reset(static_cast<uint8_t*>(std::aligned_alloc(64, ceil_div(bytes, 64) * 64)));
    TORCH_CHECK(p->bytes != nullptr, "xnor_conv2d: out of memory for the weight panels");
    build_panels_avx2(w, g.O, g.K32(), p->panels, p->bytes.get());
    p->size += bytes;
  }
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
  return static_cast<int64_t>(
      std::count_if(g_cache.begin(), g_cache.end(), [](const CacheEntry& e) { return !e.storage.expired(); }));
}

// ------------------------------------------------------------------------------------------ convolution

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

bool runs_anywhere(const CpuFeatures&) { return true; }
#ifdef ZOO_HAVE_X86_UKERNELS
bool runs_avx2(const CpuFeatures& f) { return f.avx2; }
bool runs_avx512(const CpuFeatures& f) { return f.avx512(); }
// Pair blocks where few of their places are wasted: an odd output width leaves one empty place per row.
bool suits_pairs(const Geometry& g) { return g.Wo % 2 == 0 || g.Wo >= 5; }
#endif

// The table, in the order auto prefers the variants: avx512 wherever the CPU runs it (1.1-1.6x faster than the AVX2
// pair blocks at every ResNet-18 3x3 shape, batch 1 and 16, 1 and 2 bit planes, and as fast or faster at 1x1 and
// 8-1024 channel shapes, 2 threads on a Sapphire Rapids core pair), else the AVX2 pair blocks where they suit the
// shape, else the AVX2 pixel blocks, else scalar.
const std::vector<PopcountVariant> kPopcountVariants = {
#ifdef ZOO_HAVE_X86_UKERNELS
    {"avx512", "avx512", runs_avx512, "avx512f, avx512bw, avx512vl, avx512vpopcntdq", SumsKind::kIndirect,
     WeightLayout::kKMajor, nullptr, popcount_igemm_avx512, epilogue32_avx512, nullptr, true, nullptr},
    {"avx2_pairs", "avx2", runs_avx2, "avx2", SumsKind::kNibblePairs, WeightLayout::kPanels, nullptr, nullptr,
     epilogue32_avx2, epilogue16_avx2, true, suits_pairs},
    {"avx2", "avx2", runs_avx2, "avx2", SumsKind::kNibbles, WeightLayout::kPanels, nullptr, nullptr, epilogue32_avx2,
     epilogue16_avx2, true, nullptr},
#endif
    {"scalar", "scalar", runs_anywhere, "", SumsKind::kIm2col, WeightLayout::kRows, popcount_gemm_scalar, nullptr,
     epilogue_scalar, nullptr, false, nullptr},
};

std::atomic<const char*> g_forced_isa{nullptr};  // ZOO_KERNELS_ISA (set_auto_isa): the ISA of auto calls

// Why this build and CPU cannot run variant v ("" when they can).
std::string missing(const PopcountVariant& v) {
  if (v.runs(cpu_features())) return "";
  std::string lacks = "the CPU lacks ";
  return lacks + v.needs;
}

const PopcountVariant* find_variant(const std::string& name) {
  for (const PopcountVariant& v : kPopcountVariants)
    if (name == v.name) return &v;
  return nullptr;
}

std::string names(bool running_only, bool isas) {  // comma-separated, in table order
  std::string out;
  for (const PopcountVariant& v : kPopcountVariants) {
    const char* name = isas ? v.isa : v.name;
    if ((running_only && !missing(v).empty()) || (isas && out.find(name) != std::string::npos)) continue;
    out += std::string(out.empty() ? "" : ", ") + name;
  }
  return out;
}

std::vector<std::string> variants() {  // those that run here, in table order
  std::vector<std::string> out;
  for (const PopcountVariant& v : kPopcountVariants)
    if (missing(v).empty()) out.emplace_back(v.name);
  return out;
}

// The whole table: (name, ISA, whether it runs here, why not).
std::vector<std::string> variant_table() {
  std::vector<std::string> out;
  for (const PopcountVariant& v : kPopcountVariants) {
    const std::string why = missing(v);
    out.push_back(std::string(v.name) + "|" + v.isa + "|" + (why.empty() ? "runs" : why));
  }
  return out;
}

void set_auto_isa(const std::string& isa) {
  if (isa.empty() || isa == "auto") {
    g_forced_isa.store(nullptr);
    return;
  }
  for (const PopcountVariant& v : kPopcountVariants)
    if (isa == v.isa) {
      g_forced_isa.store(v.isa);
      return;
    }
  TORCH_CHECK(false, "set_auto_isa: ", isa, " is not one of ", names(false, true), " (or auto)");
}

// The variant a call runs: an explicit one, checked against the build and the CPU; for auto the first of the table
// that runs here and suits the shape, within the ISA that ZOO_KERNELS_ISA forces if it does.
const PopcountVariant& resolve_variant(const std::string& name, const Geometry& g) {
  if (name != "auto") {
    const PopcountVariant* v = find_variant(name);
    TORCH_CHECK(v != nullptr, "xnor_conv2d: variant must be auto or one of ", names(false, false), ", got ", name);
    TORCH_CHECK(missing(*v).empty(), "xnor_conv2d: variant ", name, ": ", missing(*v));
    return *v;
  }
  const char* forced = g_forced_isa.load(std::memory_order_relaxed);
  for (const PopcountVariant& v : kPopcountVariants) {
    if (forced != nullptr && std::string(forced) != v.isa) continue;
    if (forced != nullptr)
      TORCH_CHECK(missing(v).empty(), "xnor_conv2d: ZOO_KERNELS_ISA=", forced, ", but ", missing(v),
                  "; choices here: ", names(true, true));
    if (missing(v).empty() && (v.suits == nullptr || v.suits(g))) return v;
  }
  TORCH_CHECK(false, "xnor_conv2d: no variant runs here");  // scalar always does
}

// ------------------------------------------------------------------------------------------ convolution driver

// The convolution; its epilogue optionally adds residual (N, O, Ho, Wo) and applies a ReLU (a ResNet block's end).
//
// Bit planes: x_packed (bits, N, H, W, Cw) holds the sign planes s_b of a k-bit input (see kbit.py), and the conv
// computes int = sum_b 2^b int_b, int_b the XNOR conv of plane b: with int_b = lead - 2 D_b (lead = |V| C + 2 corr,
// the same for every plane), int = n lead - 2 sum_b 2^b D_b, n = 2^bits - 1. Each tile sums D over the planes by
// Horner's rule (from the highest plane: double the sums, add the next plane's D), so the epilogue runs once, on
// n lead - 2 D. The caller divides alpha by n. A 4D x_packed is one plane.
//
// Signs out (signs != nullptr): where the output v feeds only the next binary conv's
// BatchNorm and sign (a ResNet block's conv1 -> bn -> sign -> conv2), each tile's epilogue writes its v into a
// buffer of the worker instead of the output, and the packing's row kernel (the one pack_signs runs on a
// channels_last input, cpu_pack_ukernels.h) turns those rows into the next conv's packed signs of
// y = fma(v, scale[o], shift[o]) and mean_o |y|: bit for bit what pack_signs gives on the float output, without
// writing it (a float32 activation's write and read back, the largest memory traffic of the early layers).
struct SignsOut {
  const float* scale;  // (O,) the next conv's BatchNorm as y = v * scale + shift
  const float* shift;
  bool absmean;       // whether to compute mean_o |y| (the next conv's K)
  at::Tensor packed;  // out: (N, Ho, Wo, ceil(O / 32)) int32
  at::Tensor mean;    // out: (N, 1, Ho, Wo) float32, when absmean
};

at::Tensor conv(const at::Tensor& x_packed, const at::Tensor& w_packed, const at::Tensor& alpha,
                const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& bias, int64_t channels,
                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                const std::string& variant_name, const std::optional<at::Tensor>& residual, bool relu,
                SignsOut* signs = nullptr) {
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
  TORCH_CHECK(w_packed.size(3) == g.Cw && g.C > 0 && ceil_div(g.C, kWordBits) == g.Cw, "xnor_conv2d: channels ", g.C,
              " do not match ", g.Cw, " activation and ", w_packed.size(3), " weight words");
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
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({g.N, g.O, g.Ho, g.Wo}) && residual->scalar_type() == at::kFloat &&
                    residual->device().is_cpu(),
                "xnor_conv2d: residual must be a float32 CPU tensor of the output's shape");
  const PopcountVariant& variant = resolve_variant(variant_name, g);
  TORCH_CHECK(signs == nullptr || (!residual.has_value() && !relu),
              "xnor_conv2d: signs out takes no residual and no ReLU");

  at::Tensor out = at::empty({signs ? 0 : g.N, g.O, g.Ho, g.Wo}, x_packed.options().dtype(at::kFloat),
                             at::MemoryFormat::ChannelsLast);  // (N, Ho, Wo, O) in memory
  int32_t* signs_ptr = nullptr;
  float* mean_ptr = nullptr;
  PackSignsRowsFn pack_rows = nullptr;
  const int64_t Ow = ceil_div(g.O, kWordBits);
  if (signs) {
    signs->packed = at::empty({g.N, g.Ho, g.Wo, Ow}, x_packed.options().dtype(at::kInt));
    signs->mean = at::empty({signs->absmean ? g.N : 0, 1, g.Ho, g.Wo}, x_packed.options().dtype(at::kFloat));
    signs_ptr = signs->packed.data_ptr<int32_t>();
    mean_ptr = signs->absmean ? signs->mean.data_ptr<float>() : nullptr;
    pack_rows = zoo_xnor_cpu::pack_signs_rows_auto();
    out = signs->packed;  // returned; the float output is never made
  }
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
  float* out_ptr = signs ? nullptr : out.data_ptr<float>();

  const bool im2col = variant.kind == SumsKind::kIm2col, indirect = variant.kind == SumsKind::kIndirect;
  const bool nibbles = !im2col && !indirect, use_pairs = variant.kind == SumsKind::kNibblePairs;
  const int64_t T = g.T(), K64 = g.K64(), C = g.C;
  const std::shared_ptr<const Prepared> prepared = prepared_weights(w_packed, wp, g);
  const std::vector<Panel>& panels = prepared->panels;
  const int32_t* popw = prepared->popw.data();
  const uint64_t* Wim = prepared->rows.data();   // the im2col variants' weights, filter o0's at o0 * K64
  const uint32_t* Wk = prepared->kmajor.data();  // the indirect variants', filter o0's at o0 * K32

  // The rows of the tiles: output pixels in order, or with pairs, places (n, y, x) for x < 2 * ceil(Wo / 2), a
  // place past Wo computed but not written. TP rows per tile, a multiple of every register block's rows (4): the
  // tile's uint16 sums (TP x 32 nv x 2 bytes, 16 KB at most), a chunk of the panel (about kChunkBytes) and the pixels'
  // bytes of that chunk stay in L1 and L2. (Tiles of half the size were 3-8% slower at batch 16.) Balanced so that
  // the last tile is not mostly empty.
  const int64_t Wq = use_pairs ? 2 * ceil_div(g.Wo, 2) : g.Wo;  // places per output row
  const int64_t R = g.N * g.Ho * Wq;
  const int64_t nv0 = panels.front().nv;
  const int64_t n_panels = static_cast<int64_t>(panels.size());
  // Signs out over several panels: a worker takes a whole pixel block (all its panels, see below), so that blocks,
  // not tiles, are shared out; at least two per thread where there are rows enough.
  const int64_t rows_cap = signs && n_panels > 1 ? std::max<int64_t>(4, ceil_div(R, 2 * at::get_num_threads())) : 128;
  const int64_t TP = ceil_div(ceil_div(R, ceil_div(R, std::min<int64_t>({128, 256 / nv0, rows_cap}))), 4) * 4;
  const int64_t n_pblocks = ceil_div(R, TP);                      // after rounding TP up: no tile is empty
  const int64_t L = 8 * g.Cw, steps = T * L;                      // nibble steps per tap and in all (nibble variants)
  const bool wide = !nibbles || steps * n_levels > kMaxSumSteps;  // int32 sums (else D fits the uint16 sums)
  const int64_t plane_words = g.N * g.H * g.W * g.Cw;

  // Nibble variants: the padded image of nibble offsets (read by all threads), or with pairs only the pair offsets
  // (built row by row through a row of it), and the chunks of the steps as runs.
  const int64_t Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw;
  thread_local std::vector<uint8_t> padded;  // reused across calls: no page faults for a fresh buffer each time
  thread_local std::vector<uint16_t> pair_offsets;
  std::vector<Chunk> chunks;
#ifdef ZOO_HAVE_X86_UKERNELS
  if (nibbles) {
    if (use_pairs) {
      pair_offsets.resize(static_cast<size_t>(bits * g.N * Hp * Wp * L));
      for (int64_t b = 0; b < bits; ++b)
        build_pair_offsets_avx2(g, x_ptr + b * plane_words, pair_offsets.data() + b * g.N * Hp * Wp * L);
    } else {
      padded.resize(static_cast<size_t>(bits * g.N * Hp * Wp * L));
      for (int64_t b = 0; b < bits; ++b)
        build_padded_nibbles_avx2(g, x_ptr + b * plane_words, padded.data() + b * g.N * Hp * Wp * L);
    }
    chunks = make_chunks(g, Wp, kChunkBytes / (32 * nv0));
  }
#endif
  // Indirect variants: the padded image of packed words (zero words on the padding), per plane, built by all
  // threads a padded row at a time; and the segments of a row's words (each kernel row's taps, one stretch when
  // dw == 1, else each tap).
  thread_local std::vector<int32_t> padded_words;
  std::vector<Segment> segs;
  const int64_t K32 = g.K32(), padded_plane = g.N * Hp * Wp * g.Cw;
  if (indirect) {
    padded_words.resize(static_cast<size_t>(bits * padded_plane));
    int32_t* XP = padded_words.data();
    const int64_t rows = bits * g.N * Hp, Cw = g.Cw, row_words = Wp * Cw;
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_words)),
                     [&](int64_t r0, int64_t r1) {
                       for (int64_t r = r0; r < r1; ++r) {
                         const int64_t b = r / (g.N * Hp), n = (r / Hp) % g.N, iy = r % Hp - g.ph;
                         int32_t* dst = XP + r * row_words;
                         if (iy < 0 || iy >= g.H) {
                           std::memset(dst, 0, row_words * sizeof(int32_t));
                           continue;
                         }
                         std::memset(dst, 0, g.pw * Cw * sizeof(int32_t));
                         std::memcpy(dst + g.pw * Cw, x_ptr + b * plane_words + (n * g.H + iy) * g.W * Cw,
                                     g.W * Cw * sizeof(int32_t));
                         std::memset(dst + (g.pw + g.W) * Cw, 0, g.pw * Cw * sizeof(int32_t));
                       }
                     });
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < (g.dw == 1 ? 1 : g.kw); ++kx)
        segs.push_back({(ky * g.dh * Wp + kx * g.dw) * Cw, (g.dw == 1 ? g.kw : 1) * Cw});
  }
  const uint8_t* E = padded.data();  // not the names inside the workers: each thread has its own thread_locals
  const uint16_t* PE = pair_offsets.data();
  const int32_t* XP = padded_words.data();

  // Outputs far larger than L2 are written with non-temporal stores: no read of each line before it is written.
  const bool stream = !signs && variant.streams && g.O % 8 == 0 && P * g.O * 4 > kStreamBytes;
  const bool extra = res_ptr != nullptr || relu;
  const EpilogueFn<uint16_t> ep16 = variant.epilogue16 ? variant.epilogue16(extra, stream) : nullptr;
  const EpilogueFn<int32_t> ep32 = variant.epilogue32(extra, stream);
  const std::vector<float> zeros(bias_ptr ? 0 : g.O, 0.0f);  // the bias when there is none

  // Workers: at most one per ~2^24 binary products (~0.05 ms; splitting less work costs more in wake-ups than it
  // saves). They take the tiles (pixel-major: a pixel block's panels in a row) one at a time from a shared counter
  // rather than in fixed shares: this VM's cores run at different speeds from moment to moment, and with fixed
  // shares the faster one waited for the slower (OpenMP spin-waits were 15-20% of the samples of a profile at batch
  // 16). A worker rebuilds its pixel block's pointers and border patterns when the block changes.
  // With signs out, a worker takes a pixel block's panels as one item (its rows v fill up panel by panel, then pack).
  const int64_t n_tiles = n_pblocks * n_panels, group = signs ? n_panels : 1, n_items = n_tiles / group;
  const int64_t tiles_per_worker = std::max<int64_t>(1, kMinConvWork / (TP * 32 * nv0 * g.K32() * kWordBits));
  const int64_t workers = std::min<int64_t>({at::get_num_threads(), ceil_div(n_tiles, tiles_per_worker), n_items});
  std::atomic<int64_t> next_item{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    std::vector<uint64_t> A(im2col ? bits * TP * K64 : 0);       // per plane
    std::vector<const int32_t*> rows(indirect ? bits * TP : 0);  // per plane: the rows' tap (0, 0), indirect variants
    std::vector<uint16_t> sums16(nibbles ? TP * kPanel : 0);
    std::vector<int32_t> sums32(wide ? TP * kPanel : 0), plane_sums(!nibbles && bits > 1 ? TP * kPanel : 0);
    std::vector<const uint8_t*> px(bits * TP);  // per plane
    std::vector<const uint16_t*> pq(bits * (TP / 2));
    std::vector<int64_t> pixel(TP), at(TP);  // see map_rows
    std::vector<int32_t> pattern(TP), lead;
    std::vector<float> vrows(signs ? TP * g.O : 0);  // signs out: the tile's outputs v, a row per pixel
    std::vector<int64_t> vpixel(signs ? TP : 0);     // and their rows (pixel - the tile's first pixel, or -1)
    std::vector<TapRange> ranges;
    int64_t built = -1;
    int64_t item = next_item.fetch_add(1, std::memory_order_relaxed);
    for (int64_t tile = item * group; item < n_items;
         tile = (tile + 1) % group ? tile + 1 : (item = next_item.fetch_add(1, std::memory_order_relaxed)) * group) {
      const int64_t pb = tile / n_panels;
      const Panel& pn = panels[tile % n_panels];
      const int64_t r0 = pb * TP, tp = std::min(TP, R - r0), oe = std::min(32 * pn.nv, g.O - pn.o0);
      const int64_t ldd = 32 * pn.nv;  // row stride of the tile's sums
      if (pb != built) {
        for (int64_t b = 0; im2col && b < bits; ++b) {
          EmitWords emit{reinterpret_cast<uint32_t*>(A.data() + b * TP * K64), 2 * K64};
          walk_im2col(g, x_ptr + b * plane_words, r0, TP, emit);
        }
        // Valid taps per pixel: a range ky_lo..ky_hi x kx_lo..kx_hi; border pixels share few ranges ("patterns").
        map_rows(g, Wq, R, r0, TP, use_pairs, Wp, at.data(), pixel.data(), pattern.data(), ranges);
        for (int64_t b = 0; indirect && b < bits; ++b)
          for (int64_t i = 0; i < TP; ++i) rows[b * TP + i] = XP + b * padded_plane + at[i] * g.Cw;
        for (int64_t b = 0; nibbles && b < bits; ++b) {  // with pairs, the pair offsets only (E is not built)
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
      if (nibbles) {
#ifdef ZOO_HAVE_X86_UKERNELS
        const NibbleTile nt{use_pairs,     wide,         bits,      TP,        tp,
                            pn.nv,         &chunks,      px.data(), pq.data(), prepared->bytes.get() + pn.offset,
                            sums16.data(), sums32.data()};
        nibble_tile_avx2(nt);
#endif
      } else {
        for (int64_t b = bits - 1; b >= 0; --b) {  // bit planes by Horner's rule, as above
          int32_t* D = b == bits - 1 ? sums32.data() : plane_sums.data();
          if (indirect)
            variant.igemm(rows.data() + b * TP, tp, segs.data(), static_cast<int64_t>(segs.size()), Wk + pn.o0 * K32,
                          oe, K32, D, ldd);
          else
            variant.gemm(A.data() + b * TP * K64, tp, Wim + pn.o0 * K64, oe, K64, D, ldd);
          if (b != bits - 1)
            for (int64_t i = 0; i < tp; ++i)
              for (int64_t j = 0; j < oe; ++j) sums32[i * ldd + j] = 2 * sums32[i * ldd + j] + D[i * ldd + j];
        }
      }
      // Fused epilogue: out = alpha * K * (|V| * C - 2 * (D - corr)) + bias (+ residual, ReLU), one pixel's
      // contiguous run of filters at a time.
      const float* b = (bias_ptr ? bias_ptr : zeros.data()) + pn.o0;
      const float* r = res_ptr ? res_ptr + pn.o0 : nullptr;
      if (signs) {  // the pixel block's panels in turn fill its rows v; the tile's pixels are p_lo .. p_hi, each once
        int64_t p_lo = P, p_hi = -1;
        for (int64_t i = 0; i < tp; ++i)
          if (pixel[i] >= 0) p_lo = std::min(p_lo, pixel[i]), p_hi = std::max(p_hi, pixel[i]);
        if (p_hi < 0) continue;
        for (int64_t i = 0; i < tp; ++i) vpixel[i] = pixel[i] >= 0 ? pixel[i] - p_lo : -1;
        const float* sc = scale_ptr ? scale_ptr + p_lo : nullptr;
        if (wide)
          ep32(sums32.data(), ldd, tp, vpixel.data(), pattern.data(), lead.data(), alpha_ptr + pn.o0, b, sc, nullptr,
               false, g.O, oe, vrows.data() + pn.o0);
        else
          ep16(sums16.data(), ldd, tp, vpixel.data(), pattern.data(), lead.data(), alpha_ptr + pn.o0, b, sc, nullptr,
               false, g.O, oe, vrows.data() + pn.o0);
        if (tile % n_panels == n_panels - 1)  // the block's last panel: every filter of its pixels is in v
          pack_rows(vrows.data(), p_hi - p_lo + 1, g.O, signs->scale, signs->shift, signs_ptr + p_lo * Ow,
                    mean_ptr ? mean_ptr + p_lo : nullptr);
        continue;
      }
      if (wide)
        ep32(sums32.data(), ldd, tp, pixel.data(), pattern.data(), lead.data(), alpha_ptr + pn.o0, b, scale_ptr, r,
             relu, g.O, oe, out_ptr + pn.o0);
      else
        ep16(sums16.data(), ldd, tp, pixel.data(), pattern.data(), lead.data(), alpha_ptr + pn.o0, b, scale_ptr, r,
             relu, g.O, oe, out_ptr + pn.o0);
    }
#ifdef ZOO_HAVE_X86_UKERNELS
    if (stream) stream_fence();  // the streamed stores are visible before the threads join
#endif
  });
  if (padded.capacity() > kKeepPaddedBytes) std::vector<uint8_t>().swap(padded);  // keep only moderate buffers
  if (pair_offsets.capacity() * 2 > kKeepPaddedBytes) std::vector<uint16_t>().swap(pair_offsets);
  if (padded_words.capacity() * 4 > kKeepPaddedBytes) std::vector<int32_t>().swap(padded_words);
  return out;
}

at::Tensor xnor_conv2d_cpu(const at::Tensor& x_packed, const at::Tensor& w_packed, const at::Tensor& alpha,
                           const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& bias,
                           int64_t channels, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           const std::string& variant) {
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
                                 bool relu, const std::string& variant) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == channels, "xnor_conv2d: x must be (N, ", channels, ", H, W)");
  TORCH_CHECK(kernel_size.size() == 2 && w_packed.dim() == 4 && w_packed.size(1) == kernel_size[0] &&
                  w_packed.size(2) == kernel_size[1],
              "xnor_conv2d: w_packed does not match the kernel size");
  zoo_xnor_cpu::check_conv_geometry("xnor_conv2d", 1, x.size(0), x.size(2), x.size(3), ceil_div(channels, kWordBits),
                                    w_packed.size(0), kernel_size[0], kernel_size[1], stride, padding, dilation);
  const auto [packed, absmean] = zoo_xnor_cpu::pack_signs(x, input_scale, norm_scale, norm_shift);
  std::optional<at::Tensor> scale;
  if (input_scale) scale = zoo_xnor_cpu::input_scale(absmean, kernel_size, stride, padding, dilation);
  return conv(packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation, variant, residual, relu);
}

// The k-bit-input conv in one call: the input's sign planes (pack_kbit_planes, with the optional fused affine), K
// when input_scale (from mean_c |.| of the same affine), then one conv over the planes (Horner sums, see conv) with
// alpha / (2^bits - 1), and the residual and ReLU epilogue.
at::Tensor kbit_conv2d_float_cpu(const at::Tensor& x, const at::Tensor& w_packed, const at::Tensor& alpha,
                                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& norm_scale,
                                 const std::optional<at::Tensor>& norm_shift, int64_t channels,
                                 at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t bits, bool input_scale,
                                 const std::optional<at::Tensor>& residual, bool relu, const std::string& variant) {
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
  return conv(planes, w_packed, alpha_n, scale, bias, channels, stride, padding, dilation, variant, residual, relu);
}

// The first conv of a pair in one call: conv1 of x (as xnor_conv2d_float) whose outputs go straight into the next
// conv's packed signs of fma(v, next_scale, next_shift) and their mean |.| (see SignsOut): (packed, absmean).
std::tuple<at::Tensor, at::Tensor> xnor_conv2d_float_signs_cpu(
    const at::Tensor& x, const at::Tensor& w_packed, const at::Tensor& alpha, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& norm_scale, const std::optional<at::Tensor>& norm_shift, int64_t channels,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    bool input_scale, const at::Tensor& next_scale, const at::Tensor& next_shift, bool next_absmean,
    const std::string& variant) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == channels, "xnor_conv2d_signs: x must be (N, ", channels, ", H, W)");
  TORCH_CHECK(kernel_size.size() == 2 && w_packed.dim() == 4 && w_packed.size(1) == kernel_size[0] &&
                  w_packed.size(2) == kernel_size[1],
              "xnor_conv2d_signs: w_packed does not match the kernel size");
  const int64_t O = w_packed.size(0);
  for (const at::Tensor* t : {&next_scale, &next_shift})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->numel() == O && t->is_contiguous() && t->device().is_cpu(),
                "xnor_conv2d_signs: next_scale and next_shift must be contiguous float32 CPU tensors of ", O,
                " elements");
  zoo_xnor_cpu::check_conv_geometry("xnor_conv2d_signs", 1, x.size(0), x.size(2), x.size(3),
                                    ceil_div(channels, kWordBits), O, kernel_size[0], kernel_size[1], stride, padding,
                                    dilation);
  const auto [packed, absmean] = zoo_xnor_cpu::pack_signs(x, input_scale, norm_scale, norm_shift);
  std::optional<at::Tensor> scale;
  if (input_scale) scale = zoo_xnor_cpu::input_scale(absmean, kernel_size, stride, padding, dilation);
  SignsOut signs{next_scale.data_ptr<float>(), next_shift.data_ptr<float>(), next_absmean, {}, {}};
  conv(packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation, variant, std::nullopt, false, &signs);
  return {signs.packed, signs.mean};
}

// The second conv of a pair: the conv of packed signs (with K from their mean |.| when given) and the residual and
// ReLU epilogue.
at::Tensor xnor_conv2d_signs_cpu(const at::Tensor& x_packed, const std::optional<at::Tensor>& absmean,
                                 const at::Tensor& w_packed, const at::Tensor& alpha,
                                 const std::optional<at::Tensor>& bias, int64_t channels, at::IntArrayRef kernel_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 const std::optional<at::Tensor>& residual, bool relu, const std::string& variant) {
  TORCH_CHECK(kernel_size.size() == 2 && w_packed.dim() == 4 && w_packed.size(1) == kernel_size[0] &&
                  w_packed.size(2) == kernel_size[1],
              "xnor_conv2d_signs: w_packed does not match the kernel size");
  std::optional<at::Tensor> scale;
  if (absmean.has_value()) scale = zoo_xnor_cpu::input_scale(*absmean, kernel_size, stride, padding, dilation);
  return conv(x_packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation, variant, residual, relu);
}

std::string kernel_info() {
  std::string info = "xnor_conv2d: variants";
  for (const std::string& v : variants()) info += " " + v;
  const char* forced = g_forced_isa.load();
  info += std::string(", auto: ") + (forced ? std::string("ZOO_KERNELS_ISA=") + forced : "by shape");
  const CpuFeatures& f = cpu_features();
  const std::pair<const char*, bool> features[] = {{"avx2", f.avx2},
                                                   {"avx512bw", f.avx512bw},
                                                   {"avx512vpopcntdq", f.avx512vpopcntdq},
                                                   {"avx512_vnni", f.avx512_vnni},
                                                   {"amx_int8", f.amx_int8},
                                                   {"amx_bf16", f.amx_bf16}};
  info += "; cpu";
  for (const auto& [name, has] : features) info += std::string(" ") + (has ? "+" : "-") + name;
  return info + "; threads " + std::to_string(at::get_num_threads());
}

}  // namespace

const std::vector<zoo_xnor_cpu::PopcountVariant>& zoo_xnor_cpu::popcount_variants() { return kPopcountVariants; }

// The packing's number of the ISA that ZOO_KERNELS_ISA forces (cpu_pack_ukernels.h), 0 for none.
int64_t zoo_xnor_cpu::forced_isa() {
  const char* forced = g_forced_isa.load(std::memory_order_relaxed);
  if (forced == nullptr) return 0;
  for (const PackVariant& v : kPackVariants)
    if (std::string(forced) == v.name) return v.isa;
  return 0;
}

const zoo_xnor_cpu::CpuFeatures& zoo_xnor_cpu::cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f{};
#if defined(__x86_64__)
    __builtin_cpu_init();  // (also checks that the OS saves the AVX-512 state)
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
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
      "int[2] stride, int[2] padding, int[2] dilation, str variant) -> Tensor");
  m.def(
      "xnor_conv2d_float(Tensor x, Tensor w_packed, Tensor alpha, Tensor? bias, Tensor? norm_scale, "
      "Tensor? norm_shift, int channels, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool input_scale, Tensor? residual, bool relu, str variant) -> Tensor");
  m.def(
      "kbit_conv2d_float(Tensor x, Tensor w_packed, Tensor alpha, Tensor? bias, Tensor? norm_scale, "
      "Tensor? norm_shift, int channels, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "int bits, bool input_scale, Tensor? residual, bool relu, str variant) -> Tensor");
  m.def(
      "xnor_conv2d_float_signs(Tensor x, Tensor w_packed, Tensor alpha, Tensor? bias, Tensor? norm_scale, "
      "Tensor? norm_shift, int channels, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool input_scale, Tensor next_scale, Tensor next_shift, bool next_absmean, str variant) -> (Tensor, Tensor)");
  m.def(
      "xnor_conv2d_signs(Tensor x_packed, Tensor? absmean, Tensor w_packed, Tensor alpha, Tensor? bias, "
      "int channels, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, Tensor? residual, "
      "bool relu, str variant) -> Tensor");
  m.def("kernel_info() -> str", &kernel_info);
  m.def("cached_weights() -> int", &cached_weights);
  m.def("variants() -> str[]", &variants);
  m.def("variant_table() -> str[]", &variant_table);
  m.def("set_auto_isa(str isa) -> ()", &set_auto_isa);
}

TORCH_LIBRARY_IMPL(zoo_xnor_cpu, CPU, m) {
  m.impl("xnor_conv2d", &xnor_conv2d_cpu);
  m.impl("xnor_conv2d_float", &xnor_conv2d_float_cpu);
  m.impl("kbit_conv2d_float", &kbit_conv2d_float_cpu);
  m.impl("xnor_conv2d_float_signs", &xnor_conv2d_float_signs_cpu);
  m.impl("xnor_conv2d_signs", &xnor_conv2d_signs_cpu);
}
