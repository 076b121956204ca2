"""Packed inference form of binary layers: 1 bit per weight, plus ``alpha`` per output filter.

Bit layout (from ``zoo_kernels.packing``): int32 words along input channels, channel ``c`` in bit ``c % 32`` of
word ``c // 32`` (LSB first), bit 1 for ``W >= 0`` (``sign(0) = +1``), padding bits 0. A conv weight
``(O, C, kh, kw)`` packs to ``(O, kh, kw, ceil(C / 32))``, a linear weight ``(O, F)`` to ``(O, ceil(F / 32))``.

A packed layer computes what its trainable layer computes in eval mode. A packed XNOR conv (sign inputs, groups 1)
runs on bit operations: ``alpha * K * (n - 2 * popcount(x XOR w))`` (``zoo_kernels.ops.xnor_conv2d``: the compiled
CPU kernel or its exact reference, the Triton kernel on CUDA; whichever kernel the input's device has, else the float
path); other packed layers rebuild ``alpha * sign(W)`` from the bits and use a float conv. ``unpack(pack(model))``
has identical binarized weights and can be fine-tuned.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from zoo_kernels.ops import has_kernel
from zoo_kernels.ops import xnor_conv2d as popcount_conv2d
from zoo_kernels.packing import pack_weight_signs, unpack_signs

from .layers import BinaryConv2d, BinaryLinear
from .quantizers import filter_scale

__all__ = ["PackedBinaryConv2d", "PackedBinaryLinear", "pack", "unpack", "is_packable"]


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on_bits = self.runs_on_bits and x.dim() == 4 and not x.requires_grad
        if on_bits and has_kernel("xnor_conv2d", x.device.type):
            return popcount_conv2d(
                x, self.weight_bits, self.alpha, self.in_channels, self.kernel_size, self.stride, self.padding,
                self.dilation, input_scale=self.input_scale, bias=self.bias,
            )
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
    """A packed copy of a trained binary model, in eval mode; the model itself is left as it was."""
    if getattr(model, "binarize_config", None) is None:
        raise ValueError("pack() needs a binarized model (from zoo.create_model or zoo.binarize_)")

    def convert(module: nn.Module) -> nn.Module | None:
        if type(module) in _PACKED and is_packable(module):
            return _PACKED[type(module)].from_binary(module)
        return None

    return _swap(copy.deepcopy(model), convert).eval()


def unpack(model: nn.Module) -> nn.Module:
    """A trainable copy of a packed model with identical binarized weights (for fine-tuning)."""

    def convert(module: nn.Module) -> nn.Module | None:
        return module.to_binary() if isinstance(module, _PackedWeight) else None

    return _swap(copy.deepcopy(model), convert)
