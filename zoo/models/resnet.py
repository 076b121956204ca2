"""Binary ResNets (XNOR-Net, arXiv:1603.05279, sec. 4.1: ResNet-18 as BWN and XNOR-Net) on timm's ResNet."""

from __future__ import annotations

from torch import nn

from ._builder import build_binary_model
from ._registry import register_model


def _create(name: str, pretrained: bool, **kwargs) -> nn.Module:
    scheme, _, backbone = name.partition("_resnet")
    return build_binary_model(name, "resnet" + backbone, scheme, pretrained, **kwargs)


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
    """XNOR-Net's k-bit ablation (sec. 4.3): binary weights, 2-bit inputs."""
    return _create("w1a2_resnet18", pretrained, **kwargs)


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
