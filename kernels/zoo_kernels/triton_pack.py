"""Triton sign packing: the GPU kernels of ``zoo_xnor::pack_signs`` and ``zoo_xnor::pack_signs_absmean``.

What it computes (the format of :mod:`zoo_kernels.packing`)::

    y[n, c, h, w]        = x[n, c, h, w] * scale[c] + shift[c]       (an inference BatchNorm; or y = x)
    words[n, h, w, k]    = sum_j [y[n, 32k + j, h, w] >= 0] << j     (j = 0 .. 31, channels past C give 0)
    absmean[n, 0, h, w]  = mean_c |y[n, c, h, w]|                    (float32; pack_signs_absmean only)

in one pass over ``x``: the activation packing that runs in front of every binary conv (XNOR-Net's sign and the
``A = mean_c |I|`` of its input scale ``K``), instead of the several PyTorch kernels of the portable path.

A program owns ``BLOCK_P`` pixels ``p = (n * H + h) * W + w`` and walks the ``Cw`` words: each step loads the
(32, BLOCK_P) tile of channels ``32k .. 32k + 31`` of its pixels (any strides: NCHW puts consecutive pixels in
consecutive addresses, so the loads along the pixel axis coalesce), compares it with 0 and sums the bit weights
``1 << j`` over the channel axis. Bit 31's weight is ``-2**31`` in int32, so the sum of distinct weights is the
two's-complement word and never overflows. The comparison is made in the input's dtype (``-1e-300`` in float64
packs as -1, as in the other kernels); NaN packs as -1 (``NaN >= 0`` is False) and makes ``absmean`` NaN.

Pure ``tl`` (no libdevice, no inline asm), so Triton's interpreter runs it on CPU tensors for the tests
(``TRITON_INTERPRET=1`` set before import; one program at a time in numpy, slow, with large blocks there).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from .packing import num_words

__all__ = ["pack_signs_absmean_triton", "pack_signs_triton"]

_UNSPECIALIZED = ("P", "C", "Cw", "H", "W", "sx_n", "sx_c", "sx_h", "sx_w")
GPU_BLOCK_P = 128  # pixels per program on the GPU (the interpreter takes larger blocks)


@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _pack_signs_kernel(
    x_ptr, scale_ptr, shift_ptr, words_ptr, absmean_ptr,
    P, C, Cw, H, W,  # P = N * H * W pixels, C channels in Cw words
    sx_n, sx_c, sx_h, sx_w,  # strides of x, in elements; words (N, H, W, Cw) and absmean (N, 1, H, W) are contiguous
    HAS_AFFINE: tl.constexpr, ABSMEAN: tl.constexpr, BLOCK_P: tl.constexpr,
):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < P
    w = p % W
    h = (p // W) % H
    n = (p // W) // H
    x_pix = x_ptr + n.to(tl.int64) * sx_n + h * sx_h + w * sx_w  # (BLOCK_P,)
    j = tl.arange(0, 32)
    weight = tl.full((32,), 1, tl.int32) << j  # 1 << 31 is -2**31 in int32
    total = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for k in range(0, Cw):
        c = 32 * k + j
        c_ok = c < C
        y = tl.load(x_pix[None, :] + c.to(tl.int64)[:, None] * sx_c, mask=c_ok[:, None] & p_ok[None, :], other=0)
        if HAS_AFFINE:
            sc = tl.load(scale_ptr + c, mask=c_ok, other=0.0).to(y.dtype)
            sh = tl.load(shift_ptr + c, mask=c_ok, other=0.0).to(y.dtype)
            y = y * sc[:, None] + sh[:, None]
        bits = tl.where((y >= 0) & c_ok[:, None], weight[:, None], 0)
        word = tl.sum(bits, axis=0)
        tl.store(words_ptr + p.to(tl.int64) * Cw + k, word, mask=p_ok)
        if ABSMEAN:
            total += tl.sum(tl.where(c_ok[:, None], tl.abs(y.to(tl.float32)), 0.0), axis=0)
    if ABSMEAN:
        tl.store(absmean_ptr + p, total / C, mask=p_ok)


# Under the interpreter @triton.jit returns an InterpretedFunction rather than a JITFunction.
INTERPRETED = not isinstance(_pack_signs_kernel, triton.runtime.JITFunction)


def _launch(x: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None,
            absmean: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if x.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"pack_signs_triton: tensors on {x.device} need Triton's interpreter, but this module was imported with "
            "the kernel compiled for the GPU; set TRITON_INTERPRET=1 before importing zoo_kernels.triton_pack"
        )
    n, c, h, w = x.shape
    cw = num_words(c)
    words = torch.empty((n, h, w, cw), dtype=torch.int32, device=x.device)
    mean = torch.empty((n, 1, h, w), dtype=torch.float32, device=x.device) if absmean else None
    p = n * h * w
    if p == 0 or c == 0:
        if mean is not None:
            mean.fill_(float("nan"))  # the mean of no channels, as torch.mean
        return words.zero_(), mean
    block_p = max(16, min(triton.next_power_of_2(p), 2048)) if INTERPRETED else GPU_BLOCK_P
    affine = scale is not None
    args = (x, scale.contiguous() if affine else x, shift.contiguous() if affine else x, words,
            mean if mean is not None else words, p, c, cw, h, w, *x.stride())
    with torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext():
        _pack_signs_kernel[(triton.cdiv(p, block_p),)](*args, HAS_AFFINE=affine, ABSMEAN=absmean, BLOCK_P=block_p)
    return words, mean


def pack_signs_triton(x: torch.Tensor, scale: torch.Tensor | None = None,
                      shift: torch.Tensor | None = None) -> torch.Tensor:
    """``zoo_xnor::pack_signs`` in Triton: ``(N, C, H, W)`` float (any strides, any float dtype) -> ``(N, H, W, Cw)``
    int32 words of ``x * scale[c] + shift[c] >= 0`` (of ``x >= 0`` without ``scale`` / ``shift``)."""
    return _launch(x, scale, shift, absmean=False)[0]


def pack_signs_absmean_triton(x: torch.Tensor, scale: torch.Tensor | None = None,
                              shift: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``zoo_xnor::pack_signs_absmean`` in Triton: the words of :func:`pack_signs_triton` and ``mean_c |y|``
    (N, 1, H, W) float32, in the same pass over ``x``."""
    words, mean = _launch(x, scale, shift, absmean=True)
    return words, mean
