"""Checks of a packed checkpoint's tensor contents, run after names, dtypes and shapes match and before loading.

A file that passes the shape checks can still hold values the network would silently compute with:

- padding bits set in ``weight_bits``: the bits past channel ``C - 1`` in the last int32 word of each filter tap
  (``zoo_kernels.packing``) must be 0, or ``popcount(a ^ w)`` counts them and every output of the layer moves;
- a float tensor holding NaN or an infinity (weights, ``alpha``, biases, BatchNorm statistics);
- a negative ``alpha``, which flips the sign of a whole filter. ``alpha = mean |W|`` per output filter is 0 exactly
  when the filter is all zeros (a pruned filter): ``zoo.pack`` writes that, the filter then outputs its bias, so
  ``alpha = 0`` loads;
- a negative BatchNorm ``running_var`` (a variance), whose ``sqrt(running_var + eps)`` is NaN or its sign wrong.

Each problem raises one :class:`~zoo.hub.checkpoint.CheckpointError` naming the file, the tensor and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from zoo_kernels.packing import WORD_BITS

from ..packing import PackedBinaryConv2d, PackedBinaryLinear

__all__ = ["check_tensor_values"]


def _packed_channels(module: nn.Module) -> int | None:
    """The channels one filter tap's words hold (``C`` of the bit layout), for a packed binary layer."""
    if isinstance(module, PackedBinaryConv2d):
        return module.in_channels // module.groups
    if isinstance(module, PackedBinaryLinear):
        return module.in_features
    return None


def _padding_mask(channels: int) -> int | None:
    """The int32 mask of the padding bits in the last word of ``channels`` channels, or None if there are none."""
    used = channels % WORD_BITS
    if used == 0:
        return None
    mask = ~((1 << used) - 1) & 0xFFFFFFFF
    return mask - (1 << 32) if mask >= 1 << 31 else mask  # as a signed int32


def _first_bad(bad: torch.Tensor) -> str:
    index = tuple(int(i) for i in bad.nonzero()[0])
    n = int(bad.sum())
    return f"{n} value{'s' if n != 1 else ''}, the first at index {index}"


def check_tensor_values(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: Path | str) -> None:
    """Raise :class:`CheckpointError` if a tensor of ``tensors`` (the state dict of ``model``'s architecture, names,
    dtypes and shapes already checked) holds a value the network must not run with (see the module docstring)."""
    from .checkpoint import CheckpointError

    def fail(name: str, problem: str) -> None:
        raise CheckpointError(f"{source}: tensor {name!r} {problem}")

    for name, t in tensors.items():
        if t.is_floating_point():
            bad = ~torch.isfinite(t)
            if bad.any():
                fail(name, f"is not finite (NaN or infinite): {_first_bad(bad)}")
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        channels = _packed_channels(module)
        if channels is not None:
            mask = _padding_mask(channels)
            bits = tensors[f"{dot}weight_bits"]
            if mask is not None:
                bad = (bits[..., -1] & mask) != 0
                if bad.any():
                    fail(f"{dot}weight_bits", f"has padding bits set (bits past channel {channels - 1} in the last "
                                              f"word must be 0): {_first_bad(bad)}")
            bad = tensors[f"{dot}alpha"] < 0
            if bad.any():
                fail(f"{dot}alpha", f"is negative (alpha = mean |W| is >= 0): {_first_bad(bad)}")
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            var = tensors.get(f"{dot}running_var")
            if var is not None:
                bad = var < 0
                if bad.any():
                    fail(f"{dot}running_var", f"is negative (a variance is >= 0): {_first_bad(bad)}")
