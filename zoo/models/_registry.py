"""The zoo's models on timm's registry: ``zoo.create_model`` and ``zoo.list_models``.

Zoo models are ordinary timm entrypoints (``timm.create_model("xnor_resnet18")`` works once ``zoo`` is imported);
this module only remembers which names belong to the zoo.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from typing import Any

import timm
from timm.models import register_model as _timm_register_model
from torch import nn

from .._unknown_name import UnknownNameError

__all__ = ["register_model", "list_models", "create_model", "is_model"]

_ZOO_MODELS: set[str] = set()


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a zoo model entrypoint on timm's registry under the function's name. With ``pretrained=True`` the
    entrypoint loads the weights that ship with the zoo (:func:`zoo.hub.bundled.create_pretrained`)."""

    @functools.wraps(fn)
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if not pretrained:
            return fn(pretrained=False, **kwargs)
        from ..hub.bundled import create_pretrained

        return create_pretrained(fn, fn.__name__, kwargs)

    _timm_register_model(entrypoint)
    _ZOO_MODELS.add(fn.__name__)
    return entrypoint


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the zoo's models matching a shell-style ``pattern`` (``"xnor_*"``)."""
    return sorted(name for name in _ZOO_MODELS if fnmatch.fnmatch(name, pattern))


def is_model(name: str) -> bool:
    return name in _ZOO_MODELS


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a zoo model by name, e.g. ``create_model("xnor_resnet18", num_classes=10, small_input=True)``."""
    if name not in _ZOO_MODELS:
        raise UnknownNameError("model", name, _ZOO_MODELS)
    return timm.create_model(name, pretrained=pretrained, **kwargs)
