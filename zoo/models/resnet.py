"""Binary ResNets (XNOR-Net, arXiv:1603.05279, sec. 4.1: ResNet-18 as BWN and XNOR-Net) on timm's ResNet.

Every conv but the first is binary, as the paper's rule "first and last layer in full precision" reads, the three 1x1
downsample convs of the shortcuts included (binary, with the input scale ``K`` for binarized inputs; the paper says
nothing about them). ``float_downsample=True`` keeps them in full precision instead, as Bi-Real-Net and most later
binary ResNets do. In each ``BasicBlock`` with binarized inputs, ``act1`` gives way to the paper's block
``BatchNorm -> BinActiv -> BinConv`` (``zoo.convert``; ``block_relu=True`` keeps it); ``act2``, after the residual
sum, stays.
"""

from __future__ import annotations

from torch import nn

from ._builder import build_binary_model
from ._registry import register_model

# The shortcut convs of timm's ResNet-18 / -34 (the first block of stages 2-4).
_DOWNSAMPLE = ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]


def _create(name: str, pretrained: bool, float_downsample: bool = False, **kwargs) -> nn.Module:
    scheme, _, backbone = name.partition("_resnet")
    keep = list(_DOWNSAMPLE) if float_downsample else None
    recorded = {"float_downsample": True} if float_downsample else None  # so that a checkpoint rebuilds these layers
    return build_binary_model(name, "resnet" + backbone, scheme, pretrained, keep=keep, cfg_entries=recorded, **kwargs)


@register_model
def fp_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("fp_resnet18", pretrained, **kwargs)


@register_model
def bwn_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("bwn_resnet18", pretrained, **kwargs)


@register_model
def xnor_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor_resnet18", pretrained, **kwargs)


@register_model
def xnor_nobeta_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor_nobeta_resnet18", pretrained, **kwargs)


@register_model
def w1a2_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    """Binary weights and 2-bit inputs (the k-bit input quantizer of XNOR-Net sec. 3.2), without the input scale K."""
    return _create("w1a2_resnet18", pretrained, **kwargs)


@register_model
def w1a4_resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    """Binary weights and 4-bit inputs (the k-bit input quantizer of XNOR-Net sec. 3.2), without the input scale K."""
    return _create("w1a4_resnet18", pretrained, **kwargs)


@register_model
def fp_resnet34(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("fp_resnet34", pretrained, **kwargs)


@register_model
def bwn_resnet34(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("bwn_resnet34", pretrained, **kwargs)


@register_model
def xnor_resnet34(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor_resnet34", pretrained, **kwargs)


@register_model
def xnor_nobeta_resnet34(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor_nobeta_resnet34", pretrained, **kwargs)
