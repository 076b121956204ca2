"""Quantizers of XNOR-Net (Rastegari et al., 2016, arXiv:1603.05279) with their straight-through gradients.

Each quantizer is a small ``nn.Module`` with a registered name; ``get_quantizer("ste_sign")`` and
``SteSign()`` behave identically. The forward formula, the gradient and the paper section are in each docstring.

One convention holds across the whole project (training, bit-packing and kernels): ``sign(0) = +1``,
so a value is encoded as bit 1 exactly when ``x >= 0``.

The functions that apply a custom gradient (:func:`ste_sign`, :func:`scaled_sign`, :func:`kbit_quantize`,
:func:`binarize_gradient`) are ``torch.fx.wrap``-ped: ``torch.fx`` tracing records each as one call instead of tracing
into its autograd function's forward, so that a traced model keeps the straight-through gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from zoo_kernels.input_scale import box_filter

from ._unknown_name import UnknownNameError

__all__ = [
    "sign",
    "ste_sign",
    "scaled_sign",
    "filter_scale",
    "authors_gradient_scale",
    "WEIGHT_GRADIENTS",
    "kbit_quantize",
    "binarize_gradient",
    "xnor_input_scale",
    "SteSign",
    "BinActiv",
    "ScaledSign",
    "KBit",
    "BinaryGradient",
    "register_quantizer",
    "get_quantizer",
    "list_quantizers",
]


def sign(x: torch.Tensor) -> torch.Tensor:
    """``+1 where x >= 0, -1 elsewhere`` (so ``sign(0) = +1``, unlike ``torch.sign``)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class _SteSignFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x.abs() <= 1)
        return sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (inside,) = ctx.saved_tensors
        return grad * inside


@torch.fx.wrap
def ste_sign(x: torch.Tensor) -> torch.Tensor:
    """Sign with the straight-through estimator (BinaryNet, Courbariaux et al. 2016; XNOR-Net sec. 3.1).

    forward:  ``q = +1 if x >= 0 else -1``
    backward: ``dq/dx = 1{|x| <= 1}`` (the gradient of hard-tanh; zero where the input saturates)
    """
    return _SteSignFn.apply(x)


def filter_scale(w: torch.Tensor) -> torch.Tensor:
    """``alpha = mean |W|`` per output filter (dims 1..), kept as (O, 1, ...) for broadcasting.

    Accumulated in float64, so that re-binarizing ``alpha * sign(W)`` gives back exactly ``alpha`` (packed
    checkpoints unpack to identical binarized weights).
    """
    return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True, dtype=torch.float64).to(w.dtype)


# The weight gradients of ``alpha * sign(W)`` the zoo implements (see :func:`scaled_sign`).
WEIGHT_GRADIENTS = ("paper", "exact", "authors")


def authors_gradient_scale(w: torch.Tensor) -> float:
    """``n * (1 - 1/c)``: the factor by which the authors' ``updateBinaryGradWeight`` (allenai/XNOR-Net, util.lua)
    multiplies the paper's weight gradient, with ``n = c * kh * kw`` the filter size and ``c = W.shape[1]`` the input
    channels of a conv (the input features of a linear layer)."""
    n, c = w[0].numel(), w.shape[1]
    return n * (1.0 - 1.0 / c)


class _ScaledSignFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, gradient: str) -> torch.Tensor:
        magnitude = w.abs()
        alpha = filter_scale(w)
        # the authors zero the STE where |W| >= 1 (weight:le(-1), weight:ge(1)); the paper writes 1{|W| <= 1}
        ctx.save_for_backward(magnitude < 1 if gradient == "authors" else magnitude <= 1, alpha)
        ctx.fan_in = w[0].numel()
        ctx.scale = authors_gradient_scale(w) if gradient == "authors" else 1.0
        return torch.where(w >= 0, alpha, -alpha)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        inside, alpha = ctx.saved_tensors
        factor = torch.where(inside, alpha + 1.0 / ctx.fan_in, torch.full_like(alpha, 1.0 / ctx.fan_in))
        if ctx.scale != 1.0:
            factor = factor * ctx.scale
        return grad * factor, None


class _WeightSteFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w.abs() <= 1)
        return sign(w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (inside,) = ctx.saved_tensors
        return grad * inside


@torch.fx.wrap
def scaled_sign(w: torch.Tensor, gradient: str = "paper") -> torch.Tensor:
    """Binary-Weight-Network weight approximation ``W ~ alpha * sign(W)`` (XNOR-Net sec. 3.1, eq. 6 and 7).

    forward:  ``alpha = mean(|W|)`` over each output filter (dims 1..), the closed-form minimiser of
              ``||W - alpha * B||^2`` over ``B in {-1, +1}^n``; ``W~ = alpha * sign(W)``. The same for every
              ``gradient``.
    backward, with ``g = dC/dW~`` and ``n`` the filter size ``c * kh * kw`` (``gradient``):

    - ``"paper"``: ``dC/dW_i = g_i * (1/n + alpha * 1{|W_i| <= 1})``, the paper's formula (sec. 3.1, after eq. 7).
    - ``"exact"``: the chain rule through both factors, with the straight-through estimator for ``sign``:
      ``dC/dW_i = g_i * alpha * 1{|W_i| <= 1} + sign(W_i) / n * sum_j g_j * sign(W_j)`` (autograd of
      ``alpha(W) * ste(W)``, ``d alpha / dW_i = sign(W_i) / n``).
    - ``"authors"``: the authors' ``updateBinaryGradWeight`` (allenai/XNOR-Net, util.lua):
      ``dC/dW_i = g_i * (1/n + alpha * 1{|W_i| < 1}) * n * (1 - 1/c)`` (:func:`authors_gradient_scale`), which
      makes step sizes at the authors' learning rates what they were in the authors' runs.
    """
    if gradient == "paper" or gradient == "authors":
        return _ScaledSignFn.apply(w, gradient)
    if gradient == "exact":
        return filter_scale(w) * _WeightSteFn.apply(w)
    raise ValueError(f"unknown weight gradient {gradient!r}; known: {', '.join(WEIGHT_GRADIENTS)}")


class _KBitFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        levels = 2**bits - 1
        xc = x.clamp(-1.0, 1.0)
        # floor(v + 1/2) rounds halves up, so that 1 bit reproduces sign(0) = +1
        return 2.0 * (torch.floor(levels * (xc + 1.0) / 2.0 + 0.5) / levels - 0.5)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype), None


@torch.fx.wrap
def kbit_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The paper's k-bit quantizer for inputs in [-1, 1] (XNOR-Net sec. 3.2, "k-bit Quantization").

    forward:  ``q_k(x) = 2 * ( round((2^k - 1) * (x + 1) / 2) / (2^k - 1) - 1/2 )`` with ``x`` clipped to
              [-1, 1] and halves rounded up; ``q_1 = sign``
    backward: ``dq/dx = 1{|x| <= 1}`` (straight-through)
    """
    if bits < 1:
        raise ValueError(f"kbit_quantize needs bits >= 1, got {bits}")
    return _KBitFn.apply(x, bits)


class _BinaryGradientFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return sign(grad) * grad.abs().amax()


@torch.fx.wrap
def binarize_gradient(x: torch.Tensor) -> torch.Tensor:
    """The paper's binary gradient (XNOR-Net sec. 3.2, "Binary Gradient").

    forward:  identity
    backward: ``g~ = sign(g) * max(|g|)``, the gradient flowing into the layer binarized with the layer-wide
              maximum magnitude as its scale
    """
    return _BinaryGradientFn.apply(x)


def xnor_input_scale(
    x: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int] | int = 1,
    padding: tuple[int, int] | int = 0,
    dilation: tuple[int, int] | int = 1,
) -> torch.Tensor:
    """The per-position input scale ``K = A * k`` of XNOR-Networks (XNOR-Net sec. 3.2, fig. 2).

    ``A = mean_c |I|`` is the channel-wise mean of absolute input values (N, 1, H, W); ``k`` is a
    ``kh x kw`` box filter of ``1 / (kh * kw)``, convolved with the same stride, padding and dilation as the
    binary convolution, so ``K`` has the conv's output shape (N, 1, Ho, Wo). Zero padding counts as 0 in the
    average, exactly as the padded zeros contribute nothing to the convolution. ``A`` averages over all input
    channels, also for a grouped conv (the paper has no groups; no zoo model binarizes one).
    """
    return box_filter(x.abs().mean(dim=1, keepdim=True), kernel_size, stride, padding, dilation)


_QUANTIZERS: dict[str, Callable[..., nn.Module]] = {}


def register_quantizer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a quantizer available by name to ``get_quantizer`` and the schemes."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        _QUANTIZERS[name] = cls
        cls.quantizer_name = name
        return cls

    return wrap


@register_quantizer("ste_sign")
class SteSign(nn.Module):
    """Module form of :func:`ste_sign`: ``sign(x)`` forward, ``1{|x| <= 1}`` backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_sign(x)


@register_quantizer("bin_activ")
class BinActiv(SteSign):
    """The paper's BinActiv layer: the binary activation ``sign(I)`` of an XNOR block.

    In the block ``BatchNorm -> BinActiv -> BinConv -> Pool`` (XNOR-Net sec. 3.2, fig. 3) it sits
    inside the binary conv as its ``input_quantizer``; the conv computes ``K`` from the same, not yet
    binarized, input.
    """


@register_quantizer("scaled_sign")
class ScaledSign(nn.Module):
    """Module form of :func:`scaled_sign`: ``alpha * sign(W)`` with ``alpha = mean|W|`` per output filter.

    ``gradient`` picks the weight gradient (``"paper"``, ``"exact"``, ``"authors"``; see :func:`scaled_sign`); it is a
    training choice, which :class:`zoo.training.weight_update.WeightUpdate` sets for a whole model. The forward, and
    so the packed form, is the same for all three.
    """

    def __init__(self, gradient: str = "paper"):
        super().__init__()
        if gradient not in WEIGHT_GRADIENTS:
            raise ValueError(f"unknown weight gradient {gradient!r}; known: {', '.join(WEIGHT_GRADIENTS)}")
        self.gradient = gradient

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return scaled_sign(w, self.gradient)

    def extra_repr(self) -> str:
        return f"gradient={self.gradient!r}"


@register_quantizer("kbit")
class KBit(nn.Module):
    """Module form of :func:`kbit_quantize` with a fixed number of bits."""

    def __init__(self, bits: int = 2):
        super().__init__()
        if bits < 1:
            raise ValueError(f"KBit needs bits >= 1, got {bits}")
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kbit_quantize(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@register_quantizer("binary_gradient")
class BinaryGradient(nn.Module):
    """Module form of :func:`binarize_gradient`: identity forward, ``sign(g) * max|g|`` backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binarize_gradient(x)


def list_quantizers() -> list[str]:
    return sorted(_QUANTIZERS)


def get_quantizer(spec: str | nn.Module | None, **kwargs) -> nn.Module | None:
    """A quantizer from its registered name (``"ste_sign"``, ``"kbit"`` with ``bits=2``...) or as given."""
    if spec is None or isinstance(spec, nn.Module):
        return spec
    if spec not in _QUANTIZERS:
        raise UnknownNameError("quantizer", spec, _QUANTIZERS)
    return _QUANTIZERS[spec](**kwargs)
