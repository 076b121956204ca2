"""``BinaryModel``: a packed binary network with huggingface_hub's ``ModelHubMixin``.

    packed = zoo.pack_model(trained)                # or BinaryModel.from_trained(trained)
    packed.save_pretrained("xnor_resnet18-digits")  # model.safetensors + config.json + README.md
    packed.push_to_hub("org/xnor_resnet18-digits")  # create_repo + upload_folder
    model = zoo.from_pretrained("org/xnor_resnet18-digits")   # or a local folder
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from torch import nn

from ..packing import pack, unpack
from .bundled import bundled_folder, default_cards_folder
from .cards import PAPER_URL, model_card
from .checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    apply_preprocessing,
    build_packed,
    checkpoint_config,
    load_checkpoint,
    save_checkpoint,
)
from .endpoint import unreachable

__all__ = ["BinaryModel", "from_pretrained", "pack_model"]


class BinaryModel(
    nn.Module,
    ModelHubMixin,
    library_name="xnor-zoo",
    license="apache-2.0",
    pipeline_tag="image-classification",
    tags=["binary-neural-network", "xnor-net"],
    paper_url=PAPER_URL,
):
    """A packed (1 bit per binary weight) zoo network, ready for inference, with Hub save / push / load.

    ``config`` is the checkpoint's ``config.json`` content. ``net`` is the packed network (``zoo.pack``), in eval
    mode; ``to_trainable()`` gives back a trainable model with identical binarized weights for fine-tuning.
    """

    def __init__(self, config: dict[str, Any], net: nn.Module | None = None):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.net = net if net is not None else build_packed(self.config)
        apply_preprocessing(self.net, self.config)
        self.eval()

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """The network's timm ``pretrained_cfg``, its input size, mean and std those of ``config.json`` (what
        ``timm.data.resolve_data_config(model=...)`` reads)."""
        return self.net.pretrained_cfg

    default_cfg = pretrained_cfg

    @classmethod
    def from_trained(cls, model: nn.Module, **info: Any) -> BinaryModel:
        """Pack a trained zoo model; ``info`` adds config entries (``training={...}``, ``input_size``...)."""
        config = {**checkpoint_config(model), **info}
        packed = pack(model)
        if config.get("converted"):  # what from_pretrained will rebuild must hold exactly these tensors
            rebuilt = build_packed(config, device="meta").state_dict()
            own = packed.state_dict()
            differ = sorted(k for k in rebuilt.keys() | own.keys()
                            if k not in rebuilt or k not in own or rebuilt[k].shape != own[k].shape)
            if differ:
                raise ValueError(f"{config['architecture']}: timm.create_model({config['architecture']!r}, "
                                 f"num_classes={config['num_classes']}, in_chans={config['in_chans']}) converted "
                                 f"again does not give this model's tensors ({differ[:3]}): built with other "
                                 "arguments, or changed after binarize_")
        return cls(config, packed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def to_trainable(self) -> nn.Module:
        return unpack(self.net)

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write the checkpoint folder all or nothing (``ModelHubMixin.save_pretrained`` deletes ``config.json``
        first and writes file by file); push it if ``push_to_hub``. The config and card come from ``self.config``."""
        if config is not None and config != self.config:
            raise ValueError("BinaryModel saves its own config; give config entries to pack_model(model, **info)")
        if model_card_kwargs:
            raise ValueError("BinaryModel's card is generated from its config; model_card_kwargs are not used")
        self._save_pretrained(Path(save_directory))
        if push_to_hub:
            return self.push_to_hub(repo_id=repo_id or Path(save_directory).name, **push_to_hub_kwargs)
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        float_bytes = sum(t.numel() * 4 for t in unpack(self.net).state_dict().values() if t.is_floating_point())
        self.config["sizes"] = {"float_bytes": float_bytes}
        save_checkpoint(self.net, save_directory, self.config, {"README.md": str(model_card(self.config))})

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        **model_kwargs: Any,
    ) -> BinaryModel:
        """Load from a local folder, a card of ``cards/`` that ships weights (``"xnor_resnet18-digits"``), or a Hub
        repo id, in that order. The zoo reads and checks ``config.json`` itself (``ModelHubMixin.from_pretrained``
        would parse it first, unchecked)."""
        if model_kwargs:
            raise TypeError(f"unexpected arguments {sorted(model_kwargs)}: a BinaryModel is built from its config")
        return cls._from_pretrained(
            model_id=pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> BinaryModel:
        folder = Path(model_id)
        if not folder.is_dir():
            if isinstance(model_id, Path) or os.path.lexists(folder):
                raise CheckpointError(f"{model_id}: no such folder" if not os.path.lexists(folder)
                                      else f"{model_id}: not a folder")
            folder = bundled_folder(model_id)  # a card of cards/ that ships weights
            if folder is None:
                if not _is_repo_id(model_id):
                    raise CheckpointError(f"{model_id}: no such folder, no such card in {default_cards_folder()}, "
                                          "and not a Hub repo id")
                folder = _download(model_id, revision, cache_dir, force_download, local_files_only, token)
        net, config = load_checkpoint(folder)
        return cls(config, net)


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not name.startswith((".", "~")) and name.count("/") <= 1


def _download(repo_id: str, revision, cache_dir, force_download, local_files_only, token) -> Path:
    """The repo's files from the Hub, or from the Hub cache alone when offline or when the endpoint does not answer
    (:func:`~zoo.hub.endpoint.unreachable`, within a second, instead of huggingface_hub's retries)."""
    down = None if local_files_only or constants.HF_HUB_OFFLINE else unreachable(constants.ENDPOINT)
    local_files_only = local_files_only or down is not None
    paths = []
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(
                hf_hub_download(
                    repo_id, filename, revision=revision, cache_dir=cache_dir, force_download=force_download,
                    local_files_only=local_files_only, token=token,
                )
            )
        except LocalEntryNotFoundError as e:
            if down is not None:
                raise CheckpointError(f"{repo_id}: no such local folder or card, the Hub at {constants.ENDPOINT} is "
                                      f"unreachable ({down}), and {filename} is not in the Hub cache") from e
            raise CheckpointError(f"{repo_id}: no such local folder or card, and {filename} is not in the Hub cache "
                                  "while offline (HF_HUB_OFFLINE, local_files_only=True, or the Hub unreachable)"
                                  ) from e
        except RepositoryNotFoundError as e:
            raise CheckpointError(f"{repo_id}: no such local folder or card, and no such model repository on the Hub "
                                  "(or it is private: pass token=)") from e
        except RevisionNotFoundError as e:
            raise CheckpointError(f"{repo_id}: revision {revision!r} not found on the Hub") from e
        except EntryNotFoundError as e:
            raise CheckpointError(f"{repo_id}/{filename}: file not found in the repository") from e
        except HfHubHTTPError as e:
            raise CheckpointError(f"{repo_id}/{filename}: download failed ({e})") from e
    return Path(paths[0]).parent


def from_pretrained(name_or_path: str | Path, **kwargs: Any) -> BinaryModel:
    """Load a packed binary model from a local folder, a card name whose weights ship in ``cards/``
    (``"xnor_resnet18-digits"``) or a Hugging Face Hub repo id, ready for inference."""
    return BinaryModel.from_pretrained(name_or_path, **kwargs)


def pack_model(model: nn.Module, **info: Any) -> BinaryModel:
    """Pack a trained zoo model into a :class:`BinaryModel` (``save_pretrained``, ``push_to_hub``)."""
    return BinaryModel.from_trained(model, **info)

