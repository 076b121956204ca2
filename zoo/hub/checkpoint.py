"""The packed checkpoint folder: ``model.safetensors`` + ``config.json`` (+ ``README.md``, the model card).

``model.safetensors`` holds the packed network's state dict (1-bit weights as int32 words, ``alpha``, and the float
first conv, classifier and BatchNorms); its ``__metadata__`` carries the format version and the packing scheme.
``config.json`` says how to rebuild the network: architecture, scheme, ``num_classes``, ``in_chans``, input size,
mean/std and the format version; :mod:`zoo.hub.config` reads it, strictly, before anything else does. Loading never
unpickles anything and never runs code from the checkpoint: it builds the architecture from the zoo's registry,
checks the weights' ``__metadata__`` against the config and every tensor's name, dtype and shape against the
architecture, and only then loads, so a bad file raises one :class:`CheckpointError` and nothing is half-loaded.
Saving is all or nothing (:mod:`zoo.hub.atomic`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from ..convert import binarize_
from ..models import create_model, is_model
from ..models._builder import SCHEME_OPTIONS
from ..packing import pack
from ..schemes import BinarizeConfig
from .atomic import atomic_folder, write_file
from .config import FORMAT_VERSION, CheckpointError, config_bytes, read_config
from .tensor_checks import check_tensor_values

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "PACKING",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "checkpoint_config",
    "apply_preprocessing",
    "build_packed",
    "model_arguments",
    "save_checkpoint",
    "load_checkpoint",
    "read_config",
]

PACKING = "sign-bits/int32/lsb-first/input-channels-last/v1"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def checkpoint_config(model: nn.Module) -> dict[str, Any]:
    """The ``config.json`` content of a zoo model, or of a timm model converted by ``binarize_`` (its timm
    architecture and ``keep`` names under ``converted``), from its ``pretrained_cfg`` and ``binarize_config``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    scheme = getattr(model, "binarize_config", None)
    arch = cfg.get("architecture")
    if scheme is None or not arch or not (is_model(arch) or timm.is_model(arch)):
        raise ValueError("only models from zoo.create_model, or timm models converted with zoo.binarize_, can be "
                         "saved as packed checkpoints")
    extra = {"float_downsample": True} if cfg.get("float_downsample") else {}  # a ResNet option, when set
    if not is_model(arch):
        extra["converted"] = {"library": "timm", "keep": list(getattr(model, "binarize_keep", []))}
    in_chans = cfg.get("in_chans", _first_conv_channels(model, cfg))
    return {
        **extra,
        "format_version": FORMAT_VERSION,
        "architecture": cfg["architecture"],
        "scheme": scheme.to_dict(),
        "num_classes": int(model.num_classes),
        "in_chans": int(in_chans),
        "small_input": bool(cfg.get("small_input", False)),
        "input_size": [int(in_chans), *cfg.get("input_size", (3, 224, 224))[1:]],
        "mean": list(cfg.get("mean", ())),
        "std": list(cfg.get("std", ())),
        "first_conv": cfg.get("first_conv"),
        "classifier": cfg.get("classifier"),
        "paper": cfg.get("paper_ids"),
    }


def _first_conv_channels(model: nn.Module, cfg: dict[str, Any]) -> int:
    """The input channels of the model's first conv (timm's ``pretrained_cfg`` names it; a converted model built with
    ``in_chans`` records them nowhere else)."""
    first = cfg.get("first_conv")
    first = first[0] if isinstance(first, (list, tuple)) else first
    modules = dict(model.named_modules())
    conv = modules.get(f"{first}") if first else None
    if conv is None or not hasattr(conv, "in_channels"):
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def model_arguments(config: dict[str, Any]) -> dict[str, Any]:
    """The ``create_model`` arguments that build the architecture ``config`` records: ``num_classes``, ``in_chans``,
    ``small_input``, every scheme option and, where set, ResNet's ``float_downsample``."""
    scheme = BinarizeConfig.from_dict(config["scheme"])
    return {
        "num_classes": int(config["num_classes"]),
        "in_chans": int(config["in_chans"]),
        "small_input": bool(config.get("small_input", False)),
        **{key: getattr(scheme, key) for key in SCHEME_OPTIONS},
        **({"float_downsample": True} if config.get("float_downsample") else {}),
    }


def build_packed(config: dict[str, Any], source: Path | str = CONFIG_NAME, device: str = "cpu") -> nn.Module:
    """An untrained packed network with the architecture and scheme ``config`` describes.

    With ``device="meta"`` nothing is allocated or initialised (the loader fills every tensor from the file).
    """
    scheme = BinarizeConfig.from_dict(config["scheme"])
    with torch.device(device):
        if config.get("converted"):  # the timm model, converted again as it was
            model = timm.create_model(config["architecture"], pretrained=False, num_classes=int(config["num_classes"]),
                                      in_chans=int(config["in_chans"]))
            binarize_(model, scheme, keep=config["converted"].get("keep", []))
        else:
            model = create_model(config["architecture"], **model_arguments(config))
    if model.binarize_config != scheme:
        raise CheckpointError(
            f"{source}: scheme {scheme.name!r} does not match architecture {config['architecture']!r} "
            f"(which is {model.binarize_config.name!r})"
        )
    with torch.device(device):
        packed = pack(model)
    apply_preprocessing(packed, config)
    return packed


def apply_preprocessing(model: nn.Module, config: dict[str, Any]) -> None:
    """The network's ``pretrained_cfg`` (and timm's ``default_cfg`` alias) as ``config.json`` describes its input:
    ``input_size`` (also the test size), ``mean`` and ``std``, what ``timm.data.resolve_data_config`` reads; the
    architecture's own values (ImageNet) where the config has none."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if config.get("input_size"):
        cfg["input_size"] = cfg["test_input_size"] = tuple(int(v) for v in config["input_size"])
    for key in ("mean", "std"):
        if config.get(key):
            cfg[key] = tuple(float(v) for v in config[key])
    model.pretrained_cfg = model.default_cfg = cfg


def save_checkpoint(
    model: nn.Module, folder: Path, config: dict[str, Any], files: dict[str, str] | None = None
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and the text ``files`` (name: content) of a packed network as
    the folder ``folder``, all or nothing (see :mod:`zoo.hub.atomic`): an error or a crash at any point leaves the
    folder's old checkpoint complete.

    The weights file's size is recorded in ``config["sizes"]["packed_bytes"]`` before the config is written.
    """
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "format": "pt",
        "zoo_format_version": str(FORMAT_VERSION),
        "packing": PACKING,
        "architecture": config["architecture"],
        "scheme": config["scheme"]["name"],
    }
    weights = save(tensors, metadata=metadata)
    with atomic_folder(folder) as tmp:
        write_file(tmp / WEIGHTS_NAME, weights)
        for name, text in (files or {}).items():
            write_file(tmp / name, text.encode("utf-8"))
        config.setdefault("sizes", {})["packed_bytes"] = len(weights)
        write_file(tmp / CONFIG_NAME, config_bytes(config))
    return Path(folder) / WEIGHTS_NAME


def _read_tensors(path: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``path``, once its ``__metadata__`` agrees with this zoo and with ``config``."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            _check_metadata(path, f.metadata() or {}, config)
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: corrupted or truncated safetensors file ({e})") from e


def _check_metadata(path: Path, metadata: dict[str, str], config: dict[str, Any]) -> None:
    version = metadata.get("zoo_format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: unknown zoo_format_version {version!r} in __metadata__")
    if metadata.get("packing") != PACKING:
        raise CheckpointError(f"{path}: unknown packing {metadata.get('packing')!r} (expected {PACKING!r})")
    if metadata.get("format", "pt") != "pt":
        raise CheckpointError(f"{path}: __metadata__ format {metadata['format']!r}, expected 'pt'")
    for key, value in (("architecture", config["architecture"]), ("scheme", config["scheme"]["name"])):
        if key in metadata and metadata[key] != value:
            raise CheckpointError(f"{path}: written as {key} {metadata[key]!r}, but {CONFIG_NAME} names {value!r}")


def load_checkpoint(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the packed network that ``folder`` describes and load its weights, checking everything first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
    config = read_config(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    model = build_packed(config, folder / CONFIG_NAME, device="meta")
    tensors = _read_tensors(weights, config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{weights}: tensors do not match {config['architecture']}: "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    for name, ref in expected.items():
        got = tensors[name]
        if got.dtype != ref.dtype or got.shape != ref.shape:
            raise CheckpointError(
                f"{weights}: tensor {name!r} is {got.dtype} {tuple(got.shape)}, "
                f"{config['architecture']} needs {ref.dtype} {tuple(ref.shape)}"
            )
    check_tensor_values(model, tensors, weights)
    n_state = len(list(model.parameters())) + len(list(model.buffers()))
    if n_state != len(expected):
        raise CheckpointError(f"{config['architecture']} has state outside its state dict; cannot load it from a file")
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval(), config
