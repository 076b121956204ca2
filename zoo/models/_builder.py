"""Build a zoo model: a float backbone (timm's, or a family's own factory), an optional small-input stem, then
``binarize_`` with the model's scheme."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ..convert import binarize_
from ..schemes import BinarizeConfig, get_scheme

__all__ = ["build_binary_model", "default_cfg", "small_input_stem_", "scheme_options", "PAPER_ID", "SCHEME_OPTIONS"]

PAPER_ID = "arXiv:1603.05279"
_TIMM_FACTORY_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
# Model arguments that are fields of the scheme (``BinarizeConfig``): stored with the model's ``binarize_config``.
SCHEME_OPTIONS = ("binary_gradient", "block_relu", "norm_affine")

# A backbone factory: ``factory(small_input=..., **timm_style_kwargs)`` -> a float model with a ``pretrained_cfg``.
BackboneFactory = Callable[..., nn.Module]


def default_cfg(first_conv: str, classifier: str, **kwargs: Any) -> dict[str, Any]:
    """A timm-style ``pretrained_cfg`` for a backbone that timm does not build (ImageNet input and statistics)."""
    cfg = dict(
        input_size=(3, 224, 224), interpolation="bilinear", crop_pct=0.875, mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD, first_conv=first_conv, classifier=classifier,
    )
    cfg.update(kwargs)
    return cfg


def small_input_stem_(model: nn.Module, in_chans: int) -> None:
    """ResNet stem for small images (digits, CIFAR): a 3x3 stride-1 ``conv1`` and no max-pool."""
    stem = model.conv1
    model.conv1 = nn.Conv2d(in_chans, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def _timm_backbone(name: str, small_input: bool, **kwargs: Any) -> nn.Module:
    model = timm.create_model(name, pretrained=False, **kwargs)
    if small_input:
        small_input_stem_(model, kwargs.get("in_chans", 3))
    return model


def scheme_options(scheme: str | BinarizeConfig, kwargs: dict[str, Any]) -> BinarizeConfig:
    """``scheme`` with the :data:`SCHEME_OPTIONS` given among the model arguments ``kwargs`` (popped from it)."""
    return get_scheme(scheme, **{key: kwargs.pop(key) for key in SCHEME_OPTIONS if key in kwargs})


def build_binary_model(
    name: str,
    backbone: str,
    scheme: str | BinarizeConfig,
    pretrained: bool = False,
    *,
    factory: BackboneFactory | None = None,
    small_input: bool = False,
    keep: list[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The float ``backbone`` converted to ``scheme``, registered in the zoo as ``name``.

    Args:
        backbone: the float architecture's name: a timm model, or the name of ``factory``'s architecture.
        scheme: a scheme name or config; the :data:`SCHEME_OPTIONS` among ``kwargs`` replace its fields:
            ``binary_gradient`` (the paper's binary gradient, sec. 3.2), ``block_relu`` (keep the float network's
            ReLUs in front of binary blocks), ``norm_affine`` (affine BatchNorm before the sign).
        factory: builds the float backbone (``factory(small_input=..., **kwargs)``) when timm has none.
        small_input: a stem for 8x8 to 64x64 images (ResNets: a 3x3 stride-1 conv without max-pool).
        keep: further layers to keep in full precision (``binarize_``'s ``keep``).
        kwargs: timm model arguments such as ``num_classes`` and ``in_chans``.

    Layers named in the backbone's ``pretrained_cfg["keep_full_precision"]`` stay float, like the first conv and the
    classifier (e.g. Bi-Real-Net's real-valued downsample shortcuts).
    """
    config = scheme_options(scheme, kwargs)
    for key in _TIMM_FACTORY_ARGS:
        kwargs.pop(key, None)
    if pretrained:
        raise RuntimeError(
            f"{name} has no weights bundled with create_model(pretrained=True); "
            "load a published checkpoint with zoo.from_pretrained(repo_id_or_path)"
        )
    if factory is None:
        model = _timm_backbone(backbone, small_input, **kwargs)
    else:
        model = factory(small_input=small_input, **kwargs)
    in_chans = kwargs.get("in_chans", 3)
    cfg = dict(model.pretrained_cfg)
    for key in ("url", "hf_hub_id", "tag", "origin_url", "license"):
        cfg.pop(key, None)
    cfg.update(architecture=name, backbone=backbone, scheme=config.name, paper_ids=PAPER_ID,
               num_classes=model.num_classes)
    cfg.update(in_chans=in_chans, input_size=(in_chans, *cfg["input_size"][1:]))
    if small_input:
        cfg["small_input"] = True
    model.pretrained_cfg = cfg
    binarize_(model, config, keep=keep)
    return model
