// Activation packing and XNOR-Net's input scale K on the CPU (zoo_kernels; built with cpu_popcount.cpp by cpu.py into
// one extension, ops zoo_xnor_cpu::pack_signs, pack_kbit_planes, pack_variants and input_scale).
//
// This file is the packing's driver: it checks the arguments, allocates, splits the pixels over torch's intra-op
// threads and calls the micro-kernels of one variant of kPackVariants (cpu_pack_ukernels.h, which also gives the packed
// format and the order of the |y| sums; one file per ISA: cpu_pack_scalar.cpp, cpu_pack_avx2.cpp, cpu_pack_avx512.cpp).
// The variant: the op's, else the one ZOO_KERNELS_ISA forces (forced_isa(), as for the popcount conv), else the first
// the CPU runs. Every variant gives the same words and absmean; float64 inputs run the scalar micro-kernels.
//
// Fused per-channel affine: with scale and shift given, the packed value is y = fma(x, scale[c], shift[c]) instead of
// x: an inference BatchNorm in front of the sign (BN(x) = x * a + b with a = gamma / sqrt(var + eps),
// b = beta - mean * a) costs nothing extra in the packing pass, and the float activation is read once. The optional
// channel mean of |y| (the A of XNOR-Net's input scale K) is accumulated in the same pass. K (A convolved with a box
// filter) is a small separate kernel, input_scale.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_kernels.h"
#include "cpu_pack_ukernels.h"
#include "cpu_ukernels.h"

namespace {

using zoo_xnor_cpu::kPackBlockPixels;
using zoo_xnor_cpu::kPackVariants;
using zoo_xnor_cpu::PackVariant;

constexpr int64_t kWordBits = 32;
constexpr int64_t kMinPackWork = 1 << 16;  // floats per thread, at least, when packing (2^18: batch 1 on 1 thread)
constexpr int64_t kNumPackVariants = sizeof(kPackVariants) / sizeof(kPackVariants[0]);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ------------------------------------------------------------------------------------------ variants

// Whether the CPU has `feature` (a name of kPackVariants' lists, as __builtin_cpu_supports spells it).
bool cpu_has(std::string_view feature) {
  const zoo_xnor_cpu::CpuFeatures& f = zoo_xnor_cpu::cpu_features();  // (also runs __builtin_cpu_init)
  if (feature == "avx2") return f.avx2;
  if (feature == "avx512f") return f.avx512f;
  if (feature == "avx512bw") return f.avx512bw;
  if (feature == "avx512vl") return f.avx512vl;
#if defined(__x86_64__)
  static const bool fma = __builtin_cpu_supports("fma"), popcnt = __builtin_cpu_supports("popcnt"),
                    bmi2 = __builtin_cpu_supports("bmi2");
  if (feature == "fma") return fma;
  if (feature == "popcnt") return popcnt;
  if (feature == "bmi2") return bmi2;
#endif
  return false;
}

// Why the CPU cannot run kPackVariants[i] ("" when it can), computed once: the features it lacks.
const std::string& pack_missing(int64_t i) {
  static const std::array<std::string, kNumPackVariants> missing = [] {
    std::array<std::string, kNumPackVariants> m;
    for (int64_t v = 0; v < kNumPackVariants; ++v) {
      std::string_view rest = kPackVariants[v].features;
      while (!rest.empty()) {
        const size_t comma = std::min(rest.find(','), rest.size());
        if (!cpu_has(rest.substr(0, comma)))
          m[v] += (m[v].empty() ? "the CPU lacks " : ", ") + std::string(rest.substr(0, comma));
        rest.remove_prefix(std::min(comma + 1, rest.size()));
      }
    }
    return m;
  }();
  return missing[i];
}

std::string pack_choices() {  // the variants that run here, fastest first
  std::string names;
  for (int64_t i = 0; i < kNumPackVariants; ++i)
    if (pack_missing(i).empty()) names += std::string(names.empty() ? "" : ", ") + kPackVariants[i].name;
  return names;
}

// The variant op `what` runs: `variant` (an isa number of kPackVariants: 1 scalar, 2 avx2, 4 avx512), checked against
// the CPU; for 0 (auto) the one ZOO_KERNELS_ISA forces, else the first that runs here.
const PackVariant& pack_variant(const char* what, int64_t variant) {
  const int64_t want = variant != 0 ? variant : zoo_xnor_cpu::forced_isa();
  if (want == 0) {
    for (int64_t i = 0; i < kNumPackVariants; ++i)
      if (pack_missing(i).empty()) return kPackVariants[i];
  }
  int64_t i = 0;
  while (i < kNumPackVariants && kPackVariants[i].isa != want) ++i;
  TORCH_CHECK(i < kNumPackVariants, what, ": variant must be 0 (auto), 1 (scalar), 2 (avx2) or 4 (avx512) and ",
              "compiled in (here: ", pack_choices(), "), got ", want);
  if (variant != 0) {
    TORCH_CHECK(pack_missing(i).empty(), what, ": variant ", kPackVariants[i].name, ": ", pack_missing(i));
  } else {
    TORCH_CHECK(pack_missing(i).empty(), what, ": ZOO_KERNELS_ISA=", kPackVariants[i].name, ", but ", pack_missing(i),
                "; choices here: ", pack_choices());
  }
  return kPackVariants[i];
}

std::vector<std::string> pack_variants() {  // the names of those that run here, fastest first
  std::vector<std::string> names;
  for (int64_t i = 0; i < kNumPackVariants; ++i)
    if (pack_missing(i).empty()) names.emplace_back(kPackVariants[i].name);
  return names;
}

// ------------------------------------------------------------------------------------------ drivers

// The micro-kernels for element type T: the variant's for float32, the scalar ones for float64.
template <typename T>
struct PackKernels {
  void (*signs_rows)(const T*, int64_t, int64_t, const float*, const float*, int32_t*, float*);
  void (*signs_nchw)(const T*, int64_t, int64_t, int64_t, int64_t, const float*, const float*, int32_t*, float*);
  void (*kbit_rows)(const T*, int64_t, int64_t, int, const float*, const float*, int32_t*, int64_t);
  void (*kbit_nchw)(const T*, int64_t, int64_t, int64_t, int64_t, int, const float*, const float*, int32_t*, int64_t);
};

template <typename T>
PackKernels<T> pack_kernels(const PackVariant& v) {
  if constexpr (std::is_same_v<T, float>) {
    return {v.signs_rows, v.signs_nchw, v.kbit_rows, v.kbit_nchw};
  } else {
    return {zoo_xnor_cpu::pack_signs_rows_scalar, zoo_xnor_cpu::pack_signs_nchw_scalar,
            zoo_xnor_cpu::pack_kbit_rows_scalar, zoo_xnor_cpu::pack_kbit_nchw_scalar};
  }
}

// x (N, C, H, W) contiguous in NCHW or channels_last memory -> out (N, H, W, Cw); absmean (N, H, W) = mean_c |y| if not
// null. channels_last: ranges of pixels; NCHW: ranges of an image's blocks of 64 pixels.
template <typename T>
void pack_signs_run(const PackKernels<T>& fn, const T* x, bool nhwc, const float* scale, const float* shift,
                    int32_t* out, float* absmean, int64_t N, int64_t C, int64_t plane) {
  const int64_t Cw = ceil_div(C, kWordBits);
  if (nhwc) {
    at::parallel_for(0, N * plane, std::max<int64_t>(1, kMinPackWork / C), [&](int64_t begin, int64_t end) {
      fn.signs_rows(x + begin * C, end - begin, C, scale, shift, out + begin * Cw, absmean ? absmean + begin : nullptr);
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / (C * kPackBlockPixels));
  at::parallel_for(0, N * ceil_div(plane, kPackBlockPixels), grain, [&](int64_t begin, int64_t end) {
    fn.signs_nchw(x, C, plane, begin, end, scale, shift, out, absmean);
  });
}

// x (N, C, H, W) as pack_signs_run -> out (bits, N, H, W, Cw).
template <typename T>
void pack_kbit_run(const PackKernels<T>& fn, const T* x, bool nhwc, const float* scale, const float* shift, int bits,
                   int32_t* out, int64_t N, int64_t C, int64_t plane) {
  const int64_t Cw = ceil_div(C, kWordBits), pstride = N * plane * Cw;
  const int64_t grain = std::max<int64_t>(1, kMinPackWork / (C * bits));
  if (nhwc) {
    at::parallel_for(0, N * plane, grain, [&](int64_t begin, int64_t end) {
      fn.kbit_rows(x + begin * C, end - begin, C, bits, scale, shift, out + begin * Cw, pstride);
    });
    return;
  }
  const int64_t blocks = N * ceil_div(plane, kPackBlockPixels);
  at::parallel_for(0, blocks, std::max<int64_t>(1, grain / kPackBlockPixels), [&](int64_t begin, int64_t end) {
    fn.kbit_nchw(x, C, plane, begin, end, bits, scale, shift, out, pstride);
  });
}

// The fused affine's (scale, shift) of an op `what` for C channels, checked and contiguous; undefined without them.
std::pair<at::Tensor, at::Tensor> affine_tensors(const char* what, int64_t C, const std::optional<at::Tensor>& scale,
                                                 const std::optional<at::Tensor>& shift) {
  TORCH_CHECK(scale.has_value() == shift.has_value(), what, ": give both scale and shift, or neither");
  if (!scale.has_value()) return {};
  TORCH_CHECK(scale->numel() == C && shift->numel() == C && scale->scalar_type() == at::kFloat &&
                  shift->scalar_type() == at::kFloat && scale->device().is_cpu() && shift->device().is_cpu(),
              what, ": scale and shift must be float32 CPU tensors of C = ", C, " elements");
  return {scale->contiguous(), shift->contiguous()};
}

const float* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

}  // namespace

zoo_xnor_cpu::PackSignsRowsFn zoo_xnor_cpu::pack_signs_rows_auto() { return pack_variant("pack_signs", 0).signs_rows; }

std::tuple<at::Tensor, at::Tensor> zoo_xnor_cpu::pack_signs(const at::Tensor& x_in, bool with_absmean,
                                                            const std::optional<at::Tensor>& scale_in,
                                                            const std::optional<at::Tensor>& shift_in,
                                                            int64_t variant) {
  const PackVariant& v = pack_variant("pack_signs", variant);
  TORCH_CHECK(x_in.dim() == 4, "pack_signs: expected a 4D (N, C, H, W) tensor, got ", x_in.dim(), "D");
  TORCH_CHECK(x_in.is_floating_point(), "pack_signs: expected a floating-point tensor, got ", x_in.scalar_type());
  TORCH_CHECK(x_in.device().is_cpu(), "pack_signs: expected a CPU tensor");
  // float32 or float64 as is; half / bfloat16 widen to float32 exactly (signs, zeros and NaN are kept). (float64
  // is not narrowed: a tiny negative double would round to -0.0f, which is >= 0.)
  const at::Tensor x = x_in.scalar_type() == at::kDouble ? x_in : x_in.to(at::kFloat);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C > 0, "pack_signs: zero channels");
  at::Tensor scale, shift;
  std::tie(scale, shift) = affine_tensors("pack_signs", C, scale_in, shift_in);
  const int64_t Cw = ceil_div(C, kWordBits);
  at::Tensor out = at::empty({N, H, W, Cw}, x.options().dtype(at::kInt));
  at::Tensor am = at::empty({with_absmean ? N : 0, 1, H, W}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {out, am};
  const bool nhwc = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor xc = nhwc ? x : x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "pack_signs", [&] {
    pack_signs_run(pack_kernels<scalar_t>(v), xc.data_ptr<scalar_t>(), nhwc, data_or_null(scale), data_or_null(shift),
                   out.data_ptr<int32_t>(), with_absmean ? am.data_ptr<float>() : nullptr, N, C, H * W);
  });
  return {out, am};
}

at::Tensor zoo_xnor_cpu::pack_kbit_planes(const at::Tensor& x, int64_t bits, const std::optional<at::Tensor>& scale_in,
                                          const std::optional<at::Tensor>& shift_in, int64_t variant) {
  const PackVariant& v = pack_variant("pack_kbit_planes", variant);
  TORCH_CHECK(x.dim() == 4, "pack_kbit_planes: expected a 4D (N, C, H, W) tensor, got ", x.dim(), "D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "pack_kbit_planes: expected a float32 or float64 tensor, got ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu(), "pack_kbit_planes: expected a CPU tensor");
  TORCH_CHECK(bits >= 1 && bits <= zoo_xnor_cpu::kPackMaxBits, "pack_kbit_planes: bits must be from 1 to ",
              zoo_xnor_cpu::kPackMaxBits, ", got ", bits);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C > 0, "pack_kbit_planes: zero channels");
  at::Tensor scale, shift;
  std::tie(scale, shift) = affine_tensors("pack_kbit_planes", C, scale_in, shift_in);
  at::Tensor out = at::empty({bits, N, H, W, ceil_div(C, kWordBits)}, x.options().dtype(at::kInt));
  if (x.numel() == 0) return out;
  const bool nhwc = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor xc = nhwc ? x : x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "pack_kbit_planes", [&] {
    pack_kbit_run(pack_kernels<scalar_t>(v), xc.data_ptr<scalar_t>(), nhwc, data_or_null(scale), data_or_null(shift),
                  static_cast<int>(bits), out.data_ptr<int32_t>(), N, C, H * W);
  });
  return out;
}

namespace {

// One line on the packing: the variants that run here and what auto calls run.
std::string pack_info() {
  const int64_t forced = zoo_xnor_cpu::forced_isa();
  std::string auto_choice = pack_variants().front();
  for (const PackVariant& v : kPackVariants)
    if (forced != 0 && v.isa == forced) auto_choice = std::string("ZOO_KERNELS_ISA=") + v.name;
  std::string info = "pack: variants";
  for (const std::string& name : pack_variants()) info += " " + name;
  return info + ", auto: " + auto_choice;
}

}  // namespace

namespace {

constexpr int64_t kMaxGeometry = int64_t(1) << 16;
constexpr int64_t kMaxElements = int64_t(1) << 32;

void check_range(const char* what, const char* name, int64_t i, int64_t v, int64_t low) {
  TORCH_CHECK(v >= low && v <= kMaxGeometry, what, ": ", name, "[", i, "] = ", v, " is outside [", low, ", ",
              kMaxGeometry, "]");
}

void check_elements(const char* what, const char* label, std::initializer_list<int64_t> dims) {
  int64_t n = 1;
  for (const int64_t d : dims) {
    TORCH_CHECK(!__builtin_mul_overflow(n, std::max<int64_t>(d, 1), &n) && n <= kMaxElements, what, ": ", label, " ",
                at::IntArrayRef(dims), " has more than ", kMaxElements, " elements");
  }
}

}  // namespace

std::pair<int64_t, int64_t> zoo_xnor_cpu::check_conv_geometry(const char* what, int64_t planes, int64_t N, int64_t H,
                                                              int64_t W, int64_t Cw, int64_t O, int64_t kh, int64_t kw,
                                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                                              at::IntArrayRef dilation) {
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, what,
              ": stride, padding and dilation must have 2 elements");
  for (int64_t i = 0; i < 2; ++i) {
    check_range(what, "stride", i, stride[i], 1);
    check_range(what, "padding", i, padding[i], 0);
    check_range(what, "dilation", i, dilation[i], 1);
  }
  check_range(what, "kernel_size", 0, kh, 1);
  check_range(what, "kernel_size", 1, kw, 1);
  // H and W first: then H + 2 ph cannot overflow
  check_elements(what, "the input (planes, N, H, W, words)", {planes, N, H, W, Cw});
  const int64_t Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
  const int64_t Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, what, ": input ", H, "x", W, " is too small for kernel ", kh, "x", kw, ": output ", Ho,
              "x", Wo);
  check_elements(what, "the padded input (planes, N, H + 2 ph, W + 2 pw, words)",
                 {planes, N, H + 2 * padding[0], W + 2 * padding[1], Cw});
  check_elements(what, "the output (N, O, Ho, Wo)", {N, O, Ho, Wo});
  check_elements(what, "the weights (O, kh, kw, words)", {O, kh, kw, Cw});
  return {Ho, Wo};
}

// K[n, 0, y, x] = (1 / (kh * kw)) * sum over the taps inside the image of A[n, 0, iy, ix]: XNOR-Net's K = A * k,
// conv2d of A with a box filter, zero padding counted as 0. Separable: per output row, the sums over the kernel's rows
// of each input column (contiguous, vectorised), then per output the sum of kw of them. kh + kw additions per output
// instead of kh * kw, and without the overhead of a one-channel oneDNN conv.
at::Tensor zoo_xnor_cpu::input_scale(const at::Tensor& absmean, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(
      absmean.dim() == 4 && absmean.size(1) == 1 && absmean.scalar_type() == at::kFloat && absmean.device().is_cpu(),
      "input_scale: expected a float32 CPU tensor (N, 1, H, W)");
  TORCH_CHECK(kernel_size.size() == 2, "input_scale: kernel_size must have 2 elements");
  const int64_t N = absmean.size(0), H = absmean.size(2), W = absmean.size(3);
  const int64_t kh = kernel_size[0], kw = kernel_size[1];
  const auto [Ho, Wo] = check_conv_geometry("input_scale", 1, N, H, W, 1, 1, kh, kw, stride, padding, dilation);
  const int64_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1], dh = dilation[0], dw = dilation[1];
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
  m.def("pack_signs(Tensor x, bool absmean, Tensor? scale, Tensor? shift, int variant=0) -> (Tensor, Tensor)");
  m.def("input_scale(Tensor absmean, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  m.def("pack_kbit_planes(Tensor x, int bits, Tensor? scale, Tensor? shift, int variant=0) -> Tensor");
  m.def("pack_variants() -> str[]", &pack_variants);
  m.def("pack_info() -> str", &pack_info);
}

TORCH_LIBRARY_IMPL(zoo_xnor_cpu, CPU, m) {
  m.impl("pack_signs", &zoo_xnor_cpu::pack_signs);
  m.impl("input_scale", &zoo_xnor_cpu::input_scale);
  m.impl("pack_kbit_planes", &zoo_xnor_cpu::pack_kbit_planes);
}
