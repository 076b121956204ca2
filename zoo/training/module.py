"""The LightningModule that trains any zoo model for image classification."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ..models import create_model

__all__ = ["ZooClassifier"]

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
_SCHEDULES = ("cosine", "step", "regime", "none")


class ZooClassifier(pl.LightningModule):
    """Image classification with a zoo model; logs loss, top-1 and top-5 (torchmetrics).

    Args:
        model_name: a name from ``zoo.list_models()``.
        num_classes, in_chans, small_input: model arguments (``small_input``: 3x3 stride-1 stem, no max-pool).
        model_kwargs: further ``zoo.create_model`` arguments (``binary_gradient=True``, ``drop_rate``...).
        optimizer: ``"adam"`` (the paper's choice, sec. 4), ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        lr, weight_decay: optimizer settings.
        lr_schedule: ``"cosine"`` (annealed to 0 per step over the whole run), ``"step"`` (x ``step_gamma``
            every ``step_epochs`` epochs), ``"regime"`` (see ``regime``) or ``"none"``.
        regime: rows ``(first epoch, lr, weight_decay)``, epochs counted from 0: each epoch trains with the values of
            the last row that has started. This is how the XNOR-Net authors' Torch code schedules training (its
            ``paramsForEpoch``), weight decay included; the first row must start at epoch 0 and replaces ``lr`` and
            ``weight_decay``.
        label_smoothing: cross-entropy label smoothing.
        channels_last: keep weights and inputs in channels-last memory format (faster convs on CPU).
    """

    def __init__(
        self,
        model_name: str = "xnor_resnet18",
        num_classes: int = 10,
        in_chans: int = 1,
        small_input: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "cosine",
        step_epochs: int = 30,
        step_gamma: float = 0.1,
        regime: list[tuple[int, float, float]] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = True,
    ):
        super().__init__()
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; known optimizers: {', '.join(_OPTIMIZERS)}")
        if lr_schedule not in _SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; known schedules: {', '.join(_SCHEDULES)}")
        if (lr_schedule == "regime") != bool(regime):
            raise ValueError("regime rows (first epoch, lr, weight_decay) go with lr_schedule='regime', and only there")
        if regime and ([row[0] for row in regime] != sorted({row[0] for row in regime}) or regime[0][0] != 0):
            raise ValueError(f"regime must start at epoch 0 with strictly increasing epochs, got {regime}")
        self.save_hyperparameters()
        self.model = create_model(
            model_name, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **(model_kwargs or {})
        )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        top5 = min(5, num_classes)
        self.metrics = torch.nn.ModuleDict(
            {
                f"{stage}_top{k}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for stage in ("train", "val", "test")
                for k in sorted({1, top5})
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", sync_dist=stage != "train")
        for name, metric in self.metrics.items():
            if name.startswith(stage + "_"):
                metric(logits, labels)
                self.log(f"{stage}/{name.split('_', 1)[1]}", metric, prog_bar=name.endswith("top1"))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).argmax(dim=1)

    def configure_optimizers(self):
        hp = self.hparams
        kwargs = {"momentum": 0.9} if hp.optimizer == "sgd" else {}
        opt = _OPTIMIZERS[hp.optimizer](self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, **kwargs)
        if hp.lr_schedule in ("none", "regime"):
            return opt
        if hp.lr_schedule == "cosine":
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_epochs, gamma=hp.step_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_train_epoch_start(self) -> None:
        if self.hparams.lr_schedule == "regime":
            _, lr, weight_decay = next(row for row in reversed(self.hparams.regime) if row[0] <= self.current_epoch)
            for optimizer in self.trainer.optimizers:
                for group in optimizer.param_groups:
                    group.update(lr=lr, weight_decay=weight_decay)
