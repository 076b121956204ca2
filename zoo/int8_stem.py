"""The int8 form of a packed model's float stem conv (``PackedResNet.stem_dtype = torch.int8``).

The stem (ResNet's 7x7 conv, 3 -> 64 channels) is the largest float layer left in a packed binary network: at batch
16 on an AVX-512 BF16 CPU it takes a third of packed ResNet-18's time in bfloat16, and far more in float32 on an
AVX2-only CPU. As int8 it runs on oneDNN's u8 x s8 conv (AMX, AVX512-VNNI, AVX-VNNI or AVX2), as torchao's PT2E route
would run it:

- activations: uint8 levels ``q = clamp(round(x / s) + z, 0, 255)`` over a fixed range ``[lo, hi]`` of the input,
  ``s = (hi - lo) / 255`` and ``z = round(-lo / s)``; by default the range of images in [0, 1] after the model's own
  normalisation (``pretrained_cfg`` mean and std), so no calibration data is needed and no input of that range clips;
- weights: the stem's conv with its BatchNorm folded, int8 per output channel, ``w_q = round(w / s_w)``,
  ``s_w[o] = max |w[o]| / 127``; the bias stays float32;
- output: float (bfloat16 where the CPU has native bfloat16, else float32), as the float stem's.

Not exact: the input rounds to 256 levels (about 0.4% of its range) and each weight to 255 levels of its filter's
range, so the stem's outputs move by about 1% of their scale, and a sign next to 0 in the first binary conv can flip;
the accuracy this costs on the digits cards is in ``docs/results-digits.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from zoo_kernels.cpu import quantize_u8_cpu
from zoo_kernels.int8_route import int8_route_available

__all__ = ["Int8Stem", "input_levels", "prepack", "quantize", "conv2d", "normalized_range", "available"]


class Int8Stem(NamedTuple):
    """A stem conv's prepacked int8 weights (oneDNN's layout), their per-channel scales and zero points, the float32
    bias, and the activations' scale and zero point."""

    weight: torch.Tensor
    w_scales: torch.Tensor
    w_zeros: torch.Tensor
    bias: torch.Tensor
    x_scale: float
    x_zero: int


def available() -> bool:
    """Whether torch has oneDNN's int8 conv here."""
    return int8_route_available()


def normalized_range(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[float, float]:
    """The range of images in [0, 1] after ``(x - mean) / std``, over all channels."""
    if len(mean) != len(std) or not mean or any(s <= 0 for s in std):
        raise ValueError(f"int8 stem: mean {mean} and std {std} must be non-empty, of one length, std > 0")
    lo = min((0.0 - m) / s for m, s in zip(mean, std, strict=True))
    hi = max((1.0 - m) / s for m, s in zip(mean, std, strict=True))
    return lo, hi


def input_levels(lo: float, hi: float) -> tuple[float, int]:
    """``(scale, zero_point)`` of uint8 levels spanning ``[lo, hi]`` (``lo < hi``; 0 inside the range, so that the
    conv's zero padding is exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not hi > lo:
        raise ValueError(f"int8 stem: the input range [{lo}, {hi}] is empty")
    scale = (hi - lo) / 255.0
    return scale, min(255, max(0, round(-lo / scale)))


def prepack(weight: torch.Tensor, bias: torch.Tensor | None, lo: float, hi: float, stride, padding, dilation,
            groups: int) -> Int8Stem:
    """A float conv's weights (O, C, kh, kw) and bias as an :class:`Int8Stem` for inputs in ``[lo, hi]``."""
    x_scale, x_zero = input_levels(lo, hi)
    w = weight.detach().float()
    w_scales = (w.abs().amax(dim=(1, 2, 3)) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    w_q = (w / w_scales.view(-1, 1, 1, 1)).round_().clamp_(-127, 127).to(torch.int8)
    packed = torch.ops.onednn.qconv_prepack(w_q.contiguous(memory_format=torch.channels_last), w_scales, x_scale,
                                            x_zero, list(stride), list(padding), list(dilation), groups, None)
    b = torch.zeros(w.shape[0]) if bias is None else bias.detach().float()
    return Int8Stem(packed, w_scales, torch.zeros(w.shape[0], dtype=torch.int64), b.contiguous(), x_scale, x_zero)


def quantize(x: torch.Tensor, stem: Int8Stem) -> torch.Tensor:
    """``x``'s uint8 levels (channels_last), clamped to the range (:func:`zoo_kernels.cpu.quantize_u8_cpu`)."""
    return quantize_u8_cpu(x.float(), stem.x_scale, stem.x_zero)


def conv2d(q: torch.Tensor, stem: Int8Stem, stride, padding, dilation, groups: int,
           out_dtype: torch.dtype) -> torch.Tensor:
    """The conv of the levels ``q`` in ``out_dtype`` (float32 or bfloat16), channels_last."""
    return torch.ops.onednn.qconv2d_pointwise(q, stem.x_scale, stem.x_zero, stem.weight, stem.w_scales, stem.w_zeros,
                                              stem.bias, list(stride), list(padding), list(dilation), groups, 1.0, 0,
                                              out_dtype, "none", [], "")
