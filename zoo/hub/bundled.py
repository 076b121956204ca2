"""Weights that ship with the zoo: a card folder of ``cards/`` that holds ``model.safetensors`` is a complete
checkpoint folder (README.md, config.json, model.safetensors, as a Hub repo), loaded by its card name.

    zoo.from_pretrained("xnor_resnet18-digits")                   # the packed model, from cards/
    timm.create_model("xnor_resnet18", pretrained=True)           # the trainable model, same weights

``create_model(name, pretrained=True)`` takes the weights of the card ``<name>-digits`` (:data:`CARD_DATASET`):
arguments the card records (``in_chans``, ``small_input``, the scheme options) default to the card's and must agree
with it; another ``num_classes`` keeps every weight but the classifier's, as timm does for pretrained weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..models._builder import SCHEME_OPTIONS, features_only
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_checkpoint, model_arguments, read_config

__all__ = ["BUNDLED_LIMIT_MB", "CARD_DATASET", "bundled_folder", "create_pretrained", "default_cards_folder",
           "default_recipes_folder", "recipe_for", "train_command"]

CARD_DATASET = "digits"  # the dataset of the zoo-trained cards; create_model(pretrained=True) loads its weights
BUNDLED_LIMIT_MB = 15  # the shipped weights of all cards together, at most


def default_cards_folder() -> Path:
    """``cards/`` of the source tree the zoo runs from (an editable install or a clone); it may not exist."""
    return Path(__file__).resolve().parents[2] / "cards"


def default_recipes_folder() -> Path:
    """``recipes/`` of the source tree the zoo runs from."""
    return Path(__file__).resolve().parents[2] / "recipes"


def recipe_for(card: str, recipes: Path | None = None) -> Path | None:
    """The recipe that trains the card ``card`` (``recipes/<dataset>/<name>.yaml`` or an ablation's), or None."""
    stem, sep, dataset = card.rpartition("-")
    if not sep:
        return None
    root = (default_recipes_folder() if recipes is None else Path(recipes)) / dataset
    found = sorted(root.glob(f"**/{stem}.yaml")) if root.is_dir() else []
    return found[0] if found else None


def train_command(card: str) -> str | None:
    """The command that trains the card ``card`` and publishes it to ``hub/<card>/``, or None without a recipe."""
    recipe = recipe_for(card)
    if recipe is None:
        return None
    return f"zoo fit --config {recipe.relative_to(default_recipes_folder().parent).as_posix()} --publish.enabled true"


def _train_hint(card: str) -> str:
    command = train_command(card)
    return f"; train it with `{command}` and load hub/{card}" if command else ""


def bundled_folder(name: str, cards: Path | None = None) -> Path | None:
    """The checkpoint folder ``cards/<name>`` when that card ships weights; None when ``cards/`` has no card of that
    name; a CheckpointError naming the card and how to train it when the card holds no ``model.safetensors``."""
    cards = default_cards_folder() if cards is None else Path(cards)
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    folder = cards / name
    if not (folder / CONFIG_NAME).is_file():
        return None
    if not (folder / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{name}: the card {folder} ships no weights ({WEIGHTS_NAME}){_train_hint(name)}")
    return folder


def _trainable_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..packing import unpack

    net, config = load_checkpoint(folder)
    return unpack(net).state_dict(), config


def create_pretrained(entrypoint: Callable[..., nn.Module], name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``entrypoint(**kwargs)`` (a zoo model's factory) with the weights of the card ``<name>-digits``."""
    card = f"{name}-{CARD_DATASET}"
    folder = bundled_folder(card)
    if folder is None:
        raise CheckpointError(f"{name}: no weights ship with the zoo for it (no card {card} in "
                              f"{default_cards_folder()}){_train_hint(card)}")
    recorded = model_arguments(read_config(folder / CONFIG_NAME))
    for key in ("in_chans", "small_input", "float_downsample", *SCHEME_OPTIONS):
        if key in kwargs and kwargs[key] is not None and kwargs[key] != recorded.get(key, False):
            raise ValueError(f"{name}: the weights of {card} are for {key}={recorded.get(key, False)!r}, "
                             f"not {kwargs[key]!r}")
    features = kwargs.pop("features_only", False)  # the weights load into the model, then timm's extractor wraps it
    feature_args = {key: kwargs.pop(key) for key in ("out_indices", "feature_cls") if key in kwargs}
    model = entrypoint(pretrained=False, **{**recorded, **kwargs})
    state, config = _trainable_state(folder)
    if model.num_classes != recorded["num_classes"]:  # timm's rule: the classifier is not loaded
        classifier = model.pretrained_cfg["classifier"]
        state = {k: v for k, v in state.items() if not k.startswith(f"{classifier}.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(f"{classifier}.") for k in missing):
            raise CheckpointError(f"{folder}: weights do not fit {name}: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}")
    else:
        model.load_state_dict(state)
    cfg = dict(model.pretrained_cfg)
    cfg.update(input_size=tuple(config["input_size"]), test_input_size=tuple(config["input_size"]),
               mean=tuple(config["mean"]), std=tuple(config["std"]), hf_hub_id=None, tag=CARD_DATASET,
               file=str(folder / WEIGHTS_NAME))
    model.pretrained_cfg = model.default_cfg = cfg
    return features_only(model, **feature_args) if features else model
