// The passes around oneDNN's int8 conv in the int8 matrix-engine route of the XNOR conv (int8_route.py): the
// activations' level bytes before it, and XNOR-Net's per-pixel input scale K, the bias, a residual and a ReLU after
// it. Built into the zoo_kernels extension with cpu_popcount.cpp and cpu_pack.cpp (cpu.py).
//
// Level bytes: a binary conv's input y = x * scale[c] + shift[c] (an inference BatchNorm, fused; or y = x) is
// quantized to a level L in {0, ..., n}, n = 2^bits - 1: for bits = 1, L = [y >= 0] (sign(y) = 2 L - 1, sign(0) =
// +1); for k bits, XNOR-Net's k-bit level L = floor(n (clamp(y, -1, 1) + 1) / 2 + 1/2) (kbit.py, same operations in
// the same order). NaN gets level 0, as in the packed kernels. The byte written is q = 2 L, so that with zero point n
// and scale 1 / n, (q - n) / n = (2 L - n) / n is exactly the quantized value (sign(y) for one bit): the conv of the
// bytes with int8 weights +-1 is then the XNOR conv's integer sum, and zero padding, q = n, stays 0. Bytes are
// (N, C, H, W) in channels_last memory, the layout oneDNN's int8 conv reads without reordering; with them the
// channel mean of |y| (N, 1, H, W) float32, the A of XNOR-Net's K, when asked.
//
// Epilogue: out[n, o, y, x] = out[n, o, y, x] * K[n, 0, y, x] + bias[o] (+ residual[n, o, y, x]), then a ReLU when
// asked, in place on oneDNN's float32 channels_last output (where K is given; without K oneDNN's own bias and sum
// post-op do it).
//
// Epilogue into the next conv's levels (scale_level_bytes): where the conv's output v = fma(out, K, bias[o]) feeds
// only the next binary conv's BatchNorm and quantizer (a ResNet block's conv1 -> bn -> sign -> conv2), the pass
// computes v per pixel in a buffer and writes the next conv's level bytes and mean |y| of y = fma(v, scale, shift)
// instead of v: the bytes and means of scale_epilogue then level_bytes, bit for bit (the same operations in the same
// order), with one pass over the conv's output instead of two and no float32 write.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu_ukernels.h"

namespace {

constexpr int64_t kMinPixelsPerThread = 1024;  // below this a pass is too short to be worth a second thread

inline int64_t pixel_grain(int64_t C) {
  return std::max<int64_t>(1, kMinPixelsPerThread * 64 / std::max<int64_t>(C, 1));
}

// One pixel's level bytes (and sum of |y|) from its C channels; a, b the affine (a = 1, b = 0 without one).
template <int kBits>
ZOO_INLINE float level_pixel(const float* __restrict src, const float* __restrict a, const float* __restrict b,
                             int64_t C, float n, uint8_t* __restrict dst) {
  if constexpr (kBits == 1) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<uint8_t>(std::fma(src[c], a[c], b[c]) >= 0.0f ? 2 : 0);
  } else {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float y = std::fma(src[c], a[c], b[c]);
      const float t = std::min(std::max(y, -1.0f), 1.0f);
      const float level = std::floor(n * (t + 1.0f) / 2.0f + 0.5f);
      dst[c] = static_cast<uint8_t>(y == y ? 2 * static_cast<int32_t>(level) : 0);  // y != y: NaN, level 0
    }
  }
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t c = 0; c < C; ++c) total += std::fabs(std::fma(src[c], a[c], b[c]));
  return total;
}

// Pixels p0 .. p1 - 1.
template <int kBits>
ZOO_INLINE void level_range(const float* x, const float* a, const float* b, int64_t C, float n, uint8_t* q,
                            float* absmean, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float total = level_pixel<kBits>(x + p * C, a, b, C, n, q + p * C);
    if (absmean) absmean[p] = total / static_cast<float>(C);
  }
}

template <int kBits>
ZOO_TARGET_AVX2 void level_range_avx2(const float* x, const float* a, const float* b, int64_t C, float n, uint8_t* q,
                                      float* absmean, int64_t p0, int64_t p1) {
  level_range<kBits>(x, a, b, C, n, q, absmean, p0, p1);
}

template <int kBits>
void level_range_base(const float* x, const float* a, const float* b, int64_t C, float n, uint8_t* q, float* absmean,
                      int64_t p0, int64_t p1) {
  level_range<kBits>(x, a, b, C, n, q, absmean, p0, p1);
}

template <int kBits>
void level_rows(const float* x, const float* a, const float* b, int64_t P, int64_t C, float n, uint8_t* q,
                float* absmean) {
  const auto range = zoo_xnor_cpu::avx2_fma() ? level_range_avx2<kBits> : level_range_base<kBits>;
  at::parallel_for(0, P, pixel_grain(C), [&](int64_t p0, int64_t p1) { range(x, a, b, C, n, q, absmean, p0, p1); });
}

// The epilogue of pixels p0 .. p1 - 1 (see the top of the file), in place on o_ptr.
ZOO_INLINE void epilogue_range(float* o_ptr, const float* k_ptr, const float* b_ptr, const float* r_ptr, int64_t O,
                               bool relu, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    float* __restrict row = o_ptr + p * O;
    const float k = k_ptr[p];
    if (r_ptr) {
      const float* __restrict res = r_ptr + p * O;
#pragma omp simd
      for (int64_t o = 0; o < O; ++o) row[o] = std::fma(row[o], k, b_ptr[o]) + res[o];
    } else {
#pragma omp simd
      for (int64_t o = 0; o < O; ++o) row[o] = std::fma(row[o], k, b_ptr[o]);
    }
    if (relu) {
#pragma omp simd
      for (int64_t o = 0; o < O; ++o) row[o] = std::max(row[o], 0.0f);
    }
  }
}

ZOO_TARGET_AVX2 void epilogue_range_avx2(float* o_ptr, const float* k_ptr, const float* b_ptr, const float* r_ptr,
                                         int64_t O, bool relu, int64_t p0, int64_t p1) {
  epilogue_range(o_ptr, k_ptr, b_ptr, r_ptr, O, relu, p0, p1);
}

void epilogue_range_base(float* o_ptr, const float* k_ptr, const float* b_ptr, const float* r_ptr, int64_t O, bool relu,
                         int64_t p0, int64_t p1) {
  epilogue_range(o_ptr, k_ptr, b_ptr, r_ptr, O, relu, p0, p1);
}

std::tuple<at::Tensor, at::Tensor> level_bytes(const at::Tensor& x, int64_t bits, bool absmean,
                                               const std::optional<at::Tensor>& scale,
                                               const std::optional<at::Tensor>& shift) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "level_bytes: x must be a 4D float32 CPU tensor, got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(bits >= 1 && bits <= 7, "level_bytes: 1 to 7 bits (2 L must fit a byte), got ", bits);
  TORCH_CHECK(scale.has_value() == shift.has_value(), "level_bytes: give both scale and shift, or neither");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = N * H * W;
  TORCH_CHECK(C > 0, "level_bytes: the input has zero channels");
  at::Tensor a, b;
  if (scale.has_value()) {
    TORCH_CHECK(scale->numel() == C && shift->numel() == C && scale->scalar_type() == at::kFloat &&
                    shift->scalar_type() == at::kFloat && scale->device().is_cpu() && shift->device().is_cpu(),
                "level_bytes: scale and shift must be float32 CPU tensors of ", C, " elements");
    a = scale->contiguous(), b = shift->contiguous();
  } else {
    a = at::ones({C}, x.options()), b = at::zeros({C}, x.options());
  }
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor q = at::empty({N, C, H, W}, x.options().dtype(at::kByte), at::MemoryFormat::ChannelsLast);
  at::Tensor am = absmean ? at::empty({N, 1, H, W}, x.options()) : at::Tensor();
  if (P == 0) return {q, am};
  const float n = static_cast<float>((1 << bits) - 1);
  float* am_ptr = absmean ? am.data_ptr<float>() : nullptr;
  if (bits == 1)
    level_rows<1>(xc.data_ptr<float>(), a.data_ptr<float>(), b.data_ptr<float>(), P, C, n, q.data_ptr<uint8_t>(),
                  am_ptr);
  else
    level_rows<0>(xc.data_ptr<float>(), a.data_ptr<float>(), b.data_ptr<float>(), P, C, n, q.data_ptr<uint8_t>(),
                  am_ptr);
  return {q, am};
}

// Pixels p0 .. p1 - 1 of scale_level_bytes (see the top of the file); v: a buffer of O floats.
template <int kBits>
ZOO_INLINE void scale_level_range(const float* o_ptr, const float* k_ptr, const float* bias, const float* a,
                                  const float* b, int64_t O, float n, uint8_t* q, float* absmean, float* v, int64_t p0,
                                  int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* __restrict row = o_ptr + p * O;
    const float k = k_ptr[p];
#pragma omp simd
    for (int64_t o = 0; o < O; ++o) v[o] = std::fma(row[o], k, bias[o]);
    const float total = level_pixel<kBits>(v, a, b, O, n, q + p * O);
    absmean[p] = total / static_cast<float>(O);
  }
}

template <int kBits>
ZOO_TARGET_AVX2 void scale_level_range_avx2(const float* o_ptr, const float* k_ptr, const float* bias, const float* a,
                                            const float* b, int64_t O, float n, uint8_t* q, float* absmean, float* v,
                                            int64_t p0, int64_t p1) {
  scale_level_range<kBits>(o_ptr, k_ptr, bias, a, b, O, n, q, absmean, v, p0, p1);
}

template <int kBits>
void scale_level_range_base(const float* o_ptr, const float* k_ptr, const float* bias, const float* a, const float* b,
                            int64_t O, float n, uint8_t* q, float* absmean, float* v, int64_t p0, int64_t p1) {
  scale_level_range<kBits>(o_ptr, k_ptr, bias, a, b, O, n, q, absmean, v, p0, p1);
}

std::tuple<at::Tensor, at::Tensor> scale_level_bytes(const at::Tensor& out, const at::Tensor& K,
                                                     const std::optional<at::Tensor>& bias, const at::Tensor& scale,
                                                     const at::Tensor& shift, int64_t bits) {
  TORCH_CHECK(out.dim() == 4 && out.scalar_type() == at::kFloat && out.device().is_cpu() &&
                  out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "scale_level_bytes: out must be a float32 CPU tensor in channels_last memory");
  TORCH_CHECK(bits >= 1 && bits <= 7, "scale_level_bytes: 1 to 7 bits (2 L must fit a byte), got ", bits);
  const int64_t N = out.size(0), O = out.size(1), H = out.size(2), W = out.size(3), P = N * H * W;
  TORCH_CHECK(O > 0, "scale_level_bytes: the output has zero channels");
  TORCH_CHECK(K.scalar_type() == at::kFloat && K.numel() == P && K.device().is_cpu(),
              "scale_level_bytes: K must be float32 with N * Ho * Wo elements");
  for (const at::Tensor* t : {&scale, &shift})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->numel() == O && t->device().is_cpu(),
                "scale_level_bytes: scale and shift must be float32 CPU tensors of ", O, " elements");
  if (bias.has_value())
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == O && bias->device().is_cpu(),
                "scale_level_bytes: bias must be float32 (O,)");
  const at::Tensor kc = K.contiguous(), ac = scale.contiguous(), sc = shift.contiguous();
  const at::Tensor bc = bias.has_value() ? bias->contiguous() : at::zeros({O}, out.options());
  at::Tensor q = at::empty({N, O, H, W}, out.options().dtype(at::kByte), at::MemoryFormat::ChannelsLast);
  at::Tensor am = at::empty({N, 1, H, W}, out.options());
  if (P == 0) return {q, am};
  const float n = static_cast<float>((1 << bits) - 1);
  using Range = void (*)(const float*, const float*, const float*, const float*, const float*, int64_t, float, uint8_t*,
                         float*, float*, int64_t, int64_t);
  const bool avx2 = zoo_xnor_cpu::avx2_fma();
  const Range range = bits == 1 ? (avx2 ? scale_level_range_avx2<1> : scale_level_range_base<1>)
                                : (avx2 ? scale_level_range_avx2<0> : scale_level_range_base<0>);
  const float* o_ptr = out.data_ptr<float>();
  at::parallel_for(0, P, pixel_grain(O), [&](int64_t p0, int64_t p1) {
    std::vector<float> v(O);
    range(o_ptr, kc.data_ptr<float>(), bc.data_ptr<float>(), ac.data_ptr<float>(), sc.data_ptr<float>(), O, n,
          q.data_ptr<uint8_t>(), am.data_ptr<float>(), v.data(), p0, p1);
  });
  return {q, am};
}

at::Tensor scale_epilogue(const at::Tensor& out, const at::Tensor& K, const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& residual, bool relu) {
  TORCH_CHECK(out.dim() == 4 && out.scalar_type() == at::kFloat && out.device().is_cpu() &&
                  out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "scale_epilogue: out must be a float32 CPU tensor in channels_last memory");
  const int64_t N = out.size(0), O = out.size(1), H = out.size(2), W = out.size(3), P = N * H * W;
  TORCH_CHECK(K.scalar_type() == at::kFloat && K.numel() == P && K.device().is_cpu(),
              "scale_epilogue: K must be float32 with N * Ho * Wo elements");
  if (bias.has_value())
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == O && bias->device().is_cpu(),
                "scale_epilogue: bias must be float32 (O,)");
  if (residual.has_value())
    TORCH_CHECK(
        residual->sizes() == out.sizes() && residual->scalar_type() == at::kFloat && residual->device().is_cpu(),
        "scale_epilogue: residual must be a float32 CPU tensor of the output's shape");
  const at::Tensor kc = K.contiguous();
  const at::Tensor bc = bias.has_value() ? bias->contiguous() : at::zeros({O}, out.options());
  const at::Tensor rc = residual.has_value() ? residual->contiguous(at::MemoryFormat::ChannelsLast) : at::Tensor();
  float* o_ptr = out.data_ptr<float>();
  const float* k_ptr = kc.data_ptr<float>();
  const float* b_ptr = bc.data_ptr<float>();
  const float* r_ptr = rc.defined() ? rc.data_ptr<float>() : nullptr;
  const auto range = zoo_xnor_cpu::avx2_fma() ? epilogue_range_avx2 : epilogue_range_base;
  at::parallel_for(0, P, pixel_grain(O),
                   [&](int64_t p0, int64_t p1) { range(o_ptr, k_ptr, b_ptr, r_ptr, O, relu, p0, p1); });
  return out;
}

}  // namespace

// uint8 levels of a float conv's input, for an int8 float layer (a packed model's int8 stem, zoo/int8_stem.py):
// q = clamp(nearbyint(x / scale) + zero_point, 0, 255) (round half to even; NaN -> zero_point), channels_last, in one
// pass over x in either layout (an NCHW image's few channels are gathered per pixel).
ZOO_INLINE uint8_t level_u8(float v, float scale, float zero) {
  const float level = __builtin_rintf(v / scale) + zero;  // rint: round half to even, inlined (no errno)
  return v != v ? static_cast<uint8_t>(zero) : static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, level)));
}

// Pixels r0 .. r1 - 1 of N * HW; in NCHW a channel's run of the pixels at a time (contiguous reads).
ZOO_INLINE void quantize_rows(const float* x, int64_t C, int64_t HW, bool nhwc, float scale, float zero, uint8_t* q,
                              int64_t r0, int64_t r1) {
  if (nhwc) {
#pragma omp simd
    for (int64_t j = r0 * C; j < r1 * C; ++j) q[j] = level_u8(x[j], scale, zero);
    return;
  }
  for (int64_t r = r0; r < r1;) {
    const int64_t n = r / HW, i0 = r % HW, len = std::min(r1 - r, HW - i0);  // within one image
    for (int64_t c = 0; c < C; ++c) {
      const float* __restrict src = x + (n * C + c) * HW + i0;
      uint8_t* __restrict dst = q + r * C + c;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) dst[i * C] = level_u8(src[i], scale, zero);
    }
    r += len;
  }
}

ZOO_TARGET_AVX2 void quantize_rows_avx2(const float* x, int64_t C, int64_t HW, bool nhwc, float scale, float zero,
                                        uint8_t* q, int64_t r0, int64_t r1) {
  quantize_rows(x, C, HW, nhwc, scale, zero, q, r0, r1);
}

void quantize_rows_base(const float* x, int64_t C, int64_t HW, bool nhwc, float scale, float zero, uint8_t* q,
                        int64_t r0, int64_t r1) {
  quantize_rows(x, C, HW, nhwc, scale, zero, q, r0, r1);
}

at::Tensor quantize_u8(const at::Tensor& x, double scale, int64_t zero_point) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "quantize_u8: x must be a 4D float32 CPU tensor, got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(scale > 0 && std::isfinite(scale) && zero_point >= 0 && zero_point <= 255,
              "quantize_u8: scale must be positive and finite and zero_point in [0, 255], got ", scale, ", ",
              zero_point);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  at::Tensor q = at::empty(x.sizes(), x.options().dtype(at::kByte), at::MemoryFormat::ChannelsLast);
  if (x.numel() == 0) return q;
  const bool nhwc = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor xc = nhwc ? x : x.contiguous();
  const float* x_ptr = xc.data_ptr<float>();
  uint8_t* q_ptr = q.data_ptr<uint8_t>();
  const auto range = zoo_xnor_cpu::avx2_fma() ? quantize_rows_avx2 : quantize_rows_base;
  at::parallel_for(0, N * HW, pixel_grain(C), [&](int64_t r0, int64_t r1) {
    range(x_ptr, C, HW, nhwc, static_cast<float>(scale), static_cast<float>(zero_point), q_ptr, r0, r1);
  });
  return q;
}

TORCH_LIBRARY_FRAGMENT(zoo_xnor_cpu, m) {
  m.def("quantize_u8(Tensor x, float scale, int zero_point) -> Tensor");
  m.def("level_bytes(Tensor x, int bits, bool absmean, Tensor? scale, Tensor? shift) -> (Tensor, Tensor)");
  m.def("scale_epilogue(Tensor(a!) out, Tensor K, Tensor? bias, Tensor? residual, bool relu) -> Tensor(a!)");
  m.def(
      "scale_level_bytes(Tensor out, Tensor K, Tensor? bias, Tensor scale, Tensor shift, int bits) -> (Tensor, "
      "Tensor)");
}

TORCH_LIBRARY_IMPL(zoo_xnor_cpu, CPU, m) {
  m.impl("level_bytes", &level_bytes);
  m.impl("quantize_u8", &quantize_u8);
  m.impl("scale_epilogue", &scale_epilogue);
  m.impl("scale_level_bytes", &scale_level_bytes);
}
