"""AlexNet as trained in XNOR-Net (arXiv:1603.05279, sec. 4.1 and fig. 3), layer for layer as the authors' Torch
models (allenai/XNOR-Net, ``models/alexnet.lua`` for full precision and BWN, ``models/alexnetxnor.lua`` for binary
inputs). Feature maps at 224x224: 55 -> pool 27 -> 27 -> pool 13 -> 13 -> 13 -> 13 -> pool 6, every max-pool 3x3
stride 2 without padding; fc6 is a 6x6 conv on the 6x6 map and fc7 a 1x1 conv, as the authors write them.

Float layout (``fp``, ``bwn``; ``alexnet.lua``), every conv ``conv -> BN -> ReLU``::

    conv1 11x11/4 96 -> BN -> ReLU -> pool      conv2 5x5 256 -> BN -> ReLU -> pool
    conv3 3x3 384 -> BN -> ReLU                 conv4 3x3 384 -> BN -> ReLU
    conv5 3x3 256 -> BN -> ReLU -> pool -> dropout -> fc6 6x6 4096 -> BN -> ReLU -> dropout -> fc7 1x1 4096 -> BN
    -> ReLU -> fc (classes)

Binary-input layout (``xnor``, ``xnor_nobeta``, k-bit; ``alexnetxnor.lua``), the paper's block
``BatchNorm -> BinActiv -> BinConv -> Pool`` (fig. 3) with no ReLU and no BatchNorm of the conv's own::

    conv1 11x11/4 96 -> BN -> ReLU -> pool
    [BN -> sign -> conv2 5x5 256 -> pool] [BN -> sign -> conv3 3x3 384] [BN -> sign -> conv4 3x3 384]
    [BN -> sign -> conv5 3x3 256 -> pool] [BN -> sign -> fc6 6x6 4096] [BN -> sign -> fc7 1x1 4096]
    BN -> ReLU -> fc (classes)

``binarize_`` adds each block's BatchNorm (``BatchNorm -> BinActiv -> BinConv``); the stem's and the last BatchNorm are
built here. As in ``alexnetxnor.lua`` these BatchNorms have no affine parameters (``norm_affine=False`` by default for
the binary-input models), and the binary-input models have no dropout (``drop_rate`` 0 unless given; ``alexnet.lua``
has dropout in front of fc6 and fc7). ``block_relu=True`` builds the float layout for a binary-input scheme instead:
``conv -> BN -> ReLU -> pool`` in front of each block (an ablation). Weights start as the authors' ``rand_initialize``
(``N(0, 2 / fan_in)``), except the classifier (``N(0, 0.01)``, zero bias), which otherwise starts at a cross-entropy
near 20 on 10 classes.

The small-input variant (digits, CIFAR) has a 3x3 stride-1 conv1 without its pool, pads the two other pools by 1
(8 -> 4 -> 2 on 8x8 images, where unpadded pools would leave 1x1), makes fc6 a 2x2 conv on the 2x2 map and has 1024
channels in fc6 / fc7 (4096 would be 21M weights for 10 classes of 8x8 images).

timm's model interface: ``forward_features`` ends with conv5's stage (``num_features`` 256 channels), the head (the
fixed pool, fc6 and fc7) gives ``head_hidden_size`` (fc7's width) features to the classifier ``fc``, and
``feature_info`` lists the five conv stages for ``features_only=True``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

from timm.layers import get_device_dtype
from torch import Tensor, nn

from ._builder import build_binary_model, default_cfg, scheme_options
from ._registry import register_model

__all__ = ["XnorAlexNet"]


class XnorAlexNet(nn.Module):
    """AlexNet-BN in the authors' float or binary-input layout (see the module docstring).

    Args:
        binary_blocks: the binary-input layout (``alexnetxnor.lua``): no BatchNorm or ReLU after conv2 .. fc7, whose
            inputs get the blocks ``BatchNorm -> sign`` from ``binarize_``; affine-free stem and last BatchNorm.
        drop_rate: dropout in front of fc6 and fc7.
        width: channels of fc6 and fc7 (default 4096, 1024 for small inputs).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        drop_rate: float = 0.5,
        width: int | None = None,
        binary_blocks: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.binary_blocks = binary_blocks
        width = width or (1024 if small_input else 4096)
        pool_padding = 1 if small_input else 0

        def stage(c_in: int, c_out: int, kernel: int, stride: int, padding: int, pool: bool, float_out: bool):
            conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
            layers: list[tuple[str, nn.Module]] = [("conv", conv)]
            if float_out:
                layers += [("bn", nn.BatchNorm2d(c_out, eps=1e-3 if not binary_blocks else 1e-5,
                                                 affine=not binary_blocks)), ("act", nn.ReLU(inplace=True))]
            if pool:
                layers.append(("pool", nn.MaxPool2d(3, 2, padding=pool_padding)))
            return nn.Sequential(OrderedDict(layers))

        float_out = not binary_blocks
        if small_input:
            self.stem = stage(in_chans, 96, 3, 1, 1, pool=False, float_out=True)
        else:
            self.stem = stage(in_chans, 96, 11, 4, 2, pool=True, float_out=True)
        self.stage2 = stage(96, 256, 5, 1, 2, pool=True, float_out=float_out)
        self.stage3 = stage(256, 384, 3, 1, 1, pool=False, float_out=float_out)
        self.stage4 = stage(384, 384, 3, 1, 1, pool=False, float_out=float_out)
        self.stage5 = stage(384, 256, 3, 1, 1, pool=True, float_out=float_out)
        pool = 2 if small_input else 6
        self.global_pool = nn.AdaptiveAvgPool2d(pool)
        self.num_features = 256
        self.head_hidden_size = width
        reductions = (1, 2, 2, 2, 4) if small_input else (8, 16, 16, 16, 32)
        stages = ("stem", "stage2", "stage3", "stage4", "stage5")
        self.feature_info = [dict(num_chs=c, reduction=r, module=m)
                             for c, r, m in zip((96, 256, 384, 384, 256), reductions, stages, strict=True)]
        head: list[tuple[str, nn.Module]] = [
            ("drop6", nn.Dropout2d(drop_rate)),
            ("fc6", nn.Conv2d(256, width, pool, bias=False)),
        ]
        if float_out:
            head += [("bn6", nn.BatchNorm2d(width, eps=1e-3)), ("act6", nn.ReLU(inplace=True))]
        head += [
            ("drop7", nn.Dropout2d(drop_rate)),
            ("fc7", nn.Conv2d(width, width, 1, bias=False)),
            ("bn7", nn.BatchNorm2d(width, eps=1e-3, affine=not binary_blocks)),
            ("act7", nn.ReLU(inplace=True)),
            ("flatten", nn.Flatten(1)),
        ]
        self.head = nn.Sequential(OrderedDict(head))
        self.fc = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg = default_cfg("stem.conv", "fc", num_classes=num_classes, pool_size=(6, 6))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        if num_classes:
            nn.init.normal_(self.fc.weight, 0.0, 0.01)
            nn.init.zeros_(self.fc.bias)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none, ``forward`` returns the pre-logits). fc6 reads the fixed
        pool's map, so there is no global pool to change: ``global_pool`` must be None."""
        if global_pool is not None:
            raise ValueError(f"{type(self).__name__} has no global pool to change (fc6 reads a fixed-size pool), "
                             f"got global_pool={global_pool!r}")
        self.num_classes = num_classes
        dd = get_device_dtype(self)
        self.fc = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes else nn.Identity()

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
    if scheme_options(scheme, dict(kwargs)).binarizes_inputs:
        kwargs.setdefault("drop_rate", 0.0)
        kwargs.setdefault("norm_affine", False)
    config = scheme_options(scheme, kwargs)
    factory = functools.partial(_alexnet, binary_blocks=config.binarizes_inputs and not config.block_relu)
    return build_binary_model(f"{scheme}_alexnet", "alexnet_bn", config, pretrained, factory=factory, **kwargs)


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
