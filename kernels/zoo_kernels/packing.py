"""Bit-packing of signs into int32 words: the storage format of every XNOR kernel in ``zoo_kernels``.

The packed format
-----------------
A float tensor is reduced to the signs of its values, one bit per value, 32 channels per ``torch.int32`` word::

    bit(v) = 1  if v >= 0      (sign(v) = +1; sign(0) = +1, and -0.0 >= 0 too)
    bit(v) = 0  if v <  0      (sign(v) = -1; NaN >= 0 is False, so NaN packs as -1)

    word[..., w] = sum_j bit(v[..., 32 * w + j]) << j     for j = 0 .. 31   (bit 0 = least significant bit)

so bit ``j`` of word ``w`` holds channel ``c = 32 * w + j`` and bit 31 is the sign bit of the int32 (a word whose
channel ``32 * w + 31`` is non-negative is a negative int32). ``Cw = ceil(C / 32)`` words hold ``C`` channels;
the ``32 * Cw - C`` bits past channel ``C - 1`` in the last word are padding and are 0 in activations and
weights alike, so they never contribute to ``popcount(a ^ w)``.

Layouts (channels innermost, so one pixel's or one filter tap's channels are ``Cw`` consecutive words)::

    activations  (N, C, H, W)     float  ->  (N, H, W, Cw)     int32   (NHWC words)
    weights      (O, C, kh, kw)   float  ->  (O, kh, kw, Cw)   int32

Algorithm (pure PyTorch, vectorised)
------------------------------------
``x >= 0`` gives a bool tensor; the channels, zero-padded to ``32 * Cw``, are viewed as ``(Cw * 4, 8)`` groups of
8 bits and each group is summed with the weights ``1, 2, 4, ..., 128`` into one byte (``uint8`` arithmetic, no
overflow: the sum is at most 255). The bytes are moved channels-last, so the 4 bytes of word ``w`` are
consecutive, and reinterpreted as one int32: on a little-endian machine byte ``b`` of the word holds bits
``8 * b .. 8 * b + 7``, which is exactly the bit order above, and the two's-complement wraparound of bit 31
comes for free. (On a big-endian machine the words are summed in int32 instead, with bit 31 weighted by
``-2**31``, which is the same two's-complement value and never overflows.)

The compiled CPU kernel (:mod:`zoo_kernels.cpu`) packs faster; these functions are the portable path, the
fallback, and the definition the tests check the compiled one against.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["WORD_BITS", "num_words", "pack_signs", "pack_weight_signs", "unpack_signs", "weight_scale"]

WORD_BITS = 32

_BYTE_BITS = torch.tensor([1 << j for j in range(8)], dtype=torch.uint8)
# Bit 31 weighted -2**31: the int32 sum of distinct powers is then the two's-complement word and never overflows.
_WORD_BITS_I32 = torch.tensor([1 << j for j in range(31)] + [-(1 << 31)], dtype=torch.int32)


def num_words(channels: int) -> int:
    """``Cw = ceil(C / 32)``: the int32 words that hold ``C`` channels."""
    return (channels + WORD_BITS - 1) // WORD_BITS


def _check_float_4d(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{what} must be 4D, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")


def _pack_channels(x: torch.Tensor) -> torch.Tensor:
    """(A, C, B, D) float -> (A, B, D, Cw) int32, channel ``c`` in bit ``c % 32`` of word ``c // 32``."""
    a, c, b, d = x.shape
    cw = num_words(c)
    bits = x >= 0
    if cw * WORD_BITS != c:
        bits = torch.cat([bits, bits.new_zeros(a, cw * WORD_BITS - c, b, d)], dim=1)
    if sys.byteorder == "little":
        groups = bits.reshape(a, cw * 4, 8, b, d).to(torch.uint8)
        byte_weights = _BYTE_BITS.to(x.device).view(1, 1, 8, 1, 1)
        packed_bytes = (groups * byte_weights).sum(dim=2, dtype=torch.uint8)  # (A, Cw * 4, B, D)
        words = torch.empty((a, b, d, cw * 4), dtype=torch.uint8, device=x.device)  # fresh strides, see view()
        words.copy_(packed_bytes.permute(0, 2, 3, 1))
        return words.view(torch.int32)  # 4 consecutive bytes -> 1 word
    groups = bits.reshape(a, cw, WORD_BITS, b, d).permute(0, 3, 4, 1, 2).to(torch.int32)
    return (groups * _WORD_BITS_I32.to(x.device)).sum(dim=-1, dtype=torch.int32)


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """Pack the signs of activations: ``(N, C, H, W)`` float -> ``(N, H, W, ceil(C / 32))`` int32.

    ``out[n, h, w, k]`` has bit ``j`` set iff ``x[n, 32 * k + j, h, w] >= 0``; padding bits are 0. Any memory
    layout of ``x`` is accepted (contiguous, channels_last, sliced). See the module docstring for the format.
    """
    _check_float_4d(x, "pack_signs: x")
    return _pack_channels(x)


def pack_weight_signs(w: torch.Tensor) -> torch.Tensor:
    """Pack the signs of conv weights: ``(O, C, kh, kw)`` float -> ``(O, kh, kw, ceil(C / 32))`` int32.

    ``out[o, i, j, k]`` has bit ``b`` set iff ``w[o, 32 * k + b, i, j] >= 0``; padding bits are 0.
    """
    _check_float_4d(w, "pack_weight_signs: w")
    return _pack_channels(w)


def unpack_signs(packed: torch.Tensor, channels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of :func:`pack_signs` / :func:`pack_weight_signs`: ``(A, B, D, Cw)`` int32 -> ``(A, C, B, D)`` of ±1.

    ``out[a, c, b, d] = +1 if bit (c % 32) of packed[a, b, d, c // 32] is set else -1``. Padding bits are ignored.
    """
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.int32 or packed.dim() != 4:
        raise TypeError("unpack_signs: packed must be a 4D torch.int32 tensor (A, B, D, Cw)")
    cw = packed.shape[-1]
    if not 0 < channels <= cw * WORD_BITS or num_words(channels) != cw:
        raise ValueError(f"unpack_signs: {channels} channels do not fit exactly {cw} words of 32 bits")
    shifts = torch.arange(WORD_BITS, dtype=torch.int32, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1  # arithmetic shift; the & 1 keeps only bit j
    bits = bits.flatten(-2)[..., :channels]  # (A, B, D, C)
    signs = bits.to(dtype) * 2 - 1
    return signs.permute(0, 3, 1, 2).contiguous()


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """``alpha[o] = mean |W[o]|`` over ``(C, kh, kw)`` (XNOR-Net eq. 6), float32, shape ``(O,)``.

    Accumulated in float64 like ``zoo.quantizers.filter_scale``.
    """
    _check_float_4d(w, "weight_scale: w")
    return w.detach().abs().mean(dim=(1, 2, 3), dtype=torch.float64).float()
