"""The int8 matrix-engine route of the XNOR conv: oneDNN's u8 x s8 quantized conv, exact.

An XNOR conv is exactly a standard int8 quantized convolution. Quantize the conv's input ``y`` to a level ``L`` in
``{0, ..., n}``, ``n = 2^bits - 1`` (one bit: ``L = [y >= 0]``; k bits: XNOR-Net's k-bit level, see
:mod:`zoo_kernels.kbit`) and store the byte ``q = 2 L``. With activation scale ``1 / n`` and zero point ``n``,
``(q - n) / n = (2 L - n) / n`` is the quantized value: ``sign(y)`` for one bit, ``q_k(y)`` for k. The weights are
int8 ``+-1`` (the signs of the packed bits) with per-output-channel scale ``alpha``. The int32 accumulation of
``(q - n) * w`` is then ``n`` times the XNOR conv's integer sum, exactly, and zero padding (``q = n``) stays 0, as
the popcount kernels count it. So::

    out[n, o, y, x] = alpha[o] * int[n, o, y, x] * K[n, y, x] + bias[o]     (+ residual, ReLU)

where oneDNN computes ``alpha[o] * int`` (its float32 output, dequantized with ``alpha[o] * (1 / n)``), and XNOR-Net's
per-pixel input scale ``K`` (not a per-channel scale oneDNN could fold) is applied with the bias, residual and ReLU in
one pass over that output (``zoo_xnor_cpu::scale_epilogue``). Without ``K`` oneDNN adds the bias and applies the
ReLU itself.

oneDNN (``torch.ops.onednn.qconv_prepack`` / ``qconv2d_pointwise``, the ops torchao's PT2E x86 route lowers to)
dispatches this conv to AMX-INT8 tiles where the CPU has them, else AVX512-VNNI, AVX-VNNI or AVX2: on AMX the int8
engine does 1,024 multiply-adds per cycle and core, three times the binary products VPOPCNTQ manages, which makes this
route the fast one there (:mod:`zoo_kernels.routes` decides by measurement). The input bytes are one pass over the
activation (``zoo_xnor_cpu::level_bytes``: the fused BatchNorm, the levels and ``mean_c |y|`` for ``K``). The int8
weights are re-laid out by oneDNN once per weight tensor and input shape and cached here, keyed by the packed
tensor's address, shape, strides and the fingerprint of its words (:func:`zoo_kernels.cpu.fingerprint`: any change of
the weights is seen, also a write through ``.data`` that the version counter misses; a freed tensor's entries are
dropped).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from . import cpu
from .geometry import conv_output_size
from .packing import unpack_signs

__all__ = ["int8_route_available", "int8_conv2d", "int8_conv2d_levels", "int8_conv_exact_for", "int8_linear",
           "cached_int8_weights"]

_MAX_SHAPES = 8  # (settings, input shape) pairs per weight whose oneDNN layout is kept (batch sizes in use, typically
# one or two)


@functools.cache
def int8_route_available() -> bool:
    """Whether torch has oneDNN's quantized conv and linear on this CPU (x86-64 builds with mkldnn) and the compiled
    passes around them (:mod:`zoo_kernels.cpu`)."""
    onednn = getattr(torch.ops, "onednn", None)
    have_ops = all(hasattr(onednn, name) for name in ("qconv_prepack", "qconv2d_pointwise", "qlinear_prepack",
                                                       "qlinear_pointwise"))
    return bool(torch.backends.mkldnn.is_available() and have_ops and cpu.load_extension())


class _WeightCache:
    """oneDNN layouts of int8 weights, per packed weight tensor: ``{id: (ref, contents, {(key, shape): packed})}``,
    ``contents`` the tensor's address, fingerprint, shape and strides (a change drops the tensor's layouts), ``key``
    the conv's settings (one weight tensor may serve several, e.g. 1- and 2-bit inputs in ``zoo bench``: each keeps
    its layouts) and ``shape`` the input's."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, tuple, dict[tuple, Tensor]]] = {}
        self._lock = threading.Lock()

    def get(self, w_packed: Tensor, key: tuple, shape: tuple, build) -> Tensor:
        ident = id(w_packed)
        contents = (w_packed.data_ptr(), cpu.fingerprint(w_packed), tuple(w_packed.shape), tuple(w_packed.stride()))
        with self._lock:
            entry = self._entries.get(ident)
            if entry is None or entry[0]() is not w_packed or entry[1] != contents:
                entry = (weakref.ref(w_packed, functools.partial(self._drop, ident)), contents, {})
                self._entries[ident] = entry
            layouts = entry[2]
            packed = layouts.get((key, shape))
        if packed is None:
            packed = build()
            with self._lock:
                if len(layouts) >= _MAX_SHAPES:
                    layouts.pop(next(iter(layouts)))
                layouts[key, shape] = packed
        return packed

    def _drop(self, ident: int, _ref: weakref.ref) -> None:
        with self._lock:
            entry = self._entries.get(ident)
            if entry is not None and entry[0] is _ref:
                del self._entries[ident]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(e[2]) for e in self._entries.values())


_CACHE = _WeightCache()


def cached_int8_weights() -> int:
    """How many oneDNN weight layouts the int8 route holds (one per weight tensor and input shape)."""
    return len(_CACHE)


def int8_conv_exact_for(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                        padding: Sequence[int], dilation: Sequence[int]) -> bool:
    """Whether oneDNN's int8 conv gives exact sums for this geometry: not where an output dimension is 1 with a
    stride > 1 along it (found by the fuzz tests: on torch's oneDNN, an output one column wide with a column stride
    of 5 had 3 of its 5 sums wrong). The route choice offers the int8 route only where this holds."""
    for s, k, st, p, d in zip(size, kernel_size, stride, padding, dilation, strict=True):
        if st > 1 and conv_output_size(s, k, st, p, d) == 1:
            return False
    return True


def _sign_weights(w_packed: Tensor, channels: int) -> Tensor:
    """The packed sign bits as int8 ``+-1`` (O, C, kh, kw), channels_last."""
    signs = unpack_signs(w_packed, channels, dtype=torch.int8)
    return signs.contiguous(memory_format=torch.channels_last)


def _levels(bits: int) -> int:
    return (1 << bits) - 1


def int8_conv2d(
    x: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    bits: int = 1,
    input_scale: Tensor | None = None,
    bias: Tensor | None = None,
    norm_scale: Tensor | None = None,
    norm_shift: Tensor | None = None,
    residual: Tensor | None = None,
    relu: bool = False,
) -> Tensor:
    """The XNOR conv (``bits`` = 1) or the conv of k-bit inputs of a float32 CPU input on oneDNN's int8 conv.

    Arguments checked by the caller (:func:`zoo_kernels.ops.xnor_conv2d` / ``kbit_conv2d``): ``x`` (N, C, H, W)
    float32 (channels_last is read without a copy), ``w_packed`` (O, kh, kw, Cw), ``alpha`` / ``bias`` (O,) float32,
    ``input_scale`` the box filter ``K`` to compute from ``mean_c |y|`` (a ``(kh, kw)`` pair), or None. ``alpha``
    is the conv's ``alpha`` already divided by nothing: for k bits the ``1 / n`` of ``q_k`` is oneDNN's activation
    scale. Returns float32 (N, O, Ho, Wo) in channels_last memory.
    """
    kh, kw = w_packed.shape[1], w_packed.shape[2]
    if x.shape[2] == x.shape[3] == kh == kw == 1 and not any(padding) and residual is None and not relu:
        # a fully connected layer (PackedBinaryLinear's 1x1 conv of a 1x1 image): oneDNN's int8 linear
        y = int8_linear(x.flatten(1), w_packed, alpha, channels, bits, input_scale is not None, bias, norm_scale,
                        norm_shift)
        return y[:, :, None, None]
    q, absmean = cpu.level_bytes_cpu(x, bits, input_scale is not None, norm_scale, norm_shift)
    return int8_conv2d_levels(q, absmean, w_packed, alpha, channels, stride, padding, dilation, bits, input_scale,
                              bias, residual, relu)


def int8_conv2d_levels(
    q: Tensor,
    absmean: Tensor | None,
    w_packed: Tensor,
    alpha: Tensor,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    bits: int = 1,
    input_scale: Tensor | None = None,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    relu: bool = False,
    next_norm: tuple[Tensor, Tensor, int] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`int8_conv2d` from its input's level bytes ``q`` (uint8 (N, C, H, W) channels_last, and ``absmean``
    (N, 1, H, W) where ``input_scale``), as :func:`zoo_kernels.cpu.level_bytes_cpu` or an earlier conv's
    ``next_norm`` gives them. With ``next_norm = (scale, shift, next_bits)`` (and ``input_scale``, no residual, no
    ReLU) the output ``v`` is not returned but the next binary conv's input, the level bytes and mean ``|.|`` of
    ``v * scale[o] + shift[o]`` (:func:`zoo_kernels.cpu.scale_level_bytes_cpu`: the same values as the float output
    fed to ``level_bytes_cpu``, without writing it)."""
    n = _levels(bits)
    kh, kw = w_packed.shape[1], w_packed.shape[2]
    shape = tuple(q.shape)
    st, pd, dl = list(stride), list(padding), list(dilation)
    packed = _CACHE.get(
        w_packed, (channels, tuple(st), tuple(pd), tuple(dl), bits), shape,
        lambda: torch.ops.onednn.qconv_prepack(_sign_weights(w_packed, channels), torch.ones(w_packed.shape[0]),
                                               1.0 / n, n, st, pd, dl, 1, list(shape)))
    zero_points = torch.zeros(w_packed.shape[0], dtype=torch.int64)
    if input_scale is None:
        if next_norm is not None:
            raise ValueError("int8_conv2d_levels: next_norm needs input_scale (XNOR-Net's K)")
        fuse_relu = relu and residual is None
        out = torch.ops.onednn.qconv2d_pointwise(q, 1.0 / n, n, packed, alpha, zero_points, bias, st, pd, dl, 1, 1.0,
                                                 0, torch.float32, "relu" if fuse_relu else "none", [], "")
        if residual is None:
            return out
        return cpu.residual_relu(out, residual, relu)
    k = cpu.input_scale_cpu(absmean, (kh, kw), st, pd, dl)
    out = torch.ops.onednn.qconv2d_pointwise(q, 1.0 / n, n, packed, alpha, zero_points, None, st, pd, dl, 1, 1.0, 0,
                                             torch.float32, "none", [], "")
    if next_norm is not None:
        if residual is not None or relu:
            raise ValueError("int8_conv2d_levels: next_norm takes no residual or ReLU")
        return cpu.scale_level_bytes_cpu(out, k, bias, *next_norm)
    return cpu.scale_epilogue_cpu(out, k, bias, residual, relu)




def int8_linear(
    x: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    features: int,
    bits: int = 1,
    input_scale: bool = False,
    bias: Tensor | None = None,
    norm_scale: Tensor | None = None,
    norm_shift: Tensor | None = None,
) -> Tensor:
    """A packed binary linear layer (``w_packed`` (O, 1, 1, Fw)) of a float32 (N, F) input on oneDNN's int8 linear:
    ``alpha[o] * K[n] * sum_f q(y[n, f]) sign(w[o, f]) + bias[o]``, ``y = x * norm_scale + norm_shift`` (or ``x``),
    ``K = mean_f |y|`` when ``input_scale``."""
    n = _levels(bits)
    q, absmean = cpu.level_bytes_cpu(x[:, :, None, None], bits, input_scale, norm_scale, norm_shift)
    q = q.view(x.shape[0], features)
    packed = _CACHE.get(w_packed, ("linear", features, bits), (),
                        lambda: torch.ops.onednn.qlinear_prepack(
                            _sign_weights(w_packed, features).flatten(1).contiguous(), None))
    zero_points = torch.zeros(w_packed.shape[0], dtype=torch.int64)
    if not input_scale:
        return torch.ops.onednn.qlinear_pointwise(q, 1.0 / n, n, packed, alpha, zero_points, bias, 1.0, 0,
                                                  torch.float32, "none", [], "")
    out = torch.ops.onednn.qlinear_pointwise(q, 1.0 / n, n, packed, alpha, zero_points, None, 1.0, 0, torch.float32,
                                             "none", [], "")
    k = absmean.view(-1, 1)
    out = out * k
    return out if bias is None else out.add_(bias)
