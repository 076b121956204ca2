"""Packed inference form of binary layers: 1 bit per weight, plus ``alpha`` per output filter.

Bit layout (from ``zoo_kernels.packing``): int32 words along input channels, channel ``c`` in bit ``c % 32`` of
word ``c // 32`` (LSB first), bit 1 for ``W >= 0`` (``sign(0) = +1``), padding bits 0. A conv weight
``(O, C, kh, kw)`` packs to ``(O, kh, kw, ceil(C / 32))``, a linear weight ``(O, F)`` to ``(O, ceil(F / 32))``.

A packed layer computes what its trainable layer computes in eval mode. A packed XNOR conv (sign inputs, groups 1)
runs on bit operations: ``alpha * K * (n - 2 * popcount(x XOR w))`` (``zoo_kernels.ops.xnor_conv2d``: the compiled
CPU kernel or its exact reference, the Triton kernel on CUDA; whichever kernel the input's device has, else the float
path). A packed conv of k-bit inputs (XNOR-Net's k-bit quantizer) runs on the same kernel, one popcount conv per bit
plane of the quantized input (``zoo_kernels.ops.kbit_conv2d``). BWN layers (float inputs) rebuild ``alpha * sign(W)``
from the bits and use a float conv. ``unpack(pack(model))`` has identical binarized weights and can be fine-tuned.

Inference layout: in a packed block ``BatchNorm -> sign -> conv`` the BatchNorm is applied in the conv's sign-packing
pass (``PackedBinaryConvBlock``: the same parameters and state dict, one pass over the activation instead of two); in
timm's ResNet ``BasicBlock`` the BatchNorms after the convs fold into their epilogues (``PackedBasicBlock``); and
``pack`` stores the float convs' weights channels_last, so that the float stem's output, and with it every activation
after it, is channels_last: the layout the CPU kernel packs fastest and returns. The residual sum and ReLU that end a
``BasicBlock`` run in its second conv's epilogue, and timm's ResNet stem folds its BatchNorm (``PackedResNet``).
From the second call with inputs of one signature, a ``PackedBasicBlock`` runs its three kernel calls prebound
(:mod:`zoo.inference_plan`): the same values without the Python of the checks, folds and route lookups on each call.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, ResNet
from torch import nn
from zoo_kernels import int8_route, routes
from zoo_kernels.cpu import fingerprint, level_bytes_cpu, max_pool_relu_cpu
from zoo_kernels.cpu_features import has_native_bf16
from zoo_kernels.geometry import conv_output_size
from zoo_kernels.kbit import MAX_BITS
from zoo_kernels.ops import has_kernel, kbit_conv2d, prebound_conv2d
from zoo_kernels.ops import xnor_conv2d as popcount_conv2d
from zoo_kernels.packing import pack_weight_signs, unpack_signs

from . import inference_plan, int8_stem
from .layers import BinaryConv2d, BinaryConvBlock, BinaryLinear
from .quantizers import filter_scale

__all__ = [
    "PackedBasicBlock",
    "PackedResNet",
    "PackedBinaryConv2d",
    "PackedBinaryConvBlock",
    "PackedBinaryLinear",
    "pack",
    "unpack",
    "is_packable",
]

_T = TypeVar("_T")


def is_packable(layer: nn.Module) -> bool:
    """A binary layer whose weights are ``alpha * sign(W)`` (every registered scheme but ``fp``)."""
    return getattr(getattr(layer, "kernel_quantizer", None), "quantizer_name", None) == "scaled_sign"


def _input_bits(layer: BinaryConv2d | BinaryLinear) -> int | None:
    """The bits per input value the popcount kernels see: 1 for sign inputs, k for the k-bit quantizer (as k sign
    planes), None for float inputs (or a quantizer they do not know)."""
    q = layer.input_quantizer
    name = getattr(q, "quantizer_name", None)
    if name in ("bin_activ", "ste_sign"):
        return 1
    if name == "kbit" and 1 <= q.bits <= MAX_BITS:
        return q.bits
    return None


def _input_kwargs(layer: BinaryConv2d | BinaryLinear) -> dict:
    q = layer.input_quantizer
    return {
        "input_quantizer": None if q is None else q.quantizer_name,
        "input_bits": getattr(q, "bits", None),
        "input_scale": layer.input_scale,
    }


class _PackedWeight:
    """Replaces the float ``weight`` parameter by ``weight_bits`` (int32) and ``alpha`` (float32) buffers."""

    def _replace_weight(self, bits_shape: tuple[int, ...]) -> None:
        del self.weight
        self.register_buffer("weight_bits", torch.zeros(bits_shape, dtype=torch.int32))
        self.register_buffer("alpha", torch.ones(bits_shape[0], dtype=torch.float32))
        self.kernel_quantizer = None
        self.grad_quantizer = None

    def _signs(self) -> torch.Tensor:
        raise NotImplementedError

    def quantized_weight(self) -> torch.Tensor:
        """``alpha * sign(W)`` rebuilt from the bits, for the layers that run a float conv (BWN, k-bit inputs).

        Rebuilding at every call made packed BWN models slower than float ones, so the result is cached (in memory
        only: the checkpoint keeps 1 bit per weight) and rebuilt when the contents of ``weight_bits`` or ``alpha``
        change (their fingerprint, :func:`zoo_kernels.cpu.fingerprint`: also a write through ``.data``), or when
        compiling."""
        compiling = torch.compiler.is_compiling()
        key = None if compiling else fingerprint(self.weight_bits, self.alpha)
        cached = self.__dict__.get("_float_weight")
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        signs = self._signs()
        weight = self.alpha.view(-1, *([1] * (signs.dim() - 1))) * signs.to(self.alpha.dtype)  # the model's dtype
        if key is not None and not weight.requires_grad:
            self.__dict__["_float_weight"] = (key, weight)
        return weight


class PackedBinaryConv2d(_PackedWeight, BinaryConv2d):
    """Inference form of :class:`~zoo.layers.BinaryConv2d` with 1-bit weights ``(O, kh, kw, ceil(C/32))``."""

    def __init__(self, *args, **kwargs):
        kwargs["kernel_quantizer"] = None
        super().__init__(*args, **kwargs)
        kh, kw = self.kernel_size
        words = -(-(self.in_channels // self.groups) // 32)
        self._replace_weight((self.out_channels, kh, kw, words))

    @classmethod
    def from_binary(cls, layer: BinaryConv2d) -> PackedBinaryConv2d:
        new = cls(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
            layer.groups, layer.bias is not None, **_input_kwargs(layer),
        )
        with torch.no_grad():
            new.weight_bits.copy_(pack_weight_signs(layer.weight.detach().float()))
            new.alpha.copy_(filter_scale(layer.weight.detach().float()).flatten())
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new.to(layer.weight.device)

    def _signs(self) -> torch.Tensor:
        return unpack_signs(self.weight_bits, self.in_channels // self.groups)

    @property
    def runs_on_bits(self) -> bool:
        """Whether inference uses the XNOR-popcount kernel: sign-binarized or k-bit inputs, no groups."""
        return _input_bits(self) is not None and self.groups == 1

    def on_bits(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` runs the popcount kernel (else the float conv of the rebuilt weights)."""
        return x.dim() == 4 and not x.requires_grad and self.runs_on_bits and has_kernel("xnor_conv2d", x.device.type)

    def popcount_forward(
        self,
        x: torch.Tensor,
        norm_scale: torch.Tensor | None = None,
        norm_shift: torch.Tensor | None = None,
        alpha: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
        relu: bool = False,
    ) -> torch.Tensor:
        """The popcount kernel's forward, of ``x * norm_scale[c] + norm_shift[c]`` when given (a fused BatchNorm);
        ``alpha`` and ``bias`` given replace the layer's in the epilogue (a folded BatchNorm after the conv), which
        then adds ``residual`` and applies a ReLU when asked."""
        if alpha is None:
            alpha, bias = self._buffers["alpha"], self._parameters["bias"]
        args = (x, self._buffers["weight_bits"], alpha, self.in_channels, self.kernel_size, self.stride, self.padding,
                self.dilation)
        kwargs = {"input_scale": self.input_scale, "bias": bias, "norm_scale": norm_scale, "norm_shift": norm_shift,
                  "residual": residual, "relu": relu}
        bits = _input_bits(self)
        if bits == 1:
            y = popcount_conv2d(*args, **kwargs)
        else:
            y = kbit_conv2d(*args, bits=bits, **kwargs)  # one popcount conv per bit plane
        return y if y.dtype == x.dtype else y.to(x.dtype)  # float32 from the kernels; a .half() model stays half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.on_bits(x):
            return self.popcount_forward(x)
        return super().forward(x)

    def to_binary(self) -> BinaryConv2d:
        """A trainable layer whose latent weights are ``alpha * sign(W)``: same binarized weights."""
        new = BinaryConv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation,
            self.groups, self.bias is not None, kernel_quantizer="scaled_sign", **_input_kwargs(self),
        )
        with torch.no_grad():
            new.weight.copy_(self.quantized_weight())
            if self.bias is not None:
                new.bias.copy_(self.bias)
        return new


class PackedBinaryLinear(_PackedWeight, BinaryLinear):
    """Inference form of :class:`~zoo.layers.BinaryLinear` with 1-bit weights ``(O, ceil(F/32))``."""

    def __init__(self, *args, **kwargs):
        kwargs["kernel_quantizer"] = None
        super().__init__(*args, **kwargs)
        self._replace_weight((self.out_features, -(-self.in_features // 32)))

    @classmethod
    def from_binary(cls, layer: BinaryLinear) -> PackedBinaryLinear:
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, **_input_kwargs(layer))
        w = layer.weight.detach().float()
        with torch.no_grad():
            new.weight_bits.copy_(pack_weight_signs(w[:, :, None, None]).flatten(1))
            new.alpha.copy_(filter_scale(w).flatten())
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new.to(layer.weight.device)

    def _signs(self) -> torch.Tensor:
        return unpack_signs(self.weight_bits[:, None, None, :], self.in_features).flatten(1)

    @property
    def runs_on_bits(self) -> bool:
        """Whether inference uses the XNOR-popcount kernel: sign-binarized or k-bit inputs."""
        return _input_bits(self) is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A fully connected layer is a 1x1 conv over a 1x1 image: K = mean_j |x_j| per sample, as in BinaryLinear.
        if self.runs_on_bits and x.dim() == 2 and not x.requires_grad and has_kernel("xnor_conv2d", x.device.type):
            bits = _input_bits(self)
            conv = popcount_conv2d if bits == 1 else functools.partial(kbit_conv2d, bits=bits)
            y = conv(x[:, :, None, None], self.weight_bits[:, None, None, :], self.alpha, self.in_features, 1,
                     input_scale=self.input_scale, bias=self.bias)
            return y.flatten(1).to(x.dtype)
        return super().forward(x)

    def to_binary(self) -> BinaryLinear:
        new = BinaryLinear(
            self.in_features, self.out_features, self.bias is not None, kernel_quantizer="scaled_sign",
            **_input_kwargs(self),
        )
        with torch.no_grad():
            new.weight.copy_(self.quantized_weight())
            if self.bias is not None:
                new.bias.copy_(self.bias)
        return new


def _tensors(*modules: nn.Module) -> tuple[torch.Tensor, ...]:
    """The parameters and buffers of ``modules`` themselves, read from their dicts (cheaper than attributes)."""
    return tuple(t for m in modules for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)


def _cached(
    owner: nn.Module, slot: str, sources: tuple[torch.Tensor, ...], extra: object, compute: Callable[[], _T]
) -> _T:
    """``compute()``, kept on ``owner`` until a tensor of ``sources`` is replaced or its contents change (their
    fingerprint, :func:`zoo_kernels.cpu.fingerprint`: also a write through ``.data``, which no version counter
    records), or ``extra`` changes. A plain attribute (nothing enters the state dict) holding ``sources`` too, so that
    their ids stay theirs. While compiling or exporting, computed and not kept (the sources are traced tensors)."""
    if torch.compiler.is_compiling():
        with torch.no_grad():
            return compute()
    key = (tuple(map(id, sources)), fingerprint(*sources), extra)
    cached = owner.__dict__.get(slot)
    if cached is not None and cached[0] == key:
        return cached[2]
    with torch.no_grad():
        value = compute()
    owner.__dict__[slot] = (key, sources, value)
    return value


class _NotCopied:
    """A cached value that ``copy.deepcopy`` leaves behind (oneDNN's prepacked weights cannot be copied); a copy's
    cache key differs anyway (its tensors are new objects), so the copy computes its own."""

    __slots__ = ("value",)

    def __init__(self, value: object):
        self.value = value

    def __deepcopy__(self, memo: dict) -> _NotCopied:
        return _NotCopied(None)


def _is_inference_norm(norm: nn.Module) -> bool:
    return type(norm) is nn.BatchNorm2d and not norm.training and norm.track_running_stats


def _norm_affine(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference BatchNorm as ``x * a + b``, ``a`` and ``b`` computed as torch's CPU BatchNorm computes them (``b``
    with one rounding, as its fma), so that the fused kernel's ``fma(x, a, b)`` rounds as the BatchNorm does."""
    a = torch.rsqrt(norm.running_var.float() + norm.eps)  # float32 for the kernels whatever the model's dtype
    if norm.weight is not None:
        a = a * norm.weight.float()
    bias = norm.bias.double() if norm.bias is not None else 0.0
    return a, (bias - norm.running_mean.double() * a.double()).float()


def _fold_norm(norm: nn.BatchNorm2d, scale: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """``scale'``, ``bias'`` of a layer ``scale[o] * f(x) + bias[o]`` followed by ``norm``: with
    ``s = weight / sqrt(running_var + eps)``, ``norm(y) = s y + (bias_n - running_mean s)``. In float64, rounded once.
    ``scale`` is ``alpha`` (O,), or a float conv's weight (O, C, kh, kw)."""
    s = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:
        s = s * norm.weight.double()
    t = -norm.running_mean.double() * s + (norm.bias.double() if norm.bias is not None else 0.0)
    if bias is not None:
        t = t + bias.double() * s
    folded = scale.double() * s.view(-1, *([1] * (scale.dim() - 1)))
    return folded.to(scale.dtype, memory_format=torch.preserve_format), t.float()


class PackedBinaryConvBlock(BinaryConvBlock):
    """:class:`~zoo.layers.BinaryConvBlock` ``BatchNorm -> sign -> packed conv`` whose BatchNorm runs inside the
    conv's sign packing.

    At inference the BatchNorm is ``y = x * a + b`` per channel (``a = weight / sqrt(running_var + eps)``,
    ``b = bias - running_mean * a``, computed as torch's CPU BatchNorm computes them, so that ``y`` rounds alike);
    the packing pass of the popcount kernel applies it while it reads ``x``, instead of a separate pass writing ``y``.
    A BatchNorm that follows the block (``fused_forward(x, after)``) folds into the conv's ``alpha`` and ``bias``.
    Both are recomputed only when a tensor they come from changes. Same children and state dict as
    ``BinaryConvBlock``; any other case (training, gradients, a device without a kernel) runs the two layers.
    """

    def fused(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` runs fused (an inference BatchNorm, float32 input, the popcount kernel)."""
        conv = self._modules["conv"]
        return (_is_inference_norm(self._modules["norm"]) and x.dtype == torch.float32
                and type(conv) is PackedBinaryConv2d and conv.on_bits(x))

    def fused_forward(
        self,
        x: torch.Tensor,
        after: nn.BatchNorm2d | None = None,
        residual: torch.Tensor | None = None,
        relu: bool = False,
    ) -> torch.Tensor:
        """The fused forward (``fused(x)`` must hold); then ``after`` (an inference BatchNorm), ``+ residual`` and a
        ReLU, all in the kernel's epilogue."""
        return self._modules["conv"].popcount_forward(x, *self._epilogue_args(after), residual, relu)

    def _epilogue_args(self, after: nn.BatchNorm2d | None) -> tuple[torch.Tensor | None, ...]:
        """``(a, b, alpha, bias)``: the BatchNorm before the sign as ``x * a + b``, and the conv's ``alpha`` and
        ``bias``, with ``after`` folded in when given (:meth:`folded`)."""
        if after is not None:
            return self.folded(after)
        conv, norm = self._modules["conv"], self._modules["norm"]
        a, b = _cached(self, "_norm_affine", _tensors(norm), norm.eps, lambda: _norm_affine(norm))
        return a, b, conv._buffers["alpha"], conv._parameters["bias"]

    def prebound(
        self,
        x: torch.Tensor,
        after: nn.BatchNorm2d | None = None,
        residual: torch.Tensor | None = None,
        relu: bool = False,
        **pair: object,
    ) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None:
        """``fused_forward(x2, after, residual2, relu)`` as a prebound kernel call ``f(x2, residual2)`` for inputs
        like ``x`` and ``residual`` (:func:`zoo_kernels.ops.prebound_conv2d`, whose terms of use apply, and to which
        ``pair``, its ``next_norm`` or ``signs_in``, is passed); None where the fused forward would not run it."""
        if not self.fused(x):
            return None
        conv = self._modules["conv"]
        a, b, alpha, bias = self._epilogue_args(after)
        return prebound_conv2d(x, conv._buffers["weight_bits"], alpha, conv.in_channels, conv.kernel_size,
                               conv.stride, conv.padding, conv.dilation, _input_bits(conv), conv.input_scale, bias,
                               a, b, residual, relu, **pair)

    def folded(self, after: nn.BatchNorm2d) -> tuple[torch.Tensor, ...]:
        """``(a, b, alpha, bias)``: the BatchNorm before the sign as ``x * a + b`` and the conv's ``alpha`` and
        ``bias`` with ``after`` folded in; one cache for both BatchNorms (one fingerprint of their sources per
        call)."""
        conv, norm = self._modules["conv"], self._modules["norm"]
        scale = tuple(t for t in (conv._buffers["alpha"], conv._parameters["bias"]) if t is not None)
        return _cached(self, "_norm_affine_folded", _tensors(norm, after) + scale, (norm.eps, after.eps),
                       lambda: (*_norm_affine(norm), *_fold_norm(after, conv.alpha.float(),
                                                                  None if conv.bias is None else conv.bias.float())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused(x):
            return self.fused_forward(x)
        return super().forward(x)


class PackedBasicBlock(BasicBlock):
    """timm's ResNet ``BasicBlock`` with binarized inputs, packed: ``bn1`` and ``bn2`` fold into the epilogues
    (``alpha``, ``bias``) of the packed ``conv1`` and ``conv2``, the downsample's BatchNorm into the downsample
    conv's, so that no BatchNorm makes a pass over an activation of its own.

    ``pack`` turns a ``BasicBlock`` into this class in place (``__class__``): same children, same state dict.
    Outside inference (training, gradients, no kernel) or with optional parts present (attention, drop path, an
    activation before ``conv2``), the ``BasicBlock`` forward runs.
    """

    def fused(self, x: torch.Tensor) -> bool:
        m = self._modules
        conv1, conv2 = m["conv1"], m["conv2"]
        return (type(conv1) is PackedBinaryConvBlock and type(conv2) is PackedBinaryConvBlock and conv1.fused(x)
                and conv2.fused(x) and _is_inference_norm(m["bn1"]) and _is_inference_norm(m["bn2"])
                and self.se is None and self.drop_path is None
                and type(m["drop_block"]) is type(m["act1"]) is type(m["aa"]) is nn.Identity)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        ds = self._modules.get("downsample")  # None is a plain attribute
        if ds is None:
            return x
        if (type(ds) is nn.Sequential and len(ds) == 2 and type(ds[0]) is PackedBinaryConvBlock and ds[0].fused(x)
                and _is_inference_norm(ds[1])):
            return ds[0].fused_forward(x, ds[1])
        return ds(x)

    def _int8_pair(self, x: torch.Tensor) -> torch.Tensor | None:
        """conv1 and conv2 on the int8 route in one go where the route choice (:mod:`zoo_kernels.routes`) has put
        both there: conv1's epilogue writes conv2's level bytes and ``mean |.|`` directly
        (:func:`zoo_kernels.int8_route.int8_conv2d_levels` with ``next_norm``), so that conv1's float output, which
        only conv2's BatchNorm and sign read, is never written; the same values as the two convs in turn. None where
        it does not apply (then each conv runs on its own route)."""
        m = self._modules
        block1, block2 = m["conv1"], m["conv2"]
        c1, c2 = block1._modules["conv"], block2._modules["conv"]
        bits1, bits2 = _input_bits(c1), _input_bits(c2)
        if (x.device.type != "cpu" or torch.compiler.is_compiling() or x.shape[0] == 0
                or not (c1.input_scale and c2.input_scale)
                or bits1 is None or bits2 is None or max(bits1, bits2) > 7 or c1.groups != 1 or c2.groups != 1
                or not int8_route.int8_route_available()):
            return None
        w1, w2 = c1._buffers["weight_bits"], c2._buffers["weight_bits"]
        n, _, h, w = x.shape
        ho, wo = (conv_output_size(s, k, st, p, d) for s, k, st, p, d in
                  zip((h, w), c1.kernel_size, c1.stride, c1.padding, c1.dilation, strict=True))
        k1 = routes.conv_key("conv", x, w1, c1.stride, c1.padding, c1.dilation, bits1, True, False)
        k2 = routes.conv_key("conv", (n, c1.out_channels, ho, wo), w2, c2.stride, c2.padding, c2.dilation, bits2,
                             True, True)
        if (routes.known(k1) != "int8" or routes.known(k2) != "int8"
                or not int8_route.int8_conv_exact_for((h, w), c1.kernel_size, c1.stride, c1.padding, c1.dilation)
                or not int8_route.int8_conv_exact_for((ho, wo), c2.kernel_size, c2.stride, c2.padding, c2.dilation)):
            return None
        a1, b1, alpha1, bias1 = block1.folded(m["bn1"])
        a2, b2, alpha2, bias2 = block2.folded(m["bn2"])
        q, absmean = level_bytes_cpu(x, bits1, True, a1, b1)
        q, absmean = int8_route.int8_conv2d_levels(q, absmean, w1, alpha1, c1.in_channels, c1.stride, c1.padding,
                                                   c1.dilation, bits1, c1.kernel_size, bias1,
                                                   next_norm=(a2, b2, bits2))
        relu = type(m["act2"]) is nn.ReLU
        out = int8_route.int8_conv2d_levels(q, absmean, w2, alpha2, c2.in_channels, c2.stride, c2.padding,
                                            c2.dilation, bits2, c2.kernel_size, bias2, self._shortcut(x), relu)
        routes.note(k1, "int8")
        routes.note(k2, "int8")
        return out if relu else m["act2"](out)

    def _prebound_plan(self, x: torch.Tensor) -> inference_plan.PreboundPlan | None:
        """The fused forward for inputs like ``x`` as prebound kernel calls (:mod:`zoo.inference_plan`): conv1, the
        shortcut (identity, or a packed downsample conv with its BatchNorm folded) and conv2 with the residual sum and
        ReLU in its epilogue, each on its chosen popcount route; None where any of them would run otherwise (the
        int8 route, a route not chosen yet, another shortcut or activation)."""
        m = self._modules
        ds = m.get("downsample")
        if type(m["act2"]) is not nn.ReLU or not self.fused(x):
            return None
        modules = (m["conv1"], m["conv1"].norm, m["conv1"].conv, m["bn1"], m["conv2"], m["conv2"].norm,
                   m["conv2"].conv, m["bn2"], m["act2"])
        conv1 = m["conv1"].prebound(x, m["bn1"])
        if conv1 is None:
            return None
        n, _, h, w = x.shape
        c1 = m["conv1"].conv
        shape1 = (n, c1.out_channels, *(conv_output_size(s, k, st, p, d) for s, k, st, p, d in
                                        zip((h, w), c1.kernel_size, c1.stride, c1.padding, c1.dilation, strict=True)))
        like1 = torch.empty(shape1, memory_format=torch.channels_last)  # as the kernel returns conv1's output
        if ds is None:
            shortcut, like_res = None, x
        elif (type(ds) is nn.Sequential and len(ds) == 2 and type(ds[0]) is PackedBinaryConvBlock
              and _is_inference_norm(ds[1])):
            shortcut = ds[0].prebound(x, ds[1])
            if shortcut is None:
                return None
            modules += (ds, ds[0], ds[0].norm, ds[0].conv, ds[1])
            c0 = ds[0].conv
            like_res = torch.empty((n, c0.out_channels, *(conv_output_size(s, k, st, p, d) for s, k, st, p, d in zip(
                (h, w), c0.kernel_size, c0.stride, c0.padding, c0.dilation, strict=True))),
                memory_format=torch.channels_last)
        else:
            return None
        c2 = m["conv2"].conv
        if _input_bits(c1) == 1 and _input_bits(c2) == 1:
            # conv1 writes conv2's packed signs: no float activation between them
            a2, b2, _, _ = m["conv2"].folded(m["bn2"])
            first = m["conv1"].prebound(x, m["bn1"], next_norm=(a2, b2, c2.input_scale))
            second = m["conv2"].prebound(like1, m["bn2"], like_res, relu=True, signs_in=True)
            if first is not None and second is not None:
                conv1, conv2 = first, second
            else:
                conv2 = m["conv2"].prebound(like1, m["bn2"], like_res, relu=True)
        else:
            conv2 = m["conv2"].prebound(like1, m["bn2"], like_res, relu=True)
        if conv2 is None:
            return None
        if shortcut is None:
            def run(x: torch.Tensor) -> torch.Tensor:
                return conv2(conv1(x, None), x)
        else:
            def run(x: torch.Tensor) -> torch.Tensor:
                return conv2(conv1(x, None), shortcut(x, None))
        return inference_plan.PreboundPlan(x, modules, run)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = inference_plan.plan_for(self, x)
        if plan is not None:
            return plan.run(x)
        if not self.fused(x):
            return super().forward(x)
        if (x.dtype == torch.float32 and (pair := self._int8_pair(x)) is not None):
            return pair
        m = self._modules
        out = m["conv1"].fused_forward(x, m["bn1"])
        if type(m["act2"]) is nn.ReLU:  # the residual sum and the ReLU in conv2's epilogue
            out = m["conv2"].fused_forward(out, m["bn2"], self._shortcut(x), relu=True)
            if not inference_plan.unplanned(self, x):  # the routes are chosen now: the next calls run the plan
                plan = self._prebound_plan(x)
                if plan is not None:
                    inference_plan.keep(self, plan)
                else:
                    inference_plan.keep_unplanned(self, x)
            return out
        return m["act2"](m["conv2"].fused_forward(out, m["bn2"], self._shortcut(x)))


def _pool_geometry(pool: nn.Module) -> tuple[int, int, int] | None:
    """``(kernel, stride, padding)`` of a square max-pool the compiled pool + ReLU pass runs (dilation 1, floor
    mode, padding at most half the kernel), or None."""
    if type(pool) is not nn.MaxPool2d or pool.ceil_mode or pool.return_indices:
        return None
    k, s, p, d = (v if isinstance(v, int) else (v[0] if len(set(v)) == 1 else None)
                  for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation))
    if None in (k, s, p, d) or d != 1 or 2 * p > k:
        return None
    return k, s, p


class PackedResNet(ResNet):
    """timm's ResNet, packed: the stem's BatchNorm folds into the stem's float conv (weights and bias, recomputed only
    when they change), the max-pool runs before the ReLU (``relu(maxpool(y)) = maxpool(relu(y))`` exactly: max is
    monotonic and every pooling window holds at least one pixel of the image) so that the ReLU touches a quarter of the
    pixels, and the conv and pool run a few images at a time, so that the conv's output, the largest activation of the
    network, stays in cache for the pool instead of going to memory and back (and a fresh buffer of it is not
    page-faulted in at every call). Same children and state dict (``pack`` sets the class in place); without grad mode
    off, or with another stem, the ``ResNet`` forward runs.

    ``stem_dtype``: the dtype of the stem's conv and pool. None (the default) is bfloat16 where the CPU has native
    bfloat16 arithmetic (:func:`zoo_kernels.cpu_features.has_native_bf16`: AVX512_BF16 or AMX, where oneDNN's
    bfloat16 conv is several times faster than float32) and the stem conv has at least ``bf16_stem_macs``
    multiply-adds per image (ImageNet's 7x7 stem: 118 million; a 3x3 stem on 8x8 digits, 37 thousand, where float32
    costs microseconds), float32 elsewhere; set ``torch.float32`` for the float32 path. The stem's output is float32
    either way, and the binary layers after it are exact on whatever signs they get; bfloat16 rounds the stem's inputs
    and weights to 8 significant bits, which moves the stem's outputs by about 0.4% of their size and can flip the
    sign of a value next to 0 in the first binary conv. ``torch.int8`` runs the stem conv on oneDNN's u8 x s8 conv
    (:mod:`zoo.int8_stem`: uint8 levels over ``stem_input_range``, by default the range of [0, 1] images after
    ``pretrained_cfg``'s mean and std; per-channel int8 weights; bfloat16 or float32 out): an option, not exact,
    faster where the float stem is the bound.
    """

    stem_dtype: torch.dtype | None = None
    stem_input_range: tuple[float, float] | None = None  # the int8 stem's input range (None: from pretrained_cfg)
    stem_chunk_bytes: int = 4 << 20  # the stem conv's output per chunk of images, at most (one image at least)
    bf16_stem_macs: int = 1 << 22  # the default stem is bfloat16 from this many multiply-adds per image

    def _stem_dtype(self, x: torch.Tensor) -> torch.dtype:
        if self.stem_dtype is not None:
            return self.stem_dtype
        conv = self.conv1
        pixels = (x.shape[-2] // conv.stride[0]) * (x.shape[-1] // conv.stride[1])
        macs = pixels * conv.weight[0].numel() * conv.out_channels
        native = x.device.type == "cpu" and has_native_bf16()
        return torch.bfloat16 if native and macs >= self.bf16_stem_macs else torch.float32

    def _stem(self, x: torch.Tensor) -> torch.Tensor | None:
        """conv1 + bn1 (folded) -> maxpool -> ReLU, float32 channels_last; None where the packed stem does not
        apply."""
        conv, norm, pool = self.conv1, self.bn1, self.maxpool
        if (torch.is_grad_enabled() or type(conv) is not nn.Conv2d or not _is_inference_norm(norm)
                or type(self.act1) is not nn.ReLU or conv.padding_mode != "zeros"
                or type(pool) not in (nn.MaxPool2d, nn.Identity) or x.dim() != 4):
            return None
        dtype = self._stem_dtype(x)
        if dtype == torch.int8:
            if x.device.type != "cpu" or not int8_stem.available():
                raise RuntimeError("stem_dtype torch.int8 needs oneDNN's int8 conv (a CPU tensor, torch with oneDNN)")
            lo, hi = self._int8_stem_range()
            stem = _cached(self, "_int8_stem", _tensors(conv, norm), (norm.eps, lo, hi), lambda: _NotCopied(
                int8_stem.prepack(*_fold_norm(norm, conv.weight, conv.bias), lo, hi, conv.stride, conv.padding,
                                  conv.dilation, conv.groups))).value
            out_dtype = torch.bfloat16 if has_native_bf16() else torch.float32
            xs = int8_stem.quantize(x, stem)

            def run(chunk: torch.Tensor) -> torch.Tensor:
                return int8_stem.conv2d(chunk, stem, conv.stride, conv.padding, conv.dilation, conv.groups, out_dtype)
        else:
            w, b = _cached(self, "_folded_stem", _tensors(conv, norm), (norm.eps, dtype),
                           lambda: self._fold_stem(conv, norm, dtype))
            xs, out_dtype = x.to(dtype), dtype

            def run(chunk: torch.Tensor) -> torch.Tensor:
                return F.conv2d(chunk, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
        n, _, h, wd = x.shape
        ho = conv_output_size(h, conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0])
        wo = conv_output_size(wd, conv.kernel_size[1], conv.stride[1], conv.padding[1], conv.dilation[1])
        step = max(1, self.stem_chunk_bytes // max(1, ho * wo * conv.out_channels * out_dtype.itemsize))
        geometry = _pool_geometry(pool)
        if geometry is None or x.device.type != "cpu" or torch.compiler.is_compiling():  # torch's pool and ReLU
            parts = [pool(run(xs[i:i + step])) for i in range(0, max(n, 1), step)]
            y = (parts[0] if len(parts) == 1 else torch.cat(parts)).relu_()
            return y.to(self._activation_dtype(), memory_format=torch.channels_last)
        k, s, p = geometry  # the compiled pool + ReLU + float32 pass, into the output's slice of each chunk
        hp, wp = conv_output_size(ho, k, s, p, 1), conv_output_size(wo, k, s, p, 1)
        out = torch.empty(n, conv.out_channels, hp, wp, memory_format=torch.channels_last)
        for i in range(0, n, step):
            max_pool_relu_cpu(run(xs[i:i + step]), out[i:i + step], k, s, p)
        return out if self._activation_dtype() == torch.float32 else out.to(self._activation_dtype())

    def _activation_dtype(self) -> torch.dtype:
        """The stem output's dtype: float32, which the fused binary blocks take, in a float32 model; the model's own
        dtype after ``.half()``, ``.to(torch.bfloat16)`` or ``.double()`` (its layers then run on their own, in it)."""
        return self.conv1.weight.dtype

    def _int8_stem_range(self) -> tuple[float, float]:
        if self.stem_input_range is not None:
            lo, hi = self.stem_input_range
            return float(lo), float(hi)
        cfg = getattr(self, "pretrained_cfg", None) or {}
        if cfg.get("mean") is None or cfg.get("std") is None:
            raise ValueError("stem_dtype torch.int8: set stem_input_range, or give the model a pretrained_cfg with "
                             "mean and std")
        return int8_stem.normalized_range(tuple(cfg["mean"]), tuple(cfg["std"]))

    @staticmethod
    def _fold_stem(conv: nn.Conv2d, norm: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = _fold_norm(norm, conv.weight, conv.bias)
        # channels_last also for weights loaded contiguous
        return w.to(dtype, memory_format=torch.channels_last), b.to(dtype)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # the binary layers return float32 whatever the model's dtype: the head gets its own dtype (.half(), ...)
        weight = getattr(self.fc, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dtype != x.dtype:
            x = x.to(weight.dtype)
        return super().forward_head(x, pre_logits)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        stem = None if self.grad_checkpointing else self._stem(x)
        if stem is None:
            return super().forward_features(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(stem))))


# Modules whose class pack() swaps in place for its inference form (same children and state), and unpack() back.
_INFERENCE_FORMS: dict[type[nn.Module], type[nn.Module]] = {BasicBlock: PackedBasicBlock, ResNet: PackedResNet}


_PACKED = {BinaryConv2d: PackedBinaryConv2d, BinaryLinear: PackedBinaryLinear}


def _swap(model: nn.Module, convert) -> nn.Module:
    for name, child in list(model.named_children()):
        new = convert(child)
        if new is not None:
            setattr(model, name, new)
        else:
            _swap(child, convert)
    return model


def pack(model: nn.Module) -> nn.Module:
    """A packed copy of a trained binary model, in eval mode; the model itself is left as it was.

    Besides packing the binary layers, the float convs' weights are stored channels_last (see the module docstring)
    when anything was packed.
    """
    if getattr(model, "binarize_config", None) is None:
        raise ValueError("pack() needs a binarized model (from zoo.create_model or zoo.binarize_)")

    def convert(module: nn.Module) -> nn.Module | None:
        if type(module) in _PACKED and is_packable(module):
            return _PACKED[type(module)].from_binary(module)
        if type(module) is BinaryConvBlock and type(module.conv) is BinaryConv2d and is_packable(module.conv):
            return PackedBinaryConvBlock(module.norm, PackedBinaryConv2d.from_binary(module.conv))
        return None

    packed = _swap(copy.deepcopy(model), convert).eval()
    if any(isinstance(m, _PackedWeight) for m in packed.modules()):  # else (fp) the model packs to itself
        for m in packed.modules():
            if type(m) is nn.Conv2d:
                m.to(memory_format=torch.channels_last)
            elif type(m) in _INFERENCE_FORMS:
                m.__class__ = _INFERENCE_FORMS[type(m)]
    return packed


def unpack(model: nn.Module) -> nn.Module:
    """A trainable copy of a packed model with identical binarized weights (for fine-tuning)."""

    def convert(module: nn.Module) -> nn.Module | None:
        if isinstance(module, PackedBinaryConvBlock):
            return BinaryConvBlock(module.norm, module.conv.to_binary() if isinstance(module.conv, _PackedWeight)
                                   else module.conv)
        return module.to_binary() if isinstance(module, _PackedWeight) else None

    restored = _swap(copy.deepcopy(model), convert)
    trainable = {v: k for k, v in _INFERENCE_FORMS.items()}
    for m in restored.modules():
        if type(m) in trainable:
            m.__class__ = trainable[type(m)]
    return restored
