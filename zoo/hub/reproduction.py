"""Reproducibility of the cards: a second run of a card's recipe, recorded next to the card's own figure.

A card's accuracy counts as reproducible when rerunning its recipe with its seed lands within
``TOLERANCE_POINTS`` top-1 points of it. ``zoo cards --rerun FOLDER`` takes the checkpoint folders that such reruns
published (``zoo fit --config <the card's recipe> --publish.enabled true`` in another working copy) and stores each
rerun in its card's ``config["reproduction"]``: the rerun's top-1 / top-5, its hardware and threads, the difference
in points and whether it is within the tolerance. A rerun counts only when it ran the same recipe: the Lightning
config dumps stored with the card and the rerun must agree on everything that shapes training (seed, model, data,
optimizer, trainer), otherwise it is an error naming the settings that differ. Where the run's outputs go (the
logger, ``default_root_dir``, ``publish``) is not compared, and a setting that is null in one dump and absent from the
other (an argument added since, with a null default) counts as the same.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .cards import card_name

__all__ = ["TOLERANCE_POINTS", "recipe_differences", "reproduction_record", "with_reproductions"]

TOLERANCE_POINTS = 0.5
# Where a run writes, not how it trains: left out of the comparison of two recipes.
OUTPUT_SETTINGS = (("publish",), ("trainer", "logger"), ("trainer", "default_root_dir"))


def _training_settings(recipe: str) -> dict[str, Any]:
    config = yaml.safe_load(recipe) or {}
    if not isinstance(config, dict):
        raise ValueError("a recipe must be a YAML mapping")
    for path in OUTPUT_SETTINGS:
        node = config
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return config


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def recipe_differences(a: str, b: str) -> list[str]:
    """The dotted names of the training settings in which two Lightning config dumps differ (sorted); empty when the
    runs trained the same way (see the module docstring for what is left out)."""
    fa, fb = _flatten(_training_settings(a)), _flatten(_training_settings(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def reproduction_record(card: dict[str, Any], rerun: dict[str, Any]) -> dict[str, Any]:
    """What ``rerun`` (a published config) says about ``card``'s accuracy; ``ValueError`` if it is not a rerun of it."""
    name = card_name(card)
    if card_name(rerun) != name:
        raise ValueError(f"rerun {rerun.get('name')!r} is not a run of card {name!r}")
    ours, theirs = card.get("training", {}), rerun.get("training", {})
    if ours.get("top1") is None or theirs.get("top1") is None:
        raise ValueError(f"{name}: the card and the rerun both need a measured top-1")
    if not ours.get("recipe") or not theirs.get("recipe"):
        raise ValueError(f"{name}: the card and the rerun both need their recipe (Lightning config dump)")
    differences = recipe_differences(ours["recipe"], theirs["recipe"])
    if differences:
        raise ValueError(f"{name}: the rerun did not run the card's recipe; they differ in {', '.join(differences)}")
    delta = 100 * (float(theirs["top1"]) - float(ours["top1"]))
    return {
        "top1": float(theirs["top1"]),
        "top5": theirs.get("top5"),
        "delta_points": round(delta, 4),
        "within_tolerance": abs(delta) <= TOLERANCE_POINTS + 1e-9,
        "tolerance_points": TOLERANCE_POINTS,
        "hardware": theirs.get("hardware"),
        "fit_seconds": theirs.get("fit_seconds"),
    }


def with_reproductions(configs: list[dict[str, Any]], reruns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``configs`` with ``config["reproduction"]`` set from the rerun of the same name, where there is one.

    A rerun whose name matches no card is an error (it would otherwise be dropped silently).
    """
    by_name = {card_name(c): c for c in configs}
    names = [card_name(r) for r in reruns]
    unknown = sorted(n for n in names if n not in by_name)
    if unknown:
        raise ValueError(f"reruns without a card: {', '.join(unknown)}")
    records = {n: reproduction_record(by_name[n], r) for n, r in zip(names, reruns, strict=True)}
    out = []
    for config in configs:
        config = copy.deepcopy(config)
        if card_name(config) in records:
            config["reproduction"] = records[card_name(config)]
        out.append(config)
    return out
