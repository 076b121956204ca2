// A content fingerprint of tensors: what the weight caches key on besides storage and shape (built into the
// zoo_kernels extension by cpu.py; called by cpu_popcount.cpp's panel cache and, through the op, by the int8 route's
// cache and zoo/packing.py's caches).
//
// A version counter misses writes through ``.data`` (``w.data.copy_(v)`` bumps the counter of a fresh alias, not
// w's), so the caches also compare the bytes' fingerprint: the bytes as 64-bit words w_i, in 8 interleaved lanes,
// each lane l summed Fletcher-style, a_l = sum w_i, b_l = sum a_l after each word (= sum w_i * (m - j_i), j_i the
// word's position in its lane of m words), mod 2^64; the 16 sums and the byte count are then mixed into one 64-bit
// value. One pass over the bytes, adds only (the weights are 1 bit per value: xnor_resnet18's 19 binary convs hold
// 1.4 MB, its largest 295 KB).
//
// Any change of one word changes a_l, so it is always seen; two words swapped within a lane change b_l by
// (w_j - w_k) (k - j) mod 2^64, 0 only when the trailing zero bits of both factors add up to 64 or more. Other edits
// collide with probability about 2^-64 if they are not chosen to: it is not a cryptographic hash, and an edit crafted
// to keep the sums is not seen. Nor is a write from another thread while a call runs, between the fingerprint and the
// kernel's reads.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "cpu_ukernels.h"

namespace zoo_xnor_cpu {

// Two vectors of four 64-bit lanes (GCC / Clang vector extensions: AVX2 adds where compiled for it, SSE2 pairs else):
// about 4 us for 295 KB with AVX2.
typedef uint64_t u64x4 __attribute__((vector_size(32)));

namespace {

ZOO_INLINE uint64_t fingerprint_impl(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  u64x4 a[2] = {}, b[2] = {};
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    for (int v = 0; v < 2; ++v) {
      u64x4 w;
      std::memcpy(&w, p + i + 32 * v, 32);
      a[v] += w;
      b[v] += a[v];
    }
  }
  for (int l = 0; i < n; ++l, i += 8) {  // the last words into lanes 0.., the final one zero-filled
    uint64_t w = 0;
    std::memcpy(&w, p + i, n - i < 8 ? n - i : 8);
    a[l / 4][l % 4] += w;
    b[l / 4][l % 4] += a[l / 4][l % 4];
  }
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;  // odd: each multiply is a bijection of the state
  uint64_t h = n * kMul;
  for (int l = 0; l < 8; ++l) {
    const uint64_t al = a[l / 4][l % 4], bl = b[l / 4][l % 4];
    h = ((h ^ al) * kMul) ^ ((bl * kMul) >> 7) ^ bl;
  }
  return h ^ (h >> 31);
}

ZOO_TARGET_AVX2 uint64_t fingerprint_avx2(const void* data, size_t n) { return fingerprint_impl(data, n); }
uint64_t fingerprint_base(const void* data, size_t n) { return fingerprint_impl(data, n); }

}  // namespace

uint64_t fingerprint_bytes(const void* data, size_t n) {
  return avx2_fma() ? fingerprint_avx2(data, n) : fingerprint_base(data, n);  // the same value either way
}

uint64_t fingerprint_tensor(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "fingerprint: tensors must be on the CPU, got ", t.device());
  if (t.is_non_overlapping_and_dense()) {  // any dense layout: its bytes start at data_ptr (strides are >= 0)
    return fingerprint_bytes(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  const at::Tensor c = t.contiguous();
  return fingerprint_bytes(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
}

namespace {

int64_t fingerprint(const std::vector<at::Tensor>& tensors) {
  uint64_t h = tensors.size();
  for (const at::Tensor& t : tensors) h = (h ^ fingerprint_tensor(t)) * 0x9E3779B97F4A7C15ull + 1;
  return static_cast<int64_t>(h);
}

}  // namespace

}  // namespace zoo_xnor_cpu

TORCH_LIBRARY_FRAGMENT(zoo_xnor_cpu, m) { m.def("fingerprint(Tensor[] tensors) -> int", &zoo_xnor_cpu::fingerprint); }
