"""Build a zoo model: a float backbone (timm's, or a family's own factory), an optional small-input stem, then
``binarize_`` with the model's scheme, and with ``features_only=True`` timm's feature extractor around it (as timm's
``build_model_with_cfg`` does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import FeatureDictNet, FeatureGraphNet, FeatureHookNet, FeatureListNet
from timm.models._builder import pretrained_cfg_for_features
from timm.models._features import FeatureGetterNet
from torch import nn

from .._unknown_name import UnknownNameError
from ..convert import binarize_
from ..schemes import BinarizeConfig, get_scheme

__all__ = [
    "build_binary_model", "default_cfg", "features_only", "small_input_stem_", "scheme_options", "PAPER_ID",
    "SCHEME_OPTIONS", "SMALL_INPUT_SIZE",
]

PAPER_ID = "arXiv:1603.05279"
_TIMM_FACTORY_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
# What timm's configs record about timm's released weights rather than the architecture.
_WEIGHT_CFG_KEYS = ("url", "hf_hub_id", "tag", "origin_url", "license", "test_input_size", "test_crop_pct")
# The default input side of small-input models (CIFAR's 32x32; they take 8x8 to 64x64 images).
SMALL_INPUT_SIZE = 32
# timm's feature extractors by the names ``feature_cls`` takes (timm's ``build_model_with_cfg``).
_FEATURE_CLASSES = {"list": FeatureListNet, "dict": FeatureDictNet, "hook": FeatureHookNet, "fx": FeatureGraphNet,
                    "getter": FeatureGetterNet}
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
    """ResNet stem for small images (digits, CIFAR): a 3x3 stride-1 ``conv1`` and no max-pool. Without the stem's two
    stride-2 layers every ``feature_info`` reduction is 4 times smaller (the stem's own, 2, becomes 1)."""
    stem = model.conv1
    model.conv1 = nn.Conv2d(in_chans, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.feature_info = [{**info, "reduction": max(info["reduction"] // 4, 1)} for info in model.feature_info]


def _timm_backbone(name: str, small_input: bool, **kwargs: Any) -> nn.Module:
    model = timm.create_model(name, pretrained=False, **kwargs)
    if small_input:
        small_input_stem_(model, kwargs.get("in_chans", 3))
    return model


def features_only(
    model: nn.Module, out_indices: tuple[int, ...] = (0, 1, 2, 3, 4), feature_cls: str | type[nn.Module] = "list"
) -> nn.Module:
    """``model`` as timm's feature extractor (``features_only=True``): the feature maps that ``model.feature_info``
    lists at ``out_indices``, without the head; ``feature_cls`` one of timm's extractors or its name."""
    if isinstance(feature_cls, str):
        if feature_cls.lower() not in _FEATURE_CLASSES:
            raise UnknownNameError("feature class", feature_cls, _FEATURE_CLASSES, plural="feature classes")
        feature_cls = _FEATURE_CLASSES[feature_cls.lower()]
    features = feature_cls(model, out_indices=out_indices)
    features.pretrained_cfg = features.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    return features


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
    cfg_entries: dict[str, Any] | None = None,
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
        cfg_entries: added to the model's ``pretrained_cfg`` (options a checkpoint must rebuild the model with).
        kwargs: timm model arguments such as ``num_classes`` and ``in_chans``; ``features_only``, ``out_indices`` and
            ``feature_cls`` as timm's: the model wrapped by :func:`features_only`.

    Layers named in the backbone's ``pretrained_cfg["keep_full_precision"]`` stay float, like the first conv and the
    classifier (e.g. Bi-Real-Net's real-valued downsample shortcuts). The ``pretrained_cfg`` (also ``default_cfg``,
    timm's alias) is the backbone's at ImageNet size; a small-input model's has a :data:`SMALL_INPUT_SIZE` input and
    the ``pool_size`` that its last ``feature_info`` reduction gives there.
    """
    features = kwargs.pop("features_only", False)
    feature_args = {key: kwargs.pop(key) for key in ("out_indices", "feature_cls") if features and key in kwargs}
    config = scheme_options(scheme, kwargs)
    for key in _TIMM_FACTORY_ARGS:
        kwargs.pop(key, None)
    if pretrained:  # the registered entrypoints load the shipped weights themselves (zoo.hub.bundled)
        raise ValueError(f"{name}: build_binary_model builds untrained models; use zoo.create_model(name, "
                         "pretrained=True) for the weights that ship with the zoo")
    if factory is None:
        model = _timm_backbone(backbone, small_input, **kwargs)
    else:
        model = factory(small_input=small_input, **kwargs)
    in_chans = kwargs.get("in_chans", 3)
    cfg = dict(model.pretrained_cfg)
    for key in _WEIGHT_CFG_KEYS:
        cfg.pop(key, None)
    cfg.update(architecture=name, backbone=backbone, scheme=config.name, paper_ids=PAPER_ID,
               num_classes=model.num_classes)
    cfg.update(in_chans=in_chans, input_size=(in_chans, *cfg["input_size"][1:]))
    if small_input:
        side = SMALL_INPUT_SIZE // model.feature_info[-1]["reduction"]
        cfg.update(small_input=True, input_size=(in_chans, SMALL_INPUT_SIZE, SMALL_INPUT_SIZE), pool_size=(side, side))
    cfg.update(cfg_entries or {})
    model.pretrained_cfg = model.default_cfg = cfg
    binarize_(model, config, keep=keep)
    return features_only(model, **feature_args) if features else model
