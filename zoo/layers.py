"""Binary layers: a float conv / linear plus an input quantizer, a kernel quantizer and the XNOR input scale.

The layers are thin, as in larq: each keeps its float latent weight for training and quantizes it on the fly,
so that ``BinaryConv2d(x) == F.conv2d(q_in(x), q_w(W)) * K`` (XNOR-Net, arXiv:1603.05279, sec. 3.2, eq. 11).

The layers check their input's shape in :func:`checked_input`, which ``torch.fx`` records as one call: traced models
(``torchvision``'s and timm's feature extractors) keep the check, and the tracer never meets its branches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import BinActiv, BinaryGradient, ScaledSign, get_quantizer, xnor_input_scale

__all__ = ["BinaryConv2d", "BwnConv2d", "XnorConv2d", "BinaryLinear", "BinaryConvBlock", "FeatureBatchNorm"]


@torch.fx.wrap
def checked_input(x: torch.Tensor, layer: str, features: int | None = None) -> torch.Tensor:
    """``x`` if it fits ``layer``: ``(N, C, H, W)`` for a conv (``features`` None), ``(..., features)`` for a layer
    that reads the last dimension; a ValueError naming ``layer`` otherwise."""
    if features is None:
        if x.dim() != 4:
            raise ValueError(f"{layer} expects a 4D input (N, C, H, W), got shape {tuple(x.shape)}")
    elif x.dim() < 2 or x.shape[-1] != features:
        raise ValueError(f"{layer} expects an input of shape (..., {features}), got {tuple(x.shape)}")
    return x


class _BinaryMixin:
    """What binary conv and linear layers share: quantizer set-up and the quantized operands."""

    def _init_quantizers(
        self,
        input_quantizer: str | nn.Module | None,
        kernel_quantizer: str | nn.Module | None,
        input_scale: bool,
        binary_gradient: bool,
        input_bits: int | None = None,
    ) -> None:
        kwargs = {"bits": input_bits} if input_quantizer == "kbit" else {}
        self.input_quantizer = get_quantizer(input_quantizer, **kwargs)
        self.kernel_quantizer = get_quantizer(kernel_quantizer)
        self.input_scale = input_scale
        self.grad_quantizer = BinaryGradient() if binary_gradient else None

    def quantized_weight(self) -> torch.Tensor:
        return self.kernel_quantizer(self.weight) if self.kernel_quantizer is not None else self.weight

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        return x

    def quantized_output_gradient(self, y: torch.Tensor) -> torch.Tensor:
        """The binary gradient option (XNOR-Net sec. 3.2): the gradient arriving at the layer's output, ``g^in``, is
        binarized to ``sign(g^in) * max|g^in|`` before the backward convs (for the weights and for the input) use it.
        Identity in the forward pass."""
        return self.grad_quantizer(y) if self.grad_quantizer is not None else y

    def binary_repr(self) -> str:
        parts = []
        for name in ("input_quantizer", "kernel_quantizer"):
            q = getattr(self, name)
            parts.append(f"{name}={getattr(q, 'quantizer_name', None) if q is not None else None}")
        parts.append(f"input_scale={self.input_scale}")
        return ", ".join(parts)


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """A conv whose weights and/or inputs are binarized on the fly.

    forward: ``y = conv(q_in(I), q_w(W)) * K + b`` where ``q_w`` is typically ``alpha * sign(W)`` (BWN),
    ``q_in`` is ``sign`` (XNOR) or a k-bit quantizer, and ``K = A * k`` is the XNOR input scale computed from
    the unquantized input (XNOR-Net sec. 3.2) when ``input_scale`` is on.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        input_quantizer: str | nn.Module | None = None,
        kernel_quantizer: str | nn.Module | None = "scaled_sign",
        input_scale: bool = False,
        binary_gradient: bool = False,
        input_bits: int | None = None,
        device=None,
        dtype=None,
    ):
        if isinstance(padding, str):
            raise ValueError(f"BinaryConv2d needs explicit integer padding, got padding={padding!r}")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, device=device, dtype=dtype
        )
        if input_scale and input_quantizer is None:
            raise ValueError("input_scale (K) scales binarized inputs: it needs an input_quantizer")
        self._init_quantizers(input_quantizer, kernel_quantizer, input_scale, binary_gradient, input_bits)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, **kwargs) -> BinaryConv2d:
        """A binary conv with the geometry and latent weights of a float ``nn.Conv2d``."""
        if conv.padding_mode != "zeros":
            raise ValueError(f"binary convs support zero padding only, got padding_mode={conv.padding_mode!r}")
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **kwargs,
        )
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = checked_input(x, type(self).__name__)
        scale = None
        if self.input_scale:
            scale = xnor_input_scale(x, self.kernel_size, self.stride, self.padding, self.dilation)
        y = F.conv2d(self.quantized_input(x), self.quantized_weight(), None, self.stride, self.padding, self.dilation,
                     self.groups)
        if scale is not None:
            y = y * scale
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return self.quantized_output_gradient(y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.binary_repr()}"


class BwnConv2d(BinaryConv2d):
    """Binary-Weight-Network conv (XNOR-Net sec. 3.1): ``conv(I, alpha * sign(W))``, float inputs."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_quantizer", ScaledSign())
        super().__init__(*args, **kwargs)


class XnorConv2d(BinaryConv2d):
    """XNOR-Network conv (XNOR-Net sec. 3.2): ``conv(sign(I), alpha * sign(W)) * K``.

    ``input_scale=False`` drops ``K``, the paper's ablation without the input scaling factor.
    """

    def __init__(self, *args, input_scale: bool = True, **kwargs):
        kwargs.setdefault("input_quantizer", BinActiv())
        kwargs.setdefault("kernel_quantizer", ScaledSign())
        super().__init__(*args, input_scale=input_scale, **kwargs)


class BinaryLinear(_BinaryMixin, nn.Linear):
    """A linear layer with binarized weights and/or inputs.

    forward: ``y = (q_in(x) @ q_w(W)^T) * K + b`` with ``alpha`` per output unit and, for XNOR, the
    per-sample input scale ``K = mean_j |x_j|`` (the fully connected case of sec. 3.2: one "position").
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        input_quantizer: str | nn.Module | None = None,
        kernel_quantizer: str | nn.Module | None = "scaled_sign",
        input_scale: bool = False,
        binary_gradient: bool = False,
        input_bits: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if input_scale and input_quantizer is None:
            raise ValueError("input_scale (K) scales binarized inputs: it needs an input_quantizer")
        self._init_quantizers(input_quantizer, kernel_quantizer, input_scale, binary_gradient, input_bits)

    @classmethod
    def from_float(cls, linear: nn.Linear, **kwargs) -> BinaryLinear:
        """A binary linear layer with the shape and latent weights of a float ``nn.Linear``."""
        new = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            **kwargs,
        )
        with torch.no_grad():
            new.weight.copy_(linear.weight)
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = checked_input(x, type(self).__name__, self.in_features)
        y = F.linear(self.quantized_input(x), self.quantized_weight())
        if self.input_scale:
            y = y * x.abs().mean(dim=-1, keepdim=True)
        if self.bias is not None:
            y = y + self.bias
        return self.quantized_output_gradient(y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.binary_repr()}"


class FeatureBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the last dimension of ``(..., F)``: the features a ``Linear`` reads, for inputs of any
    rank (a transformer's ``(B, T, F)`` tokens as well as ``(B, F)``), so that the BatchNorm in front of a binary
    linear's sign normalises what the sign binarizes. The same parameters and state dict as ``BatchNorm1d(F)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = checked_input(x, type(self).__name__, self.num_features)
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class BinaryConvBlock(nn.Sequential):
    """The paper's binary block without its pool: ``BatchNorm -> BinActiv -> BinConv`` (XNOR-Net fig. 3).

    The BatchNorm centres the input so that ``sign()`` splits it into both signs; BinActiv is the binary conv's
    ``input_quantizer``. Used by the registry around every conv whose inputs are binarized.
    """

    def __init__(self, norm: nn.Module, conv: BinaryConv2d | BinaryLinear):
        super().__init__()
        self.norm = norm
        self.conv = conv
