"""AlexNet as trained in XNOR-Net (arXiv:1603.05279, sec. 4.1 and fig. 3): BatchNorm after every layer, binary
blocks ``BatchNorm -> BinActiv -> BinConv -> Pool``, first conv and last layer in full precision.

The float network is AlexNet with batch normalisation (Krizhevsky et al. 2012; the "AlexNet-BN" the paper trains):

    conv1 11x11/4 96 -> BN -> ReLU -> pool 3/2
    conv2 5x5 256    -> BN -> ReLU -> pool 3/2
    conv3 3x3 384    -> BN -> ReLU
    conv4 3x3 384    -> BN -> ReLU
    conv5 3x3 256    -> BN -> ReLU -> pool 3/2 -> avg-pool to 6x6
    fc6 4096 -> BN -> ReLU -> dropout -> fc7 4096 -> BN -> ReLU -> dropout -> fc (classes)

``binarize_`` turns conv2..conv5, fc6 and fc7 into binary layers with a BatchNorm in front (the paper's block; the
sign replaces no activation here: the ReLU after each conv feeds the next block's BatchNorm, which centres it).
Two details follow the authors' ``models/alexnetxnor.lua`` rather than float AlexNet: networks with binarized inputs
(``xnor``, ``xnor_nobeta``, k-bit) have no dropout by default, and the classifier starts small (N(0, 0.01), zero bias).
Dropout in front of a binary block feeds its BatchNorm a wider distribution in training than at test time, and the
input scale K = mean|I| carries that variance shift straight into the output: on digits, XNOR AlexNet with dropout
0.5 reached 56% while the same network without K reached 95%. A classifier initialised like the convs (Kaiming,
fan-out 10) starts at a cross-entropy near 20.
The small-input variant (digits, CIFAR) has a 3x3 stride-1 conv1 without its pool, pools its last feature map
to 2x2 instead of 6x6 and has 1024-wide fc6 / fc7 (4096 would be 21M weights for 10 classes of 8x8 images).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from ..schemes import get_scheme
from ._builder import build_binary_model, default_cfg
from ._registry import register_model

__all__ = ["XnorAlexNet"]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[tuple[str, nn.Module]]:
    return [
        ("conv", nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)),
        ("bn", nn.BatchNorm2d(c_out)),
        ("act", nn.ReLU(inplace=True)),
    ]


def _stage(layers: list[tuple[str, nn.Module]], pool: bool) -> nn.Sequential:
    if pool:
        layers = layers + [("pool", nn.MaxPool2d(3, 2, padding=1))]
    return nn.Sequential(OrderedDict(layers))


class XnorAlexNet(nn.Module):
    """AlexNet-BN, ready for XNOR-Net's binary blocks (see the module docstring)."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        drop_rate: float = 0.5,
        width: int | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        width = width or (1024 if small_input else 4096)
        stem = _conv_bn_relu(in_chans, 96, 3, 1, 1) if small_input else _conv_bn_relu(in_chans, 96, 11, 4, 2)
        self.stem = _stage(stem, pool=not small_input)
        self.stage2 = _stage(_conv_bn_relu(96, 256, 5, 1, 2), pool=True)
        self.stage3 = _stage(_conv_bn_relu(256, 384, 3, 1, 1), pool=False)
        self.stage4 = _stage(_conv_bn_relu(384, 384, 3, 1, 1), pool=False)
        self.stage5 = _stage(_conv_bn_relu(384, 256, 3, 1, 1), pool=True)
        pool = 2 if small_input else 6
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten(1))
        self.num_features = width
        self.head = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * pool * pool, width, bias=False)),
            ("bn6", nn.BatchNorm1d(width)),
            ("act6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(drop_rate)),
            ("fc7", nn.Linear(width, width, bias=False)),
            ("bn7", nn.BatchNorm1d(width)),
            ("act7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(drop_rate)),
        ]))
        self.fc = nn.Linear(width, num_classes)
        self.pretrained_cfg = default_cfg("stem.conv", "fc", num_classes=num_classes, pool_size=(pool, pool))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        for stage in (self.stem, self.stage2, self.stage3, self.stage4, self.stage5):
            x = stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _alexnet(small_input: bool = False, **kwargs) -> nn.Module:
    return XnorAlexNet(small_input=small_input, **kwargs)


def _create(scheme: str, pretrained: bool, **kwargs) -> nn.Module:
    if get_scheme(scheme).binarizes_inputs:
        kwargs.setdefault("drop_rate", 0.0)
    return build_binary_model(f"{scheme}_alexnet", "alexnet_bn", scheme, pretrained, factory=_alexnet, **kwargs)


@register_model
def fp_alexnet(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("fp", pretrained, **kwargs)


@register_model
def bwn_alexnet(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("bwn", pretrained, **kwargs)


@register_model
def xnor_alexnet(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor", pretrained, **kwargs)


@register_model
def xnor_nobeta_alexnet(pretrained: bool = False, **kwargs) -> nn.Module:
    return _create("xnor_nobeta", pretrained, **kwargs)
