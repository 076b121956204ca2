"""Callbacks the zoo's CLI always installs."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["RunReport"]


class RunReport(pl.Callback):
    """Times ``fit`` and prints one summary line after ``test``: the model, test top-1 / top-5 and the time.

    The figures stay on the callback (``fit_seconds``, ``test_metrics``) for whatever reports on the run.
    """

    def __init__(self):
        self.fit_seconds: float | None = None
        self.test_metrics: dict[str, float] = {}
        self._start = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_seconds = time.perf_counter() - self._start

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        name = getattr(pl_module.hparams, "model_name", type(pl_module).__name__)
        parts = [f"{name}: test top-1 {100 * self.test_metrics.get('test/top1', float('nan')):.2f}%"]
        if "test/top5" in self.test_metrics:
            parts.append(f"top-5 {100 * self.test_metrics['test/top5']:.2f}%")
        if self.fit_seconds is not None:
            parts.append(f"trained in {self.fit_seconds:.1f} s")
        rank_zero_info(", ".join(parts))
