"""Exact integer reference of the bit-packed XNOR-popcount convolution (pure PyTorch, no float arithmetic).

What it computes
----------------
With ``a = x_packed`` (N, H, W, Cw) and ``w = w_packed`` (O, kh, kw, Cw) in the format of
:mod:`zoo_kernels.packing`, for every output ``(n, o, y, x)``::

    out[n, o, y, x] = sum over taps (ky, kx) with (iy, ix) inside the image of
                          C - 2 * popcount(a[n, iy, ix, :] ^ w[o, ky, kx, :])

    iy = y * sh - ph + ky * dh,     ix = x * sw - pw + kx * dw

For ±1 vectors of length ``C``, ``dot = (#equal) - (#different) = C - 2 * popcount(xor)``: the padding bits are
0 in both operands, so they never count as different. Taps on the zero padding are skipped (they contribute 0,
as zeros do in ``F.conv2d``); reading them as packed 0 words would wrongly count them as ``-1`` activations.
Hence ``out == F.conv2d(sign(x), sign(w), None, stride, padding, dilation)`` exactly, with ``sign(0) = +1``.

How
---
One tap at a time: the packed activations are zero-padded spatially, together with a 0/1 mask of which positions
are inside the image; the strided window of tap ``(ky, kx)`` gives ``a_tap`` (N, Ho, Wo, Cw); the xor against every
filter's words of that tap is (N, Ho, Wo, O, Cw); popcount is a 256-entry byte lookup table over the int32 words
viewed as bytes; ``C - 2 * popcount`` times the mask is accumulated in int64. Memory is ``O(N Ho Wo O Cw)``: this is
for tests and as a last-resort fallback, not for speed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .geometry import conv_output_size, conv_pair

__all__ = ["conv_output_size", "popcount32", "xnor_conv2d_reference"]

_BYTE_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def popcount32(words: torch.Tensor) -> torch.Tensor:
    """Number of set bits of each int32 word (int64 result), via a byte lookup table."""
    if words.dtype != torch.int32:
        raise TypeError(f"popcount32 expects int32 words, got {words.dtype}")
    if words.numel() == 0:  # (an empty tensor counts as contiguous whatever its strides: no byte view of it)
        return torch.zeros(words.shape, dtype=torch.int64, device=words.device)
    as_bytes = words.contiguous().view(torch.uint8).reshape(*words.shape, 4)
    return _BYTE_POPCOUNT.to(words.device)[as_bytes.long()].sum(dim=-1)


def xnor_conv2d_reference(
    x_packed: torch.Tensor,
    w_packed: torch.Tensor,
    channels: int,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Integer XNOR-popcount conv of packed signs: ``(N, H, W, Cw)`` x ``(O, kh, kw, Cw)`` -> ``(N, O, Ho, Wo)`` int64.

    Equal to ``F.conv2d(sign(x), sign(w), None, stride, padding, dilation)`` for ``x_packed = pack_signs(x)`` and
    ``w_packed = pack_weight_signs(w)`` (see the module docstring).
    """
    sh, sw = conv_pair(stride, "stride", "xnor_conv2d_reference")
    ph, pw = conv_pair(padding, "padding", "xnor_conv2d_reference")
    dh, dw = conv_pair(dilation, "dilation", "xnor_conv2d_reference")
    if x_packed.dtype != torch.int32 or w_packed.dtype != torch.int32 or x_packed.dim() != 4 or w_packed.dim() != 4:
        raise TypeError("xnor_conv2d_reference: x_packed and w_packed must be 4D torch.int32 tensors")
    n, h, w, cw = x_packed.shape
    o, kh, kw, wcw = w_packed.shape
    if cw != wcw or (channels + 31) // 32 != cw:
        raise ValueError(f"xnor_conv2d_reference: {channels} channels, activation words {cw}, weight words {wcw}")
    ho = conv_output_size(h, kh, sh, ph, dh)
    wo = conv_output_size(w, kw, sw, pw, dw)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"xnor_conv2d_reference: output size {ho}x{wo} is not positive")

    padded = torch.nn.functional.pad(x_packed, (0, 0, pw, pw, ph, ph))  # zero words around the image
    inside = torch.nn.functional.pad(torch.ones(h, w, dtype=torch.int64, device=x_packed.device), (pw, pw, ph, ph))
    out = torch.zeros(n, ho, wo, o, dtype=torch.int64, device=x_packed.device)
    for ky in range(kh):
        rows = slice(ky * dh, ky * dh + (ho - 1) * sh + 1, sh)
        for kx in range(kw):
            cols = slice(kx * dw, kx * dw + (wo - 1) * sw + 1, sw)
            a_tap = padded[:, rows, cols, :]  # (N, Ho, Wo, Cw)
            xor = a_tap.unsqueeze(3) ^ w_packed[:, ky, kx, :]  # (N, Ho, Wo, O, Cw)
            dot = channels - 2 * popcount32(xor).sum(dim=-1)  # (N, Ho, Wo, O)
            out += dot * inside[rows, cols].unsqueeze(-1)  # taps on the padding contribute 0
    return out.permute(0, 3, 1, 2).contiguous()
