// Declarations shared by the CPU kernels' translation units (cpu_pack.cpp, cpu_popcount.cpp); see those files.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace zoo_xnor_cpu {

// Signs of x (or of fma(x, scale[c], shift[c])) packed to (N, H, W, Cw) int32, and mean_c |.| (N, 1, H, W) if asked.
std::tuple<at::Tensor, at::Tensor> pack_signs(const at::Tensor& x, bool absmean, const std::optional<at::Tensor>& scale,
                                              const std::optional<at::Tensor>& shift);

// The sign planes of XNOR-Net's k-bit quantizer of x (or of fma(x, scale[c], shift[c])), packed to
// (bits, N, H, W, Cw) int32 (see kbit.py).
at::Tensor pack_kbit_planes(const at::Tensor& x, int64_t bits, const std::optional<at::Tensor>& scale,
                            const std::optional<at::Tensor>& shift);

// XNOR-Net's K: absmean (N, 1, H, W) convolved with a kh x kw box of 1 / (kh * kw), zero padding counted as 0.
at::Tensor input_scale(const at::Tensor& absmean, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation);

}  // namespace zoo_xnor_cpu
