// The end of a ResNet stem in one pass: max-pool, ReLU and the conversion to float32 (PackedResNet in zoo/packing.py;
// built into the zoo_kernels extension by cpu.py).
//
// out[n, c, oy, ox] = max(0, max over the window's taps inside the image of x[n, c, iy, ix]), float32, written into
// a given channels_last tensor (a slice of the batch: the stem runs a few images at a time). max(0, max(...)) is
// relu(maxpool(x)) = maxpool(relu(x)) exactly: the window's taps on the padding are skipped (-inf in F.max_pool2d),
// and every window has at least one tap in the image. A NaN in a window gives NaN, as in torch. x is float32 or
// bfloat16 (its bits shifted into a float32: exact), channels_last, so a pixel's channels are contiguous and the
// inner loop runs over them. torch's own max-pool also writes an int64 index per output, eight bytes per value that
// nothing reads; here only the values are written.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "cpu_ukernels.h"

namespace {

inline float to_float(float v) { return v; }
inline float to_float(uint16_t bf16_bits) { return __builtin_bit_cast(float, static_cast<uint32_t>(bf16_bits) << 16); }

// Output rows r0 .. r1 - 1 (of N * Ho).
template <typename scalar_t>
ZOO_INLINE void pool_range(const scalar_t* x, int64_t C, int64_t H, int64_t W, int64_t k, int64_t s, int64_t p,
                           int64_t Ho, int64_t Wo, float* out, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / Ho, oy = r % Ho;
    const int64_t y0 = std::max<int64_t>(oy * s - p, 0), y1 = std::min<int64_t>(oy * s - p + k, H);
    for (int64_t ox = 0; ox < Wo; ++ox) {
      const int64_t x0 = std::max<int64_t>(ox * s - p, 0), x1 = std::min<int64_t>(ox * s - p + k, W);
      float* __restrict acc = out + (r * Wo + ox) * C;
      std::fill(acc, acc + C, 0.0f);  // the ReLU's 0: max(0, ...)
      for (int64_t iy = y0; iy < y1; ++iy)
        for (int64_t ix = x0; ix < x1; ++ix) {
          const scalar_t* __restrict src = x + ((n * H + iy) * W + ix) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const float v = to_float(src[c]);
            acc[c] = (v > acc[c] || v != v) ? v : acc[c];  // NaN propagates (and stays: NaN > v is false)
          }
        }
    }
  }
}

template <typename scalar_t>
ZOO_TARGET_AVX2 void pool_range_avx2(const scalar_t* x, int64_t C, int64_t H, int64_t W, int64_t k, int64_t s,
                                     int64_t p, int64_t Ho, int64_t Wo, float* out, int64_t r0, int64_t r1) {
  pool_range(x, C, H, W, k, s, p, Ho, Wo, out, r0, r1);
}

template <typename scalar_t>
void pool_range_base(const scalar_t* x, int64_t C, int64_t H, int64_t W, int64_t k, int64_t s, int64_t p, int64_t Ho,
                     int64_t Wo, float* out, int64_t r0, int64_t r1) {
  pool_range(x, C, H, W, k, s, p, Ho, Wo, out, r0, r1);
}

template <typename scalar_t>
void pool_rows(const scalar_t* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t k, int64_t s, int64_t p,
               int64_t Ho, int64_t Wo, float* out) {
  const auto range = zoo_xnor_cpu::avx2_fma() ? pool_range_avx2<scalar_t> : pool_range_base<scalar_t>;
  at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) { range(x, C, H, W, k, s, p, Ho, Wo, out, r0, r1); });
}

at::Tensor max_pool_relu(const at::Tensor& x, at::Tensor& out, int64_t kernel, int64_t stride, int64_t padding) {
  TORCH_CHECK(
      x.dim() == 4 && x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
      "max_pool_relu: x must be a 4D float32 or bfloat16 CPU tensor");
  TORCH_CHECK(kernel >= 1 && kernel <= 64 && stride >= 1 && stride <= 64 && padding >= 0 && 2 * padding <= kernel,
              "max_pool_relu: kernel in [1, 64], stride in [1, 64], padding at most half the kernel, got ", kernel,
              ", ", stride, ", ", padding);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H + 2 * padding >= kernel && W + 2 * padding >= kernel, "max_pool_relu: input ", H, "x", W,
              " is smaller than the kernel");
  const int64_t Ho = (H + 2 * padding - kernel) / stride + 1, Wo = (W + 2 * padding - kernel) / stride + 1;
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.device().is_cpu() &&
                  out.sizes() == at::IntArrayRef({N, C, Ho, Wo}) && out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "max_pool_relu: out must be a float32 channels_last CPU tensor of shape (", N, ", ", C, ", ", Ho, ", ",
              Wo, ")");
  if (N == 0 || C == 0) return out;
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  if (x.scalar_type() == at::kFloat)
    pool_rows(xc.data_ptr<float>(), N, C, H, W, kernel, stride, padding, Ho, Wo, out.data_ptr<float>());
  else
    pool_rows(reinterpret_cast<const uint16_t*>(xc.data_ptr<c10::BFloat16>()), N, C, H, W, kernel, stride, padding, Ho,
              Wo, out.data_ptr<float>());
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(zoo_xnor_cpu, m) {
  m.def("max_pool_relu(Tensor x, Tensor(a!) out, int kernel, int stride, int padding) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(zoo_xnor_cpu, CPU, m) { m.impl("max_pool_relu", &max_pool_relu); }
