"""k-bit activations as sums of sign planes, so that a conv of k-bit inputs with sign weights runs on XNOR-popcount.

XNOR-Net's k-bit quantizer (sec. 3.2; :func:`zoo.quantizers.kbit_quantize`) maps an input ``y`` to one of
``n = 2^k - 1`` steps of [-1, 1]::

    L      = floor(n * (clip(y, -1, 1) + 1) / 2 + 1/2)          in {0, 1, ..., n}      (the level)
    q_k(y) = 2 * (L / n - 1/2) = (2 L - n) / n

Write the level in binary, ``L = sum_b 2^b L_b`` (b = 0 .. k-1, bits ``L_b`` in {0, 1}). Since ``n = sum_b 2^b``,
``2 L - n = sum_b 2^b (2 L_b - 1)``, so

    q_k(y) = sum_b (2^b / n) * s_b,       s_b = 2 L_b - 1  in {-1, +1}                 (sign plane b)

and, the conv being linear, ``conv(q_k(y), sign(W)) = sum_b (2^b / n) * conv(s_b, sign(W))``: k XNOR-popcount convs
of the packed planes, exact integers each, combined with the weights ``2^b / n`` in the epilogue's ``alpha``. Zero
padding stays zero in every plane's conv (the kernels count padded taps as 0, not -1), which is what ``F.conv2d``
does with the padded ``q``. With k = 1 the single plane is ``sign(y)``.

A NaN input has no level; it is given level 0 here (every plane -1, ``q = -1``), a defined result rather than the
undefined float-to-int conversion of NaN.

This module is the definition in pure PyTorch (the portable path, and the reference the compiled kernel is tested
against); ``zoo_xnor::pack_kbit_planes`` (:mod:`zoo_kernels.ops`) is the op.
"""

from __future__ import annotations

import torch

from .geometry import is_int
from .packing import pack_signs

__all__ = ["MAX_BITS", "check_bits", "kbit_levels", "kbit_plane_weights", "pack_kbit_planes"]

MAX_BITS = 16  # levels up to 65535: exact in float32, and more than any k-bit network uses


def check_bits(bits: int, what: str = "kbit") -> int:
    """``bits`` as an ``int``; a ValueError naming ``what`` unless it is an integer (Python or numpy, not a bool)
    from 1 to :data:`MAX_BITS`."""
    if not is_int(bits) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"{what}: bits must be an integer from 1 to {MAX_BITS}, got {bits!r}")
    return int(bits)


def kbit_levels(y: torch.Tensor, bits: int) -> torch.Tensor:
    """The level ``L`` of each value (int32, same shape), with the arithmetic of ``kbit_quantize`` in ``y``'s
    dtype, so that ``(2 L - n) / n`` is exactly its ``q_k(y)``; NaN gets level 0."""
    check_bits(bits)
    n = 2**bits - 1
    level = torch.floor(n * (y.clamp(-1.0, 1.0) + 1.0) / 2.0 + 0.5)
    return torch.nan_to_num(level, nan=0.0).to(torch.int32)


def kbit_plane_weights(bits: int) -> list[float]:
    """``2^b / (2^k - 1)`` for each plane ``b``: ``q_k = sum_b weight_b * s_b``."""
    check_bits(bits)
    return [2.0**b / (2**bits - 1) for b in range(bits)]


def pack_kbit_planes(y: torch.Tensor, bits: int) -> torch.Tensor:
    """The sign planes ``s_b`` of ``q_k(y)``, packed: ``(N, C, H, W)`` float -> ``(bits, N, H, W, ceil(C / 32))``
    int32, plane ``b`` in the format of :mod:`zoo_kernels.packing` (bit 1 where ``L_b = 1``, i.e. ``s_b = +1``)."""
    level = kbit_levels(y, bits)
    # bit b of the level as a float that is >= 0 exactly where it is 1: 0.5 or -0.5
    return torch.stack([pack_signs(((level >> b) & 1).float() - 0.5) for b in range(bits)])
