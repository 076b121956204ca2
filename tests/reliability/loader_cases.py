"""The loader fuzz tests' case, run in the fuzz worker: ``zoo.from_pretrained`` on a checkpoint folder."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

import zoo


def digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes, little-endian in C order: what a safetensors file holds for it."""
    return hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def load(folder: str) -> dict[str, Any]:
    """Load ``folder``; what loaded: the model's type and mode, its config, and each tensor's dtype, shape and
    :func:`digest`. An exception (the parent expects only ``CheckpointError``) goes back as the case's error."""
    model = zoo.from_pretrained(folder)
    return {
        "type": type(model).__name__,
        "training": model.training,
        "config": model.config,
        "tensors": {k: [str(v.dtype).removeprefix("torch."), list(v.shape), digest(v)]
                    for k, v in model.net.state_dict().items()},
    }
