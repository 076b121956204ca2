"""Build a zoo model: a timm backbone, an optional small-input stem, then ``binarize_`` with the model's scheme."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from ..convert import binarize_

__all__ = ["build_binary_model", "PAPER_ID"]

PAPER_ID = "arXiv:1603.05279"
_TIMM_FACTORY_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _small_input_stem_(model: nn.Module, in_chans: int) -> None:
    """A 3x3 stride-1 stem conv and no max-pool, for small images (digits, CIFAR)."""
    stem = model.conv1
    model.conv1 = nn.Conv2d(in_chans, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def build_binary_model(
    name: str,
    backbone: str,
    scheme: str,
    pretrained: bool = False,
    *,
    small_input: bool = False,
    binary_gradient: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """A timm ``backbone`` converted to ``scheme``, registered in the zoo as ``name``.

    Args:
        small_input: replace the stem by a 3x3 stride-1 conv without max-pool (for 8x8 to 64x64 images).
        binary_gradient: the paper's binary gradient option (sec. 3.2), off by default.
        kwargs: timm model arguments such as ``num_classes`` and ``in_chans``.
    """
    for key in _TIMM_FACTORY_ARGS:
        kwargs.pop(key, None)
    if pretrained:
        raise RuntimeError(
            f"{name} has no weights bundled with create_model(pretrained=True); "
            "load a published checkpoint with zoo.from_pretrained(repo_id_or_path)"
        )
    model = timm.create_model(backbone, pretrained=False, **kwargs)
    in_chans = kwargs.get("in_chans", 3)
    cfg = dict(model.pretrained_cfg)
    for key in ("url", "hf_hub_id", "tag", "origin_url", "license"):
        cfg.pop(key, None)
    cfg.update(architecture=name, backbone=backbone, scheme=scheme, paper_ids=PAPER_ID, num_classes=model.num_classes)
    cfg.update(in_chans=in_chans, input_size=(in_chans, *cfg["input_size"][1:]))
    if small_input:
        _small_input_stem_(model, in_chans)
        cfg["small_input"] = True
    model.pretrained_cfg = cfg
    binarize_(model, scheme, binary_gradient=binary_gradient)
    return model
