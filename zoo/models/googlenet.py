"""GoogLeNet (Inception v1; Szegedy et al. 2015) as Binary-Weight-Network and XNOR-Network (XNOR-Net,
arXiv:1603.05279, sec. 4.1 and table 2: GoogLeNet BWN).

The float network is torchvision's maintained ``GoogLeNet`` (with batch normalisation, without the auxiliary
classifiers, which the paper's binary networks do not use), its ``conv -> BN -> ReLU`` units with the ReLU as a
module (:class:`ZooBasicConv2d`, same state dict). ``binarize_`` makes every conv but ``conv1`` binary. With binarized
inputs each becomes the paper's block ``BatchNorm -> BinActiv -> BinConv`` (fig. 3), and the ReLU of every unit whose
output only reaches binary blocks (directly, through a concatenation or a max-pool) is removed, so that nothing sits
between the previous conv's BatchNorm and the block's BatchNorm but concatenation and pooling: the ReLUs that stay are
``conv1``'s (the float stem, as in the authors' AlexNet) and those of the four branch ends of ``inception5b``, which
feed the float classifier. ``block_relu=True`` keeps every ReLU (an ablation). The small-input variant (digits, CIFAR)
has a 3x3 stride-1 ``conv1`` and drops the two stem max-pools.

timm's model interface: ``forward_features`` runs up to ``inception5b``, ``forward_head`` is timm's selectable global
pool (``global_pool``), dropout and ``fc``, and ``feature_info`` lists the last unit at each stride for
``features_only=True``.
"""

from __future__ import annotations

import functools
from typing import Any

from timm.layers import SelectAdaptivePool2d, create_classifier, get_device_dtype
from torch import Tensor, nn
from torchvision.models.googlenet import GoogLeNet, Inception, InceptionAux

from ._builder import build_binary_model, default_cfg, scheme_options
from ._registry import register_model

__all__ = ["ZooBasicConv2d", "ZooGoogLeNet"]

# The units whose output reaches the classifier or feeds the float stem's pool, not a binary block.
_FLOAT_OUTPUTS = ("conv1", "inception5b.branch1", "inception5b.branch2.1", "inception5b.branch3.1",
                  "inception5b.branch4.1")
# The layers of ``forward_features``, in torchvision's order.
_FEATURE_LAYERS = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                   "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                   "inception5a", "inception5b")


class ZooBasicConv2d(nn.Module):
    """torchvision's ``BasicConv2d`` (``conv -> BN(eps 1e-3) -> ReLU``) with the ReLU as the module ``act``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


def _Inception(*args: Any, **kwargs: Any) -> Inception:  # noqa: N802 (stands for the class)
    return Inception(*args, conv_block=ZooBasicConv2d, **kwargs)


class ZooGoogLeNet(GoogLeNet):
    """torchvision's GoogLeNet with timm's model interface (``num_classes``, ``pretrained_cfg``, ``in_chans``).

    ``binary_blocks``: remove the ReLUs in front of binary blocks (see the module docstring). ``global_pool``: timm's
    pool type (``"avg"``, ``"max"``, ..., ``""`` for none).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, drop_rate: float = 0.2,
                 binary_blocks: bool = False, global_pool: str = "avg"):
        super().__init__(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=True,
                         blocks=[ZooBasicConv2d, _Inception, InceptionAux], dropout=drop_rate)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.fc.in_features
        del self.avgpool  # timm's selectable pool instead, so that reset_classifier can change it
        self.global_pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        if global_pool != "avg" or not num_classes:
            self.reset_classifier(num_classes, global_pool)
        reductions = (1, 1, 1, 2, 4) if small_input else (2, 4, 8, 16, 32)
        units = ("conv1", "conv3", "inception3b", "inception4e", "inception5b")  # the last at each stride
        self.feature_info = [dict(num_chs=c, reduction=r, module=m)
                             for c, r, m in zip((64, 192, 480, 832, 1024), reductions, units, strict=True)]
        if small_input:
            self.conv1 = ZooBasicConv2d(in_chans, 64, kernel_size=3, stride=1, padding=1)
            self.maxpool1 = nn.Identity()
            self.maxpool2 = nn.Identity()
        elif in_chans != 3:
            self.conv1 = ZooBasicConv2d(in_chans, 64, kernel_size=7, stride=2, padding=3)
        if binary_blocks:
            for name, module in self.named_modules():
                if isinstance(module, ZooBasicConv2d) and name not in _FLOAT_OUTPUTS:
                    module.act = nn.Identity()
        self.pretrained_cfg = default_cfg("conv1.conv", "fc", num_classes=num_classes, pool_size=(7, 7))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """timm's: a new classifier for ``num_classes`` (0: none, ``forward`` returns the pooled features) after the
        pool ``global_pool`` (None: the current one; ``""``: none, ``forward`` returns the feature map)."""
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool_type,
                                                      **get_device_dtype(self))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_features(self, x: Tensor) -> Tensor:
        for name in _FEATURE_LAYERS:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _googlenet(small_input: bool = False, **kwargs) -> nn.Module:
    return ZooGoogLeNet(small_input=small_input, **kwargs)


def _create(scheme: str, pretrained: bool, **kwargs) -> nn.Module:
    config = scheme_options(scheme, kwargs)
    factory = functools.partial(_googlenet, binary_blocks=config.binarizes_inputs and not config.block_relu)
    return build_binary_model(f"{scheme}_googlenet", "googlenet", config, pretrained, factory=factory, **kwargs)


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
