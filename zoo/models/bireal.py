"""Bi-Real-Net-18 (Liu et al., ECCV 2018, arXiv:1808.00278) on timm's ResNet: a real-valued shortcut around every
binary conv.

XNOR-Net's ResNet-18 (arXiv:1603.05279) adds a shortcut every two convs, so the real-valued signal between them is
lost to ``sign()``. Bi-Real-Net adds one around each conv, carrying the real-valued activation past every sign::

    x = x + BN(BinConv(sign(BN0(x))))        per 3x3 conv, twice per block
    shortcut on a stride-2 / widening block: AvgPool 2x2 -> 1x1 conv (full precision) -> BN

``BN0`` is the BatchNorm that ``binarize_`` puts in front of every binary conv (XNOR-Net's block), acting as a
learned per-channel threshold for the sign. The float variant (``fp_bireal_resnet18``) has a ReLU where the sign goes,
so that it is a non-linear network of the same shape. Training tricks of the Bi-Real paper beyond the architecture
(ApproxSign's piecewise-polynomial gradient, magnitude-aware weight gradient, two-step training) are not used: this
is the architecture with XNOR-Net's quantizers, so the comparison with ``xnor_resnet18`` isolates the shortcuts.
"""

from __future__ import annotations

from typing import Any

from timm.models.resnet import ResNet
from torch import Tensor, nn

from ..convert import register_binary_activations
from ._builder import build_binary_model, default_cfg, small_input_stem_
from ._registry import register_model

__all__ = ["BiRealBlock"]


class BiRealBlock(nn.Module):
    """Two 3x3 convs, each with its own shortcut (timm ``BasicBlock`` interface; ``expansion = 1``)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        **unused: Any,
    ):
        super().__init__()
        defaults = {"cardinality": 1, "base_width": 64, "reduce_first": 1, "dilation": 1, "first_dilation": 1}
        bad = {
            k: v for k, v in unused.items() if v is not None and k not in ("device", "dtype") and defaults.get(k) != v
        }
        if bad:
            raise ValueError(f"BiRealBlock does not support {bad}")
        self.act1 = act_layer(inplace=False)  # x is also the shortcut
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.act2 = act_layer(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.bn1(self.conv1(self.act1(x))) + shortcut
        return self.bn2(self.conv2(self.act2(x))) + x


register_binary_activations(BiRealBlock, (("act1", "conv1"), ("act2", "conv2")))


def _bireal_resnet18(small_input: bool = False, **kwargs: Any) -> nn.Module:
    model = ResNet(block=BiRealBlock, layers=(2, 2, 2, 2), avg_down=True, **kwargs)
    if small_input:
        small_input_stem_(model, kwargs.get("in_chans", 3))
    downsample = [n for n, m in model.named_modules() if isinstance(m, BiRealBlock) and m.downsample is not None]
    model.pretrained_cfg = default_cfg(
        "conv1", "fc", num_classes=model.num_classes, pool_size=(7, 7),
        keep_full_precision=[f"{n}.downsample" for n in downsample],
    )
    return model


def _create(scheme: str, pretrained: bool, **kwargs) -> nn.Module:
    return build_binary_model(
        f"{scheme}_bireal_resnet18", "bireal_resnet18", scheme, pretrained, factory=_bireal_resnet18, **kwargs
    )


@register_model
def fp_bireal_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("fp", pretrained, **kwargs)


@register_model
def bwn_bireal_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("bwn", pretrained, **kwargs)


@register_model
def xnor_bireal_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor", pretrained, **kwargs)


@register_model
def xnor_nobeta_bireal_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor_nobeta", pretrained, **kwargs)
