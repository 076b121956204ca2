"""Packed inference form of binary layers: 1 bit per weight, plus ``alpha`` per output filter.

Bit layout (from ``zoo_kernels.packing``): int32 words along input channels, channel ``c`` in bit ``c % 32`` of
word ``c // 32`` (LSB first), bit 1 for ``W >= 0`` (``sign(0) = +1``), padding bits 0. A conv weight
``(O, C, kh, kw)`` packs to ``(O, kh, kw, ceil(C / 32))``, a linear weight ``(O, F)`` to ``(O, ceil(F / 32))``.

A packed layer computes what its trainable layer computes in eval mode. A packed XNOR conv (sign inputs, groups 1)
runs on bit operations: ``alpha * K * (n - 2 * popcount(x XOR w))`` (``zoo_kernels.ops.xnor_conv2d``: the compiled
CPU kernel or its exact reference, the Triton kernel on CUDA; whichever kernel the input's device has, else the float
path); other packed layers rebuild ``alpha * sign(W)`` from the bits and use a float conv. ``unpack(pack(model))``
has identical binarized weights and can be fine-tuned.

Inference layout: in a packed block ``BatchNorm -> sign -> conv`` the BatchNorm is applied in the conv's sign-packing
pass (``PackedBinaryConvBlock``: the same parameters and state dict, one pass over the activation instead of two),
and ``pack`` stores the float convs' weights channels_last, so that the float stem's output, and with it every
activation after it, is channels_last: the layout the CPU kernel packs fastest and returns.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from zoo_kernels.ops import has_kernel
from zoo_kernels.ops import xnor_conv2d as popcount_conv2d
from zoo_kernels.packing import pack_weight_signs, unpack_signs

from .layers import BinaryConv2d, BinaryConvBlock, BinaryLinear
from .quantizers import filter_scale

__all__ = ["PackedBinaryConv2d", "PackedBinaryConvBlock", "PackedBinaryLinear", "pack", "unpack", "is_packable"]


def is_packable(layer: nn.Module) -> bool:
    """A binary layer whose weights are ``alpha * sign(W)`` (every registered scheme but ``fp``)."""
    return getattr(getattr(layer, "kernel_quantizer", None), "quantizer_name", None) == "scaled_sign"


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
        signs = self._signs()
        return self.alpha.view(-1, *([1] * (signs.dim() - 1))).to(signs.dtype) * signs


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
        """Whether inference uses the XNOR-popcount kernel: sign-binarized inputs, no groups."""
        name = getattr(self.input_quantizer, "quantizer_name", None)
        return name in ("bin_activ", "ste_sign") and self.groups == 1

    def on_bits(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` runs the popcount kernel (else the float conv of the rebuilt weights)."""
        return self.runs_on_bits and x.dim() == 4 and not x.requires_grad and has_kernel("xnor_conv2d", x.device.type)

    def popcount_forward(
        self, x: torch.Tensor, norm_scale: torch.Tensor | None = None, norm_shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The popcount kernel's forward, of ``x * norm_scale[c] + norm_shift[c]`` when given (a fused BatchNorm)."""
        return popcount_conv2d(
            x, self.weight_bits, self.alpha, self.in_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, input_scale=self.input_scale, bias=self.bias, norm_scale=norm_scale, norm_shift=norm_shift,
        )

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
        """Whether inference uses the XNOR-popcount kernel: sign-binarized inputs."""
        return getattr(self.input_quantizer, "quantizer_name", None) in ("bin_activ", "ste_sign")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A fully connected layer is a 1x1 conv over a 1x1 image: K = mean_j |x_j| per sample, as in BinaryLinear.
        if self.runs_on_bits and x.dim() == 2 and not x.requires_grad and has_kernel("xnor_conv2d", x.device.type):
            y = popcount_conv2d(
                x[:, :, None, None], self.weight_bits[:, None, None, :], self.alpha, self.in_features, 1,
                input_scale=self.input_scale, bias=self.bias,
            )
            return y.flatten(1)
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


def _versions(tensors: tuple[torch.Tensor, ...]) -> tuple[int, ...] | None:
    """The version counters of ``tensors`` (None for inference tensors, which have none)."""
    try:
        return tuple(t._version for t in tensors)
    except RuntimeError:
        return None


class PackedBinaryConvBlock(BinaryConvBlock):
    """:class:`~zoo.layers.BinaryConvBlock` ``BatchNorm -> sign -> packed conv`` whose BatchNorm runs inside the
    conv's sign packing.

    At inference the BatchNorm is ``y = x * a + b`` per channel (``a = weight / sqrt(running_var + eps)``,
    ``b = bias - running_mean * a``, computed as torch's CPU BatchNorm computes them, so that ``y`` rounds alike);
    the packing pass of the popcount kernel applies it while it reads ``x``, instead of a separate pass writing ``y``.
    ``a`` and ``b`` are recomputed only when a BatchNorm tensor changes. Same children and state dict as
    ``BinaryConvBlock``; any other case (training, gradients, a device without a kernel) runs the two layers.
    """

    def fused(self, x: torch.Tensor) -> bool:
        norm = self.norm
        return (type(norm) is nn.BatchNorm2d and not norm.training and norm.running_mean is not None
                and x.dtype == torch.float32 and isinstance(self.conv, PackedBinaryConv2d) and self.conv.on_bits(x))

    def _norm_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        norm = self.norm
        tensors = (norm.running_mean, norm.running_var, norm.weight, norm.bias)
        versions = _versions(tuple(t for t in tensors if t is not None))
        cached = getattr(self, "_affine", None)  # (tensors, versions, eps, (a, b)): the same objects, unchanged
        if (versions is not None and cached is not None and all(u is v for u, v in zip(cached[0], tensors, strict=True))
                and cached[1:3] == (versions, norm.eps)):
            return cached[3]
        with torch.no_grad():
            a = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                a = a * norm.weight
            bias = norm.bias.double() if norm.bias is not None else 0.0
            b = (bias - norm.running_mean.double() * a.double()).float()  # one rounding, as the kernel's fma
        self._affine = (tensors, versions, norm.eps, (a, b))
        return a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused(x):
            return self.conv.popcount_forward(x, *self._norm_affine())
        return super().forward(x)


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
    return packed


def unpack(model: nn.Module) -> nn.Module:
    """A trainable copy of a packed model with identical binarized weights (for fine-tuning)."""

    def convert(module: nn.Module) -> nn.Module | None:
        if isinstance(module, PackedBinaryConvBlock):
            return BinaryConvBlock(module.norm, module.conv.to_binary() if isinstance(module.conv, _PackedWeight)
                                   else module.conv)
        return module.to_binary() if isinstance(module, _PackedWeight) else None

    return _swap(copy.deepcopy(model), convert)
