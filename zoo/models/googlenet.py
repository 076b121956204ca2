"""GoogLeNet (Inception v1; Szegedy et al. 2015) as Binary-Weight-Network and XNOR-Network (XNOR-Net,
arXiv:1603.05279, sec. 4.1 and table 2: GoogLeNet BWN).

The float network is torchvision's maintained ``GoogLeNet`` (with batch normalisation, without the auxiliary
classifiers, which the paper's binary networks do not use). ``binarize_`` makes every conv but ``conv1`` binary,
each with a BatchNorm in front (the paper's ``BatchNorm -> BinActiv -> BinConv`` block); every conv's input follows a
ReLU or a max-pool, so that BatchNorm is what gives ``sign()`` both signs. The small-input variant (digits, CIFAR)
has a 3x3 stride-1 ``conv1`` and drops the two stem max-pools.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.googlenet import BasicConv2d, GoogLeNet

from ._builder import build_binary_model, default_cfg
from ._registry import register_model

__all__ = ["ZooGoogLeNet"]


class ZooGoogLeNet(GoogLeNet):
    """torchvision's GoogLeNet with timm's model interface (``num_classes``, ``pretrained_cfg``, ``in_chans``)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, drop_rate: float = 0.2):
        super().__init__(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=True,
                         dropout=drop_rate)
        self.num_classes = num_classes
        self.num_features = self.fc.in_features
        if small_input:
            self.conv1 = BasicConv2d(in_chans, 64, kernel_size=3, stride=1, padding=1)
            self.maxpool1 = nn.Identity()
            self.maxpool2 = nn.Identity()
        elif in_chans != 3:
            self.conv1 = BasicConv2d(in_chans, 64, kernel_size=7, stride=2, padding=3)
        self.pretrained_cfg = default_cfg("conv1.conv", "fc", num_classes=num_classes, pool_size=(7, 7))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


def _googlenet(small_input: bool = False, **kwargs) -> nn.Module:
    return ZooGoogLeNet(small_input=small_input, **kwargs)


def _create(scheme: str, pretrained: bool, **kwargs) -> nn.Module:
    return build_binary_model(f"{scheme}_googlenet", "googlenet", scheme, pretrained, factory=_googlenet, **kwargs)


@register_model
def fp_googlenet(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("fp", pretrained, **kwargs)


@register_model
def bwn_googlenet(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("bwn", pretrained, **kwargs)


@register_model
def xnor_googlenet(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor", pretrained, **kwargs)


@register_model
def xnor_nobeta_googlenet(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor_nobeta", pretrained, **kwargs)
