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
// fma, compare, movemask); an NCHW input 64 pixels of an image at a time (contiguous in each channel plane), the
// words of 8 pixels built in the lanes of a vector, a compare, and and an or per channel (pack_word_vertical). K (A
// convolved with a box filter) is a small separate kernel, input_scale.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kWordBits = 32;
constexpr int64_t kMinPackWork = 1 << 18;  // floats per thread, at least, when packing

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

constexpr int64_t kBlockPixels = 64;  // NCHW: pixels per block (8 vectors of 8 with AVX2)

#ifdef __AVX2__

// One word (channels c0 .. c0 + jn - 1, jn <= 32) of NV vectors of 8 pixels, "vertically": per channel and vector,
// a compare gives each pixel's bit as a lane mask, which is and-ed with the channel's bit (1 << j) and or-ed into the
// vector's 8 words. 3 instructions per 8 floats (the load folds into the compare), no transpose. kMasked: vector v
// loads the lanes of mask[v] (a tail). parts[v] (kAbs): the channels' sum of |y| per pixel, in channel order.
template <int NV, bool kAffine, bool kAbs, bool kMasked>
inline void pack_word_vertical(const float* src, int64_t plane, int64_t jn, const float* scale, const float* shift,
                               const __m256i* mask, uint32_t* words, float* parts) {
  const __m256 zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
  __m256i acc[NV];
  __m256 part[NV];
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_si256(), part[v] = zero;
  __m256i bit = _mm256_set1_epi32(1);
  for (int64_t j = 0; j < jn; ++j, src += plane) {
    __m256 a = zero, b = zero;
    if constexpr (kAffine) a = _mm256_set1_ps(scale[j]), b = _mm256_set1_ps(shift[j]);
    for (int v = 0; v < NV; ++v) {
      __m256 y = kMasked ? _mm256_maskload_ps(src + 8 * v, mask[v]) : _mm256_loadu_ps(src + 8 * v);
      if constexpr (kAffine) y = _mm256_fmadd_ps(y, a, b);
      const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(y, zero, _CMP_GE_OQ));  // NaN: 0
      acc[v] = _mm256_or_si256(acc[v], _mm256_and_si256(ge, bit));
      if constexpr (kAbs) part[v] = _mm256_add_ps(part[v], _mm256_andnot_ps(sign, y));
    }
    bit = _mm256_add_epi32(bit, bit);
  }
  for (int v = 0; v < NV; ++v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(words + 8 * v), acc[v]);
    if constexpr (kAbs) _mm256_storeu_ps(parts + 8 * v, part[v]);
  }
}

template <bool kAffine, bool kAbs, bool kMasked>
void pack_block_words(const float* src, int64_t plane, int64_t jn, const float* scale, const float* shift,
                      const __m256i* mask, uint32_t* words, float* parts) {
  if constexpr (kAbs) {  // 4 vectors at a time: 8 accumulators, and the registers are not spilled
    pack_word_vertical<4, kAffine, kAbs, kMasked>(src, plane, jn, scale, shift, mask, words, parts);
    pack_word_vertical<4, kAffine, kAbs, kMasked>(src + 32, plane, jn, scale, shift, mask + 4, words + 32, parts + 32);
  } else {
    pack_word_vertical<8, kAffine, kAbs, kMasked>(src, plane, jn, scale, shift, mask, words, parts);
  }
}

// Pixels q .. q + qn - 1 (qn <= 64) of an NCHW float image (channel c's plane at img + c * plane), word by word
// (pack_word_vertical; a block shorter than 64 pixels loads the lanes it has). dst: the image's NHWC words;
// total[p] += sum_c |y| of pixel q + p.
void pack_nchw_block(const float* img, const Affine<float>& f, int64_t C, int64_t plane, int64_t q, int64_t qn,
                     int32_t* dst, double* total) {
  const int64_t Cw = ceil_div(C, kWordBits);
  __m256i mask[8];
  for (int v = 0; v < 8; ++v)
    mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(qn - 8 * v, 0, 8))),
                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  alignas(32) uint32_t words[kBlockPixels];
  alignas(32) float parts[kBlockPixels];
  const bool full = qn == kBlockPixels, affine = f.scale != nullptr, abs = total != nullptr;
  using Fn = void (*)(const float*, int64_t, int64_t, const float*, const float*, const __m256i*, uint32_t*, float*);
  static constexpr Fn kFns[8] = {pack_block_words<false, false, false>, pack_block_words<false, false, true>,
                                 pack_block_words<false, true, false>,  pack_block_words<false, true, true>,
                                 pack_block_words<true, false, false>,  pack_block_words<true, false, true>,
                                 pack_block_words<true, true, false>,   pack_block_words<true, true, true>};
  const Fn fn = kFns[4 * affine + 2 * abs + !full];
  for (int64_t k = 0; k < Cw; ++k) {
    const int64_t c0 = k * kWordBits, jn = std::min(kWordBits, C - c0);
    fn(img + c0 * plane + q, plane, jn, affine ? f.scale + c0 : nullptr, affine ? f.shift + c0 : nullptr, mask,
       words, parts);
    for (int64_t p = 0; p < qn; ++p) dst[(q + p) * Cw + k] = static_cast<int32_t>(words[p]);
    if (abs)
      for (int64_t p = 0; p < qn; ++p) total[p] += parts[p];
  }
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
        pack_nchw_block(img, f, C, plane, q0, q1 - q0, dst, am ? total : nullptr);
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

}  // namespace

std::tuple<at::Tensor, at::Tensor> zoo_xnor_cpu::pack_signs(const at::Tensor& x_in, bool with_absmean,
                                                            const std::optional<at::Tensor>& scale_in,
                                                            const std::optional<at::Tensor>& shift_in) {
  TORCH_CHECK(x_in.dim() == 4, "pack_signs: expected a 4D (N, C, H, W) tensor, got ", x_in.dim(), "D");
  TORCH_CHECK(x_in.is_floating_point(), "pack_signs: expected a floating-point tensor, got ", x_in.scalar_type());
  TORCH_CHECK(x_in.device().is_cpu(), "pack_signs: expected a CPU tensor");
  TORCH_CHECK(scale_in.has_value() == shift_in.has_value(), "pack_signs: give both scale and shift, or neither");
  // float32 or float64 as is; half / bfloat16 widen to float32 exactly (signs, zeros and NaN are kept). (float64
  // is not narrowed: a tiny negative double would round to -0.0f, which is >= 0.)
  const at::Tensor x = x_in.scalar_type() == at::kDouble ? x_in : x_in.to(at::kFloat);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C > 0, "pack_signs: zero channels");
  at::Tensor scale, shift;
  if (scale_in.has_value()) {
    TORCH_CHECK(scale_in->numel() == C && shift_in->numel() == C && scale_in->scalar_type() == at::kFloat &&
                    shift_in->scalar_type() == at::kFloat && scale_in->device().is_cpu() && shift_in->device().is_cpu(),
                "pack_signs: scale and shift must be float32 CPU tensors of C = ", C, " elements");
    scale = scale_in->contiguous();
    shift = shift_in->contiguous();
  }
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

// K[n, 0, y, x] = (1 / (kh * kw)) * sum over the taps inside the image of A[n, 0, iy, ix]: XNOR-Net's K = A * k,
// conv2d of A with a box filter, zero padding counted as 0. Separable: per output row, the sums over the kernel's rows
// of each input column (contiguous, vectorised), then per output the sum of kw of them. kh + kw additions per output
// instead of kh * kw, and without the overhead of a one-channel oneDNN conv.
at::Tensor zoo_xnor_cpu::input_scale(const at::Tensor& absmean, at::IntArrayRef kernel_size, at::IntArrayRef stride,
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
}

TORCH_LIBRARY_IMPL(zoo_xnor_cpu, CPU, m) {
  m.impl("pack_signs", &zoo_xnor_cpu::pack_signs);
  m.impl("input_scale", &zoo_xnor_cpu::input_scale);
}
