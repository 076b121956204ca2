"""What a checkpoint keeps of the training run that wrote it, so that a later evaluation of the checkpoint
(``zoo test --ckpt_path CKPT --publish.enabled true``) can describe that run on its card and not its own command.

The record is this callback's state in Lightning's checkpoint (``checkpoint["callbacks"]["RunRecord"]``): the run's
config as ``zoo fit`` dumped it (YAML), its seed, the hardware, and the training time up to the checkpoint (a resumed
fit adds its time to the restored one). Plain strings and numbers only, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl

__all__ = ["RunRecord"]


class RunRecord(pl.Callback):
    """Writes the run's record into every checkpoint; holds the one read back from a checkpoint.

    The CLI sets ``recipe``, ``seed`` and ``hardware`` before ``fit``. After a ``test`` / ``validate`` / ``predict``
    with ``ckpt_path``, :attr:`restored` is the record of the run that wrote the checkpoint (None when it has none)
    and :attr:`checkpoint` its epoch and global step.
    """

    def __init__(self):
        self.recipe: str | None = None
        self.seed: int | None = None
        self.hardware: str | None = None
        self.restored: dict[str, Any] | None = None
        self.checkpoint: dict[str, int] | None = None
        self._earlier_seconds = 0.0
        self._start: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def fit_seconds(self) -> float:
        """Training time so far: this fit's and, for a resumed fit, that of the runs before it."""
        return self._earlier_seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "seed": self.seed, "hardware": self.hardware, "fit_seconds": self.fit_seconds()}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.checkpoint = {k: int(checkpoint.get(k, 0)) for k in ("epoch", "global_step")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored = {k: state_dict.get(k) for k in ("recipe", "seed", "hardware", "fit_seconds")}
        self._earlier_seconds = float(state_dict.get("fit_seconds") or 0.0)
