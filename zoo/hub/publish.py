"""Publishing: a trained run to a checkpoint folder (the local folder hub), optionally pushed to the Hugging Face Hub,
and the ``cards/`` folder (one card per model, ``index.md`` and the ``index.html`` leaderboard) built from configs."""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_folder, write_file
from .cards import card_name, index_table, model_card
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, read_config
from .config import config_bytes
from .latency import BENCH_NAME
from .leaderboard import leaderboard_html
from .model import BinaryModel
from .names import check_model_name, name_folder

__all__ = ["PublishOptions", "publish", "publish_name", "cpu_description", "hardware_description", "card_weights",
           "collect_cards", "write_cards"]

# The files of the cards folder itself: no card may take their names.
CARDS_FILES = ("index.md", "index.html", BENCH_NAME)


@dataclass
class PublishOptions:
    """Where a run's packed checkpoint goes.

    Args:
        enabled: publish after ``fit`` (and its test) or after ``test``.
        folder: the local folder hub; the checkpoint lands in ``folder/name`` (no account needed).
        name: folder name, default ``<model_name>-<dataset>``; a model name (see :mod:`zoo.hub.names`).
        repo_id: also push to this Hugging Face Hub repo (``create_repo`` + ``upload_folder``).
        token: Hub token (default: the one from ``hf auth login`` or ``HF_TOKEN``).
        private: create the Hub repo private.
    """

    enabled: bool = False
    folder: str = "hub"
    name: str | None = None
    repo_id: str | None = None
    token: str | None = None
    private: bool = False


def cpu_description() -> str:
    """``"<cpu model>, <n> cores"`` of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def hardware_description() -> str:
    """``"<cpu model>, <n> cores, torch <version> (<threads> threads)"`` of this machine."""
    return f"{cpu_description()}, torch {torch.__version__.split('+')[0]} ({torch.get_num_threads()} threads)"


def publish_name(options: PublishOptions, default: str) -> str:
    """The checked name a run is published under: ``options.name``, else ``default``; a ValueError naming it."""
    return check_model_name(options.name or default, "publish name")


def publish(model: nn.Module, options: PublishOptions, info: dict[str, Any]) -> Path:
    """Pack ``model``, write its checkpoint folder ``options.folder / name`` with a generated card, push it if
    ``options.repo_id`` is set. A name that is not a model name, or whose folder would resolve outside
    ``options.folder``, is a ValueError before anything is written."""
    name = publish_name(options, info["name"])
    folder = name_folder(options.folder, name, "publish name")
    packed = BinaryModel.from_trained(model, **{**info, "name": name, "repo_id": options.repo_id or name})
    packed.save_pretrained(folder)
    if options.repo_id:
        packed.push_to_hub(options.repo_id, token=options.token, private=options.private)
    return folder


def collect_cards(folder: Path) -> list[dict[str, Any]]:
    """The configs of every checkpoint or card folder directly under ``folder`` (sorted by name, hidden folders
    skipped); a config whose card name is not a model name is a CheckpointError naming its file."""
    configs = []
    for path in sorted(Path(folder).glob(f"*/{CONFIG_NAME}")):
        if path.parent.name.startswith("."):  # a save in progress, or one a crash interrupted (zoo.hub.atomic)
            continue
        config = read_config(path)
        try:
            check_model_name(card_name(config), "name")
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        configs.append(config)
    return configs


def card_weights(*folders: Path | None) -> dict[str, Path]:
    """``{card name: model.safetensors}`` of the checkpoint or card folders directly under each of ``folders``
    (hidden folders skipped); a later folder's file replaces an earlier one's of the same name."""
    weights: dict[str, Path] = {}
    for folder in folders:
        if folder is not None:
            weights.update({p.parent.name: p for p in sorted(Path(folder).glob(f"*/{WEIGHTS_NAME}"))
                            if not p.parent.name.startswith(".")})
    return weights


def write_cards(configs: list[dict[str, Any]], out: Path, weights: dict[str, Path] | None = None) -> str:
    """Write ``out/<name>/README.md`` (+ its config.json, the card's source), ``out/index.md`` and the
    ``out/index.html`` leaderboard; return the index table. ``weights`` (card name -> model.safetensors) are
    copied into their cards, which then are complete checkpoint folders (:mod:`zoo.hub.bundled`); the cards
    of other names hold no weights.

    Every card's name is checked first (a model name, not one of :data:`CARDS_FILES`, its folder resolving directly
    inside ``out``), and neither the card folders nor the index files may be symbolic links: else a ValueError
    before anything is deleted or written. A card's folder is replaced, the other entries of ``out`` are kept; the
    whole folder changes in one step (:func:`~zoo.hub.atomic.atomic_folder`), so a crash leaves the old cards.
    """
    folders = [name_folder(out, card_name(config), "card name") for config in configs]
    for folder in folders:
        if folder.name in CARDS_FILES:
            raise ValueError(f"card name {folder.name!r} is taken by the cards folder's own {folder.name}")
    for index in ("index.md", "index.html"):
        if (out / index).is_symlink():
            raise ValueError(f"{out / index} is a symbolic link (to {(out / index).readlink()}), not followed")
    weights = weights or {}
    with atomic_folder(out) as tmp:
        for config, folder in zip(configs, folders, strict=True):
            (tmp / folder.name).mkdir()
            shipped = weights.get(folder.name)
            if shipped is not None:
                shutil.copyfile(shipped, tmp / folder.name / WEIGHTS_NAME)
            write_file(tmp / folder.name / CONFIG_NAME, config_bytes(config))
            write_file(tmp / folder.name / "README.md",
                       str(model_card(config, weights_shipped=shipped is not None)).encode("utf-8"))
        table = index_table(configs)
        index = ("# Model index\n\nGenerated by `zoo cards` from the cards' configs; sortable with plots: "
                 "[index.html](index.html).\n\n" + table)
        write_file(tmp / "index.md", index.encode("utf-8"))
        write_file(tmp / "index.html", leaderboard_html(configs).encode("utf-8"))
    return table
