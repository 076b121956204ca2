// Declarations shared by the CPU kernels' translation units (cpu_pack.cpp, cpu_popcount.cpp, cpu_fingerprint.cpp);
// see those files.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <tuple>
#include <utility>

namespace zoo_xnor_cpu {

// Signs of x (or of fma(x, scale[c], shift[c])) packed to (N, H, W, Cw) int32, and mean_c |.| (N, 1, H, W) if asked.
// variant: 0 (auto), else the ISA number of one of cpu_pack_ukernels.h's kPackVariants (1 scalar, 2 avx2, 4 avx512).
std::tuple<at::Tensor, at::Tensor> pack_signs(const at::Tensor& x, bool absmean, const std::optional<at::Tensor>& scale,
                                              const std::optional<at::Tensor>& shift, int64_t variant = 0);

// The sign planes of XNOR-Net's k-bit quantizer of x (or of fma(x, scale[c], shift[c])), packed to
// (bits, N, H, W, Cw) int32 (see kbit.py); variant as pack_signs.
at::Tensor pack_kbit_planes(const at::Tensor& x, int64_t bits, const std::optional<at::Tensor>& scale,
                            const std::optional<at::Tensor>& shift, int64_t variant = 0);

// The row kernel of the packing that pack_signs runs on a channels_last float32 input under auto (the forced ISA's,
// else the first that runs here): the signs and mean |.| of each row of C floats (cpu_pack_ukernels.h).
void (*pack_signs_rows_auto())(const float* x, int64_t pixels, int64_t C, const float* scale, const float* shift,
                               int32_t* out, float* absmean);

// The ISA that ZOO_KERNELS_ISA makes auto calls run (set_auto_isa; 0: none, 1 scalar, 2 avx2, 4 avx512).
int64_t forced_isa();

// XNOR-Net's K: absmean (N, 1, H, W) convolved with a kh x kw box of 1 / (kh * kw), zero padding counted as 0.
at::Tensor input_scale(const at::Tensor& absmean, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation);

// A conv's geometry, checked before anything is allocated or indexed (the limits of geometry.py): stride, dilation
// and kernel size in [1, 2^16], padding in [0, 2^16], a positive output, and at most 2^32 elements in each of the
// zero-padded input (planes * N * (H + 2 ph) * (W + 2 pw) * Cw words), the output (N * O * Ho * Wo) and the weights
// (O * kh * kw * Cw), empty dimensions counted as 1. Returns (Ho, Wo); a RuntimeError naming the argument otherwise.
std::pair<int64_t, int64_t> check_conv_geometry(const char* what, int64_t planes, int64_t N, int64_t H, int64_t W,
                                                int64_t Cw, int64_t O, int64_t kh, int64_t kw, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef dilation);

// A 64-bit fingerprint of a tensor's bytes (any dense layout as is, others made contiguous), for the weight caches.
uint64_t fingerprint_bytes(const void* data, size_t n);
uint64_t fingerprint_tensor(const at::Tensor& t);

}  // namespace zoo_xnor_cpu
