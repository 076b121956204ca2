"""``torch.library`` ops of the packed XNOR convolution (namespace ``zoo_xnor``), and the float-input entry point.

Ops (inference only: no autograd formula is registered)::

    zoo_xnor::pack_signs(Tensor x, Tensor? scale=None, Tensor? shift=None) -> Tensor
        (N, C, H, W) float -> (N, H, W, ceil(C / 32)) int32, bit j of word k = [y[:, 32k + j] >= 0], where
        y = x * scale[c] + shift[c] (an inference BatchNorm in front of the sign, fused) or y = x
    zoo_xnor::pack_signs_absmean(Tensor x, Tensor? scale=None, Tensor? shift=None) -> (Tensor, Tensor)
        the same words, plus A = mean_c |y|, (N, 1, H, W) float32, in the same pass over x
    zoo_xnor::input_scale(Tensor absmean, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation)
        -> Tensor
        XNOR-Net's K = A * k: conv2d(A, box of 1 / (kh * kw)), zero padding counted as 0, (N, 1, Ho, Wo) float32
    zoo_xnor::xnor_conv2d(Tensor x_packed, Tensor w_packed, Tensor alpha, Tensor? scale, Tensor? bias,
                          int channels, int[2] stride, int[2] padding, int[2] dilation) -> Tensor
        out[n, o, y, x] = alpha[o] * scale[n, 0, y, x] * int[n, o, y, x] + bias[o]     (float32, N, O, Ho, Wo;
                                                                  channels_last memory on CPU)
        int = sum over the taps inside the image of (C - 2 * popcount(a ^ w)) = conv2d(sign(x), sign(w)) exactly

    zoo_xnor::pack_kbit_planes(Tensor x, int bits, Tensor? scale=None, Tensor? shift=None) -> Tensor
        (N, C, H, W) float -> (bits, N, H, W, ceil(C / 32)) int32: the sign planes of XNOR-Net's k-bit quantizer
        q_k(y) = sum_b 2^b / (2^k - 1) * s_b (see :mod:`zoo_kernels.kbit`), each packed as pack_signs packs

The packed format is documented in :mod:`zoo_kernels.packing`; the integer conv in :mod:`zoo_kernels.reference`.
Every op has a fake (meta) implementation, so they trace under ``torch.compile`` and ``torch.export``. Ops and
wrappers check their geometry first (:mod:`zoo_kernels.geometry`: integers in ranges that keep the kernels' indices
and buffers inside int64), with a TypeError or ValueError naming the argument and its value.

Per-device kernels: the ops' implementation (registered for the CPU and CUDA dispatch keys) looks the kernel up
by the input's device type. The CPU kernels (compiled, :mod:`zoo_kernels.cpu`, with the pure-PyTorch fallback) are
registered below, and, when triton is installed, the Triton ``xnor_conv2d`` (:mod:`zoo_kernels.triton_xnor`) and
``pack_signs`` / ``pack_signs_absmean`` (:mod:`zoo_kernels.triton_pack`) for CUDA, each imported on its first call;
another device plugs in with::

    register_device_kernel("xnor_conv2d", "xpu", my_xnor_conv2d)   # same arguments as the op

(a device type other than cpu / cuda also gets the dispatch key registered). Without a kernel of their own,
``pack_signs``, ``pack_signs_absmean`` and ``input_scale`` run pure PyTorch and ``xnor_conv2d`` raises
``NotImplementedError`` naming the device. :func:`has_kernel` asks whether a device has a kernel;
:func:`use_kernel` swaps one in for a ``with`` block (e.g. the Triton kernel on CPU tensors under its interpreter).

:func:`xnor_conv2d` is the float-input form used at inference: it packs the activations, computes XNOR-Net's input
scale ``K = conv2d(mean_c |x|, 1 / (kh kw))`` (box filter, same stride / padding / dilation, zero padding counted
as 0) when asked, and calls the op. :func:`kbit_conv2d` is the same for k-bit inputs: one popcount conv per sign
plane, combined in the epilogues' ``alpha``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from . import cpu, routes
from .cpu import residual_relu as _residual_relu
from .geometry import MAX_ELEMENTS, MAX_GEOMETRY, check_conv_sizes, check_int, conv_pair
from .input_scale import box_filter
from .kbit import check_bits, kbit_plane_weights
from .kbit import pack_kbit_planes as _pack_kbit_planes_torch
from .packing import num_words
from .packing import pack_signs as _pack_signs_torch

__all__ = [
    "NAMESPACE",
    "has_kernel",
    "kbit_conv2d",
    "pack_kbit_planes",
    "pack_signs",
    "pack_signs_absmean",
    "prebound_conv2d",
    "prebound_usable",
    "register_device_kernel",
    "use_kernel",
    "xnor_conv2d",
    "xnor_input_scale",
    "xnor_conv2d_packed",
]

NAMESPACE = "zoo_xnor"

# {op name: {device type: kernel}}; the op's implementation looks the input's device type up here.
_KERNELS: dict[str, dict[str, Callable[..., object]]] = {
    "pack_signs": {},
    "pack_signs_absmean": {},
    "input_scale": {},
    "xnor_conv2d": {},
    "pack_kbit_planes": {},
}


def register_device_kernel(op: str, device_type: str, fn: Callable[..., object]) -> None:
    """Use ``fn`` for ``zoo_xnor::<op>`` on tensors of ``device_type`` ("cpu", "cuda", ...).

    ``fn`` takes the op's arguments (see the module docstring) and returns what the op returns; it may assume that
    the arguments were validated (shapes, dtypes, one device).
    """
    if op not in _KERNELS:
        raise ValueError(f"unknown op {op!r}; expected one of {sorted(_KERNELS)}")
    device_type = torch.device(device_type).type
    _register_dispatch_key(device_type.upper())  # e.g. "xpu" -> "XPU"; CPU and CUDA are registered already
    _KERNELS[op][device_type] = fn


def has_kernel(op: str, device_type: str) -> bool:
    """Whether ``zoo_xnor::<op>`` has a kernel for tensors of ``device_type`` (else it runs pure PyTorch or, for
    ``xnor_conv2d``, raises ``NotImplementedError``)."""
    if op not in _KERNELS:
        raise ValueError(f"unknown op {op!r}; expected one of {sorted(_KERNELS)}")
    return torch.device(device_type).type in _KERNELS[op]


@contextlib.contextmanager
def use_kernel(op: str, device_type: str, fn: Callable[..., object]) -> Iterator[None]:
    """Route ``zoo_xnor::<op>`` on ``device_type`` to ``fn`` inside the ``with`` block, then restore the previous
    kernel (or none). Process-wide, not thread-local; e.g. the Triton kernel on CPU tensors under its interpreter::

        with use_kernel("xnor_conv2d", "cpu", zoo_kernels.triton_xnor.xnor_conv2d_triton): ...
    """
    device_type = torch.device(device_type).type
    missing = object()
    previous = _KERNELS.get(op, {}).get(device_type, missing)
    register_device_kernel(op, device_type, fn)
    try:
        yield
    finally:
        if previous is missing:
            del _KERNELS[op][device_type]
        else:
            _KERNELS[op][device_type] = previous


def _geometry(what: str, **pairs: int | Sequence[int]) -> list[list[int]]:
    """Each of ``kernel_size`` / ``stride`` / ``padding`` / ``dilation`` given as an int or a pair, as a checked
    pair (see :mod:`zoo_kernels.geometry`), in the order given."""
    return [conv_pair(v, name, what) for name, v in pairs.items()]


def _check_float_input(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{what}: expected a 4D (N, C, H, W) input, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{what}: expected a floating-point input, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{what}: the input has zero channels")


def _check_conv_args(
    x_packed: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    scale: Tensor | None,
    bias: Tensor | None,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int]:
    """Validate the op's arguments; return the output size ``(Ho, Wo)``."""
    if x_packed.dim() != 4 or x_packed.dtype != torch.int32:
        raise TypeError(f"{NAMESPACE}::xnor_conv2d: x_packed must be a 4D torch.int32 tensor, got {x_packed.dtype} "
                        f"{tuple(x_packed.shape)}")
    return _check_conv_geometry(x_packed.shape, x_packed, w_packed, alpha, scale, bias, channels, stride, padding,
                                dilation)


def _check_conv_geometry(
    packed_shape: Sequence[int],
    x: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    scale: Tensor | None,
    bias: Tensor | None,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    planes: int = 1,
) -> tuple[int, int]:
    """:func:`_check_conv_args` for activations ``x`` whose packed form has shape ``packed_shape`` (N, H, W, Cw), of
    ``planes`` bit planes."""
    name = f"{NAMESPACE}::xnor_conv2d"
    if w_packed.dim() != 4 or w_packed.dtype != torch.int32:
        raise TypeError(
            f"{name}: w_packed must be a 4D torch.int32 tensor, got {w_packed.dtype} {tuple(w_packed.shape)}"
        )
    stride, padding, dilation = _geometry(name, stride=stride, padding=padding, dilation=dilation)
    channels = check_int(channels, "channels", 1, MAX_ELEMENTS, name)
    n, h, w, cw = packed_shape
    o, kh, kw, wcw = w_packed.shape
    if num_words(channels) != cw or wcw != cw:
        raise ValueError(
            f"{name}: {channels} channels need {num_words(channels)} words; x_packed has {cw}, w_packed {wcw}"
        )
    if not (1 <= kh <= MAX_GEOMETRY and 1 <= kw <= MAX_GEOMETRY):
        raise ValueError(f"{name}: w_packed's kernel {kh}x{kw} is outside [1, {MAX_GEOMETRY}]")
    ho, wo = check_conv_sizes(name, planes, n, h, w, cw, o, (kh, kw), stride, padding, dilation)
    if alpha.dtype != torch.float32 or alpha.shape != (o,):
        raise ValueError(f"{name}: alpha must be float32 of shape ({o},), got {alpha.dtype} {tuple(alpha.shape)}")
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (o,)):
        raise ValueError(f"{name}: bias must be float32 of shape ({o},), got {bias.dtype} {tuple(bias.shape)}")
    if scale is not None and (scale.dtype != torch.float32 or scale.shape != (n, 1, ho, wo)):
        raise ValueError(
            f"{name}: scale must be float32 of shape ({n}, 1, {ho}, {wo}), got {scale.dtype} {tuple(scale.shape)}"
        )
    devices = {t.device for t in (x, w_packed, alpha, scale, bias) if t is not None}
    if len(devices) != 1:
        raise ValueError(f"{name}: all tensors must be on one device, got {sorted(str(d) for d in devices)}")
    return ho, wo


# ---------------------------------------------------------------------------------------------------------- ops
# Defined with torch.library.Library rather than torch.library.custom_op: the dispatch overhead per call is a few
# microseconds instead of ~20, which matters at batch 1. The Python implementation is registered for the CPU and
# CUDA dispatch keys and looks the kernel up in _KERNELS by device type.

_LIB = torch.library.Library(NAMESPACE, "DEF")
_LIB.define("pack_signs(Tensor x, Tensor? scale=None, Tensor? shift=None) -> Tensor")
_LIB.define("pack_signs_absmean(Tensor x, Tensor? scale=None, Tensor? shift=None) -> (Tensor, Tensor)")
_LIB.define("pack_kbit_planes(Tensor x, int bits, Tensor? scale=None, Tensor? shift=None) -> Tensor")
_LIB.define("input_scale(Tensor absmean, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation) -> Tensor")
_LIB.define(
    "xnor_conv2d(Tensor x_packed, Tensor w_packed, Tensor alpha, Tensor? scale, Tensor? bias, int channels, "
    "int[2] stride, int[2] padding, int[2] dilation) -> Tensor"
)


def _affine(x: Tensor, scale: Tensor | None, shift: Tensor | None) -> Tensor:
    if scale is None:
        return x
    return torch.addcmul(shift.view(1, -1, 1, 1).to(x.dtype), x, scale.view(1, -1, 1, 1).to(x.dtype))


def _pack_signs_affine_torch(x: Tensor, scale: Tensor | None, shift: Tensor | None) -> Tensor:
    return _pack_signs_torch(_affine(x, scale, shift))


def _pack_signs_absmean_torch(x: Tensor, scale: Tensor | None, shift: Tensor | None) -> tuple[Tensor, Tensor]:
    y = _affine(x, scale, shift)
    return _pack_signs_torch(y), y.float().abs().mean(dim=1, keepdim=True)


def _check_affine(x: Tensor, scale: Tensor | None, shift: Tensor | None, what: str) -> None:
    if (scale is None) != (shift is None):
        raise ValueError(f"{what}: give both scale and shift, or neither")
    for t in (scale, shift):
        if t is not None and (t.shape != (x.shape[1],) or t.dtype != torch.float32 or t.device != x.device):
            raise ValueError(f"{what}: scale and shift must be float32 of shape ({x.shape[1]},) on {x.device}, got "
                             f"{t.dtype} {tuple(t.shape)} on {t.device}")


def _pack_signs_impl(x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    _check_float_input(x, f"{NAMESPACE}::pack_signs")
    _check_affine(x, scale, shift, f"{NAMESPACE}::pack_signs")
    return _KERNELS["pack_signs"].get(x.device.type, _pack_signs_affine_torch)(x, scale, shift)


def _pack_signs_absmean_impl(
    x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    _check_float_input(x, f"{NAMESPACE}::pack_signs_absmean")
    _check_affine(x, scale, shift, f"{NAMESPACE}::pack_signs_absmean")
    return _KERNELS["pack_signs_absmean"].get(x.device.type, _pack_signs_absmean_torch)(x, scale, shift)


def _pack_kbit_planes_affine_torch(x: Tensor, bits: int, scale: Tensor | None, shift: Tensor | None) -> Tensor:
    return _pack_kbit_planes_torch(_affine(x, scale, shift), bits)


def _pack_kbit_planes_impl(x: Tensor, bits: int, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    _check_float_input(x, f"{NAMESPACE}::pack_kbit_planes")
    check_bits(bits, f"{NAMESPACE}::pack_kbit_planes")
    _check_affine(x, scale, shift, f"{NAMESPACE}::pack_kbit_planes")
    return _KERNELS["pack_kbit_planes"].get(x.device.type, _pack_kbit_planes_affine_torch)(x, bits, scale, shift)


def _check_scale_args(
    absmean: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
) -> tuple[int, int]:
    name = f"{NAMESPACE}::input_scale"
    if absmean.dim() != 4 or absmean.shape[1] != 1 or absmean.dtype != torch.float32:
        raise ValueError(f"{name}: absmean must be float32 (N, 1, H, W), got {absmean.dtype} {tuple(absmean.shape)}")
    geometry = _geometry(name, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    n, _, h, w = absmean.shape
    return check_conv_sizes(name, 1, n, h, w, 1, 1, *geometry)


def _input_scale_impl(
    absmean: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
) -> Tensor:
    _check_scale_args(absmean, kernel_size, stride, padding, dilation)
    kernel = _KERNELS["input_scale"].get(absmean.device.type, box_filter)
    return kernel(absmean, kernel_size, stride, padding, dilation)


def _xnor_conv2d_impl(
    x_packed: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    scale: Tensor | None,
    bias: Tensor | None,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    _check_conv_args(x_packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation)
    kernel = _KERNELS["xnor_conv2d"].get(x_packed.device.type)
    if kernel is None:
        raise NotImplementedError(
            f"{NAMESPACE}::xnor_conv2d has no kernel for device type {x_packed.device.type!r} (registered: "
            f"{sorted(_KERNELS['xnor_conv2d'])}); see zoo_kernels.ops.register_device_kernel"
        )
    return kernel(x_packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation)


_DISPATCH_KEYS: set[str] = set()


def _register_dispatch_key(key: str) -> None:
    if key not in _DISPATCH_KEYS:
        _LIB.impl("pack_signs", _pack_signs_impl, key)
        _LIB.impl("pack_signs_absmean", _pack_signs_absmean_impl, key)
        _LIB.impl("pack_kbit_planes", _pack_kbit_planes_impl, key)
        _LIB.impl("input_scale", _input_scale_impl, key)
        _LIB.impl("xnor_conv2d", _xnor_conv2d_impl, key)
        _DISPATCH_KEYS.add(key)


_register_dispatch_key("CPU")
_register_dispatch_key("CUDA")


@torch.library.register_fake(f"{NAMESPACE}::pack_signs", lib=_LIB)
def _(x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    _check_float_input(x, f"{NAMESPACE}::pack_signs")
    _check_affine(x, scale, shift, f"{NAMESPACE}::pack_signs")
    n, c, h, w = x.shape
    return x.new_empty((n, h, w, num_words(c)), dtype=torch.int32)


@torch.library.register_fake(f"{NAMESPACE}::pack_signs_absmean", lib=_LIB)
def _(x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> tuple[Tensor, Tensor]:
    _check_float_input(x, f"{NAMESPACE}::pack_signs_absmean")
    _check_affine(x, scale, shift, f"{NAMESPACE}::pack_signs_absmean")
    n, c, h, w = x.shape
    return x.new_empty((n, h, w, num_words(c)), dtype=torch.int32), x.new_empty((n, 1, h, w), dtype=torch.float32)


@torch.library.register_fake(f"{NAMESPACE}::pack_kbit_planes", lib=_LIB)
def _(x: Tensor, bits: int, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    _check_float_input(x, f"{NAMESPACE}::pack_kbit_planes")
    check_bits(bits, f"{NAMESPACE}::pack_kbit_planes")
    _check_affine(x, scale, shift, f"{NAMESPACE}::pack_kbit_planes")
    n, c, h, w = x.shape
    return x.new_empty((bits, n, h, w, num_words(c)), dtype=torch.int32)


@torch.library.register_fake(f"{NAMESPACE}::input_scale", lib=_LIB)
def _(
    absmean: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
) -> Tensor:
    ho, wo = _check_scale_args(absmean, kernel_size, stride, padding, dilation)
    return absmean.new_empty((absmean.shape[0], 1, ho, wo))


@torch.library.register_fake(f"{NAMESPACE}::xnor_conv2d", lib=_LIB)
def _(
    x_packed: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    scale: Tensor | None,
    bias: Tensor | None,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    ho, wo = _check_conv_args(x_packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation)
    out = x_packed.new_empty((x_packed.shape[0], w_packed.shape[0], ho, wo), dtype=torch.float32)
    return out.contiguous(memory_format=torch.channels_last) if x_packed.device.type == "cpu" else out


def pack_signs(x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    """``zoo_xnor::pack_signs``: ``(N, C, H, W)`` float -> ``(N, H, W, ceil(C / 32))`` int32 (see
    :mod:`zoo_kernels.packing` for the format), of ``y = x * scale[c] + shift[c]`` when ``scale`` and ``shift``
    ((C,) float32) are given: an inference BatchNorm in front of the sign, in the packing pass (one rounding, as
    torch's CPU BatchNorm, on CPU)."""
    return torch.ops.zoo_xnor.pack_signs(x, scale, shift)


def pack_signs_absmean(x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``zoo_xnor::pack_signs_absmean``: :func:`pack_signs` and ``A = mean_c |y|`` ((N, 1, H, W) float32), one
    pass over ``x``. ``A`` is NaN where a channel is NaN."""
    return torch.ops.zoo_xnor.pack_signs_absmean(x, scale, shift)


def pack_kbit_planes(x: Tensor, bits: int, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    """``zoo_xnor::pack_kbit_planes``: the ``bits`` sign planes of ``q_k(y)``, ``y = x * scale[c] + shift[c]`` (or
    ``x``), packed, ``(bits, N, H, W, ceil(C / 32))`` int32 (see :mod:`zoo_kernels.kbit`)."""
    bits = check_bits(bits, f"{NAMESPACE}::pack_kbit_planes")  # before the dispatcher, which takes True for 1
    return torch.ops.zoo_xnor.pack_kbit_planes(x, bits, scale, shift)


def xnor_conv2d_packed(
    x_packed: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    scale: Tensor | None,
    bias: Tensor | None,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """``zoo_xnor::xnor_conv2d``: ``alpha[o] * scale[n, 0, y, x] * int[n, o, y, x] + bias[o]``, float32 (N, O, Ho,
    Wo), channels_last in memory on CPU (the layout the next layer's packing reads fastest).

    ``x_packed`` (N, H, W, Cw) and ``w_packed`` (O, kh, kw, Cw) int32 words, ``alpha`` (O,) float32, ``scale``
    (N, 1, Ho, Wo) float32 or None (1), ``bias`` (O,) float32 or None (0), ``channels`` = C. ``int`` is exactly
    ``F.conv2d(sign(x), sign(w), None, stride, padding, dilation)`` (see :mod:`zoo_kernels.reference`).
    """
    name = f"{NAMESPACE}::xnor_conv2d"  # checked before the dispatcher, which takes True for 1 and 2**63 raw
    stride, padding, dilation = _geometry(name, stride=stride, padding=padding, dilation=dilation)
    channels = check_int(channels, "channels", 1, MAX_ELEMENTS, name)
    return torch.ops.zoo_xnor.xnor_conv2d(x_packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation)


# The CPU kernels, by op. While they are the registered ones, xnor_conv2d on a plain CPU tensor calls the compiled
# kernel's fused form instead (pack, K and conv in one call: the three op dispatches cost more than the work at
# batch 1); a kernel swapped in with use_kernel, or tracing (fake tensors), takes the op path.
_CPU_KERNELS: dict[str, Callable[..., object]] = {
    "pack_signs": lambda x, scale, shift: cpu.pack_signs_cpu(x, False, scale, shift)[0],
    "pack_signs_absmean": lambda x, scale, shift: cpu.pack_signs_cpu(x, True, scale, shift),
    "pack_kbit_planes": cpu.pack_kbit_planes_cpu,
    "input_scale": cpu.input_scale_cpu,
    "xnor_conv2d": cpu.xnor_conv2d_cpu,
}
for _op, _fn in _CPU_KERNELS.items():
    register_device_kernel(_op, "cpu", _fn)


def _fused_cpu_kernel(x: Tensor, fused: Callable[..., Tensor]) -> Callable[..., Tensor] | None:
    """``fused`` (a one-call form of the CPU ops) for a plain CPU tensor while the CPU kernels are the registered
    ones and nothing traces, else None."""
    if type(x) is not Tensor or not x.is_cpu or not prebound_usable():
        return None
    return fused


def _xnor_conv2d_triton(*args: object) -> Tensor:
    from .triton_xnor import xnor_conv2d_triton  # imported on the first CUDA call: CPU-only use never loads triton

    return xnor_conv2d_triton(*args)


def _pack_signs_triton(*args: object) -> Tensor:
    from .triton_pack import pack_signs_triton  # imported on the first CUDA call, as the conv

    return pack_signs_triton(*args)


def _pack_signs_absmean_triton(*args: object) -> tuple[Tensor, Tensor]:
    from .triton_pack import pack_signs_absmean_triton

    return pack_signs_absmean_triton(*args)


if importlib.util.find_spec("triton") is not None:
    register_device_kernel("xnor_conv2d", "cuda", _xnor_conv2d_triton)
    register_device_kernel("pack_signs", "cuda", _pack_signs_triton)
    register_device_kernel("pack_signs_absmean", "cuda", _pack_signs_absmean_triton)


# ------------------------------------------------------------------------------------------ float-input wrapper


def xnor_input_scale(
    absmean: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """``zoo_xnor::input_scale``: XNOR-Net's ``K = A * k``, ``conv2d(A, box of 1 / (kh * kw))`` with the conv's
    geometry, (N, 1, Ho, Wo) float32.

    ``A = mean_c |x|`` (N, 1, H, W) float32; zero padding counts as 0 in the average (``count_include_pad``), as the
    padded zeros contribute nothing to the convolution. Same as ``zoo.quantizers.xnor_input_scale``.
    """
    geometry = _geometry(f"{NAMESPACE}::input_scale", kernel_size=kernel_size, stride=stride, padding=padding,
                         dilation=dilation)
    return torch.ops.zoo_xnor.input_scale(absmean, *geometry)


def _float_conv_args(
    name: str,
    x: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    dilation: int | Sequence[int],
    bias: Tensor | None,
    groups: int,
    residual: Tensor | None,
) -> tuple[list[int], list[int], list[int], list[int], Tensor, Tensor | None]:
    """The checks of a float-input conv's arguments; its geometry as pairs, ``alpha`` and ``bias`` as detached
    float32."""
    _check_float_input(x, f"{name}: x")
    if groups != 1:
        raise NotImplementedError(f"{name}: only groups=1 is supported, got groups={groups}")
    if not isinstance(w_packed, Tensor) or w_packed.dim() != 4 or w_packed.dtype != torch.int32:
        raise TypeError(f"{name}: w_packed must be a 4D torch.int32 tensor (O, kh, kw, Cw)")
    ks, st, pd, dl = _geometry(name, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    channels = check_int(channels, "channels", 1, MAX_ELEMENTS, name)
    if x.shape[1] != channels:
        raise ValueError(f"{name}: x has {x.shape[1]} channels, expected {channels}")
    if tuple(w_packed.shape[1:3]) != tuple(ks) or w_packed.shape[3] != num_words(channels):
        raise ValueError(
            f"{name}: w_packed shape {tuple(w_packed.shape)} does not match kernel_size {tuple(ks)} and "
            f"{channels} channels ({num_words(channels)} words)"
        )
    for t, what in ((w_packed, "w_packed"), (alpha, "alpha"), (bias, "bias")):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: {what} is on {t.device}, x on {x.device}")
    if alpha.requires_grad or alpha.dtype != torch.float32:
        alpha = alpha.detach().float()
    if bias is not None and (bias.requires_grad or bias.dtype != torch.float32):
        bias = bias.detach().float()
    if residual is not None:
        n, _, h, w = x.shape
        o = w_packed.shape[0]
        shape = (n, o, *check_conv_sizes(name, 1, n, h, w, num_words(channels), o, ks, st, pd, dl))
        if residual.dtype != torch.float32 or residual.device != x.device or residual.shape != shape:
            raise ValueError(f"{name}: residual must be float32 of the output's shape {shape} on {x.device}, got "
                             f"{residual.dtype} {tuple(residual.shape)} on {residual.device}")
    return ks, st, pd, dl, alpha, bias


def _check_fused_args(name: str, x: Tensor, w_packed: Tensor, alpha: Tensor, bias: Tensor | None, channels: int,
                      norm_scale: Tensor | None, norm_shift: Tensor | None, stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int], planes: int = 1) -> None:
    """The checks of the ops that a one-call CPU kernel stands for (they do not run when it does)."""
    _check_affine(x, norm_scale, norm_shift, name)
    n, _, h, w = x.shape
    _check_conv_geometry((n, h, w, num_words(channels)), x, w_packed, alpha, None, bias, channels, stride, padding,
                         dilation, planes)


def xnor_conv2d(
    x: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    input_scale: bool = False,
    bias: Tensor | None = None,
    groups: int = 1,
    norm_scale: Tensor | None = None,
    norm_shift: Tensor | None = None,
    residual: Tensor | None = None,
    relu: bool = False,
) -> Tensor:
    """XNOR-Net conv of a float input with packed weights: ``y = alpha[o] * K[n, y, x] * int + bias[o]``, float32.

    ``x`` (N, C, H, W) floating point (any layout); ``w_packed`` (O, kh, kw, ceil(C / 32)) int32 from
    :func:`zoo_kernels.packing.pack_weight_signs`; ``alpha`` (O,) = mean |W| per filter; ``int`` =
    ``conv2d(sign(x), sign(w))`` computed exactly on packed bits; ``K`` = :func:`xnor_input_scale` of ``mean_c |x|``
    when ``input_scale`` else 1. Inference only (``alpha`` and ``bias`` are detached). With ``norm_scale`` and
    ``norm_shift`` ((C,) float32) the conv binarizes ``x * norm_scale[c] + norm_shift[c]`` instead of ``x`` (and ``K``
    averages its ``|.|``): the inference BatchNorm of XNOR-Net's block ``BatchNorm -> sign -> conv``, applied in the
    packing pass instead of as a separate pass over ``x``. ``residual`` ((N, O, Ho, Wo) float32) is added to ``y`` and
    ``relu`` applies a ReLU after it: the end of a ResNet block, in the CPU kernel's epilogue.

    Defined edge cases: an empty batch gives an empty (0, O, Ho, Wo) output. A NaN activation packs as -1
    (``NaN >= 0`` is False) and, with ``input_scale``, makes ``K`` -- hence the outputs whose window covers it --
    NaN; no error is raised. ``-0.0`` packs as +1.
    """
    ks, st, pd, dl, alpha, bias = _float_conv_args("xnor_conv2d", x, w_packed, alpha, channels, kernel_size, stride,
                                                   padding, dilation, bias, groups, residual)
    fused = _fused_cpu_kernel(x, cpu.xnor_conv2d_float_cpu)
    if fused is not None:
        _check_fused_args("xnor_conv2d", x, w_packed, alpha, bias, channels, norm_scale, norm_shift, st, pd, dl)
        return routes.binary_conv2d_cpu(
            lambda variant: fused(x, w_packed, alpha, bias, norm_scale, norm_shift, channels, ks, st, pd, dl,
                                  input_scale, residual, relu, variant),
            x, w_packed, alpha, channels, ks, st, pd, dl, 1, input_scale, bias, norm_scale, norm_shift, residual, relu)
    if input_scale:
        x_packed, absmean = pack_signs_absmean(x, norm_scale, norm_shift)
        scale = xnor_input_scale(absmean, ks, st, pd, dl)
    else:
        x_packed, scale = pack_signs(x, norm_scale, norm_shift), None
    return _residual_relu(xnor_conv2d_packed(x_packed, w_packed, alpha, scale, bias, channels, st, pd, dl), residual,
                          relu)


def kbit_conv2d(
    x: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    bits: int = 2,
    input_scale: bool = False,
    bias: Tensor | None = None,
    groups: int = 1,
    norm_scale: Tensor | None = None,
    norm_shift: Tensor | None = None,
    residual: Tensor | None = None,
    relu: bool = False,
) -> Tensor:
    """The conv of XNOR-Net's k-bit inputs with packed sign weights, on XNOR-popcount: ``y = alpha[o] * K[n, y, x] *
    conv2d(q_k(x), sign(w)) + bias[o]``, float32.

    ``q_k(x) = sum_b 2^b / (2^k - 1) * s_b`` with ``k = bits`` sign planes ``s_b`` (:mod:`zoo_kernels.kbit`), so the
    conv is ``bits`` popcount convs (``zoo_xnor::xnor_conv2d``) of the packed planes, plane ``b``'s with ``alpha``
    scaled by ``2^b / (2^k - 1)``, summed. The arguments are those of :func:`xnor_conv2d`: ``norm_scale`` /
    ``norm_shift`` quantize ``x * norm_scale[c] + norm_shift[c]`` (a fused inference BatchNorm), ``K`` is
    :func:`xnor_input_scale` of its ``mean_c |.|`` when ``input_scale``, ``residual`` is added and ``relu`` applied
    last. A NaN input takes level 0 (``q = -1``); an empty batch gives an empty output.
    """
    ks, st, pd, dl, alpha, bias = _float_conv_args("kbit_conv2d", x, w_packed, alpha, channels, kernel_size, stride,
                                                   padding, dilation, bias, groups, residual)
    fused = _fused_cpu_kernel(x, cpu.kbit_conv2d_float_cpu) if x.dtype == torch.float32 else None
    if fused is not None:  # planes, K and one conv over the planes
        bits = check_bits(bits, "kbit_conv2d")
        _check_fused_args("kbit_conv2d", x, w_packed, alpha, bias, channels, norm_scale, norm_shift, st, pd, dl,
                          bits)
        popcount = functools.partial(fused, x, w_packed, alpha, bias, norm_scale, norm_shift, channels, ks, st, pd,
                                     dl, bits, input_scale, residual, relu)
        if bits > 7:  # the int8 route's bytes hold 2 L <= 254
            return popcount("auto")
        return routes.binary_conv2d_cpu(popcount, x, w_packed, alpha, channels, ks, st, pd, dl, bits, input_scale,
                                        bias, norm_scale, norm_shift, residual, relu)
    planes = pack_kbit_planes(x, bits, norm_scale, norm_shift)
    scale = None
    if input_scale:
        absmean = _affine(x, norm_scale, norm_shift).float().abs().mean(dim=1, keepdim=True)
        scale = xnor_input_scale(absmean, ks, st, pd, dl)
    out = None
    for plane, weight in zip(planes, kbit_plane_weights(bits), strict=True):
        y = xnor_conv2d_packed(plane, w_packed, alpha * weight, scale, bias if out is None else None, channels, st,
                               pd, dl)
        out = y if out is None else out.add_(y)
    return _residual_relu(out, residual, relu)


def prebound_usable() -> bool:
    """Whether calls made by :func:`prebound_conv2d` may run now: nothing traces and the CPU kernels are the
    registered ones (no :func:`use_kernel` block swapped them)."""
    return not torch.compiler.is_compiling() and all(_KERNELS[op].get("cpu") is fn for op, fn in _CPU_KERNELS.items())


def prebound_conv2d(
    x: Tensor,
    w_packed: Tensor,
    alpha: Tensor,
    channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    bits: int = 1,
    input_scale: bool = False,
    bias: Tensor | None = None,
    norm_scale: Tensor | None = None,
    norm_shift: Tensor | None = None,
    residual: Tensor | None = None,
    relu: bool = False,
    next_norm: tuple[Tensor, Tensor, bool] | None = None,
    signs_in: bool = False,
) -> Callable[[Tensor, Tensor | None], Tensor] | None:
    """The compiled CPU call that :func:`xnor_conv2d` (``bits`` 1) or :func:`kbit_conv2d` makes for ``x`` on the
    route chosen for its shape, bound to the checked arguments: ``f(x2, residual2)`` is what the function gives with
    ``x2`` and ``residual2`` in place of ``x`` and ``residual``, bit for bit, without its argument checks, route lookup
    and Python layers on every call (about 35 us of a 90 us conv at batch 1 and 64 channels, Zen 5 core pair): an
    inference loop's repeated calls of one layer.

    None where the call would not run the compiled popcount kernel: no compiled kernel, ``x`` not a float32 CPU
    tensor, tracing, a route not chosen yet for this shape (the function's next call chooses it), the int8 route, a
    :func:`zoo_kernels.routes.record` block open. The caller may use ``f`` only for inputs of ``x``'s and
    ``residual``'s type, shape, strides, dtype and device, while :func:`prebound_usable` holds,
    :func:`zoo_kernels.routes.state` equals its value when ``f`` was made, and the bound tensors are unchanged (the
    compiled kernel re-lays out changed weight words itself; ``alpha``, ``bias``, ``norm_scale`` and ``norm_shift`` are
    read as bound).

    The first and the second conv of a pair (a ResNet block's conv1 -> BatchNorm -> sign -> conv2, 1-bit inputs):
    with ``next_norm = (scale, shift, absmean)`` (the second conv's BatchNorm as ``y = v * scale + shift`` and whether
    it takes ``K``), ``f`` returns not the output ``v`` but the second conv's input, ``(packed signs of y, mean |y| or
    None)`` (:func:`zoo_kernels.cpu.xnor_conv2d_float_signs_cpu`; no residual, no ReLU); with
    ``signs_in`` (``x`` still a float tensor of the input's shape, for the checks and the route), ``f`` takes that
    pair in place of ``x2`` (``norm_scale`` and ``norm_shift`` are then not used: the first conv applied them). The
    two give what the two convs give in turn, bit for bit, without the float activation between them.
    """
    if (next_norm is not None or signs_in) and (bits != 1 or (next_norm is not None and (
            residual is not None or relu or next_norm[0].dtype != torch.float32
            or next_norm[1].dtype != torch.float32))):
        return None
    if (type(x) is not Tensor or not x.is_cpu or x.dtype != torch.float32 or routes.state() is None
            or not prebound_usable()):
        return None
    name = "xnor_conv2d" if bits == 1 else "kbit_conv2d"
    ks, st, pd, dl, alpha, bias = _float_conv_args(name, x, w_packed, alpha, channels, kernel_size, stride, padding,
                                                   dilation, bias, 1, residual)
    bits = check_bits(bits, name)
    _check_fused_args(name, x, w_packed, alpha, bias, channels, norm_scale, norm_shift, st, pd, dl, bits)
    variant = "auto"  # k-bit inputs past 7 bits: no route choice (see kbit_conv2d)
    if bits <= 7:
        chosen = routes.known(routes.conv_key("conv", x, w_packed, st, pd, dl, bits, input_scale,
                                              residual is not None))
        route, _, variant = (chosen or "").partition(":")
        if route != "popcount" or variant not in ("auto", *routes.popcount_variants()):
            return None
    op = cpu.compiled_op("xnor_conv2d_float_signs" if next_norm is not None else "xnor_conv2d_signs" if signs_in
                         else "xnor_conv2d_float" if bits == 1 else "kbit_conv2d_float")
    if op is None:
        return None
    if next_norm is not None:
        next_scale, next_shift, next_absmean = next_norm[0].contiguous(), next_norm[1].contiguous(), bool(next_norm[2])

        def first(x2: Tensor, _: Tensor | None) -> tuple[Tensor, Tensor | None]:
            packed, am = op(x2, w_packed, alpha, bias, norm_scale, norm_shift, channels, ks, st, pd, dl, input_scale,
                            next_scale, next_shift, next_absmean, variant)
            return packed, (am if next_absmean else None)
        return first
    if signs_in:
        return lambda signs, residual2: op(signs[0], signs[1], w_packed, alpha, bias, channels, ks, st, pd, dl,
                                           residual2, relu, variant)
    if bits == 1:
        return lambda x2, residual2: op(x2, w_packed, alpha, bias, norm_scale, norm_shift, channels, ks, st, pd, dl,
                                        input_scale, residual2, relu, variant)
    return lambda x2, residual2: op(x2, w_packed, alpha, bias, norm_scale, norm_shift, channels, ks, st, pd, dl, bits,
                                    input_scale, residual2, relu, variant)
