"""How the latent (real-valued) weights of binary layers are updated: a named choice, set per recipe.

Three pieces, as in the XNOR-Net authors' training loop (allenai/XNOR-Net, ``train.lua`` and ``util.lua``), each of
which can be switched on or off:

- the weight gradient of ``alpha * sign(W)``: ``"paper"`` (sec. 3.1's formula), ``"exact"`` (the chain rule with the
  straight-through estimator) or ``"authors"`` (their ``updateBinaryGradWeight``: the paper's formula times
  ``n * (1 - 1/c)``), see :func:`zoo.quantizers.scaled_sign`;
- mean-centring before every training step (their ``meancenterConvParms``): ``W <- W - mean_c W``, the mean over the
  input channels (dim 1) at each output filter and kernel position;
- clamping before every training step (their ``clampConvParms``): ``W <- clamp(W, -1, 1)``.

The authors centre, then clamp, then binarize and run the forward and backward pass; :class:`WeightUpdate` does the
same from ``on_train_batch_start``. Only the layers whose kernel quantizer is :class:`~zoo.quantizers.ScaledSign` are
touched (every binary layer; the first conv and the classifier stay float, as in the authors' loop over the convs
``2 .. #convNodes - 1``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import nn

from ..quantizers import WEIGHT_GRADIENTS, ScaledSign

__all__ = ["WeightUpdate", "binary_layers", "set_weight_gradient_", "center_and_clamp_"]


def binary_layers(model: nn.Module) -> Iterator[nn.Module]:
    """The layers of ``model`` whose weight is binarized as ``alpha * sign(W)``."""
    for module in model.modules():
        if isinstance(getattr(module, "kernel_quantizer", None), ScaledSign) and isinstance(
            getattr(module, "weight", None), torch.Tensor
        ):
            yield module


def set_weight_gradient_(model: nn.Module, gradient: str) -> int:
    """Give every binary layer of ``model`` the weight gradient ``gradient``; return how many layers there were."""
    if gradient not in WEIGHT_GRADIENTS:
        raise ValueError(f"unknown weight gradient {gradient!r}; known: {', '.join(WEIGHT_GRADIENTS)}")
    count = 0
    for layer in binary_layers(model):
        layer.kernel_quantizer.gradient = gradient
        count += 1
    return count


@torch.no_grad()
def center_and_clamp_(model: nn.Module, mean_center: bool = True, clamp: bool = True) -> None:
    """The authors' per-step treatment of the latent weights, in their order: ``W <- W - mean_c W`` (the mean over
    dim 1, the input channels, kept per output filter and kernel position), then ``W <- clamp(W, -1, 1)``."""
    for layer in binary_layers(model):
        w = layer.weight
        if mean_center:
            w.sub_(w.mean(dim=1, keepdim=True))
        if clamp:
            w.clamp_(-1.0, 1.0)


class WeightUpdate(pl.Callback):
    """The weight-update mechanics of a run (see the module docstring).

    Args:
        gradient: ``"paper"``, ``"exact"`` or ``"authors"``.
        mean_center: subtract the input-channel mean from each binary layer's latent weights before every step.
        clamp: clamp each binary layer's latent weights to [-1, 1] before every step.

    ``WeightUpdate("authors", mean_center=True, clamp=True)`` is the authors' training loop; without this callback a
    run trains with ``"paper"`` and neither centring nor clamping.
    """

    def __init__(self, gradient: str = "paper", mean_center: bool = False, clamp: bool = False):
        if gradient not in WEIGHT_GRADIENTS:
            raise ValueError(f"unknown weight gradient {gradient!r}; known: {', '.join(WEIGHT_GRADIENTS)}")
        self.gradient = gradient
        self.mean_center = mean_center
        self.clamp = clamp

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_weight_gradient_(pl_module, self.gradient)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.mean_center or self.clamp:
            center_and_clamp_(pl_module, self.mean_center, self.clamp)
