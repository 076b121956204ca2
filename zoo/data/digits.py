"""scikit-learn's bundled digits (1,797 8x8 grey images of 0-9) as a LightningDataModule.

The data ships with scikit-learn, so demos and tests need no download. The train/val/test split is fixed by
``SPLIT_SEED`` and never changes, so accuracies in the cards stay comparable across releases.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = ["DigitsDataModule", "digits_split", "load_digits_tensors", "DIGITS_MEAN", "DIGITS_STD"]

SPLIT_SEED = 1603_05279
TEST_SIZE = 360
VAL_SIZE = 180
# Mean and std of the training split's pixels scaled to [0, 1] (tests recompute them).
DIGITS_MEAN = (0.3060,)
DIGITS_STD = (0.3763,)


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as float images in [0, 1] of shape (1797, 1, 8, 8) and int64 labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    return images, torch.from_numpy(data.target.astype(np.int64))


def digits_split(n: int = 1797) -> dict[str, np.ndarray]:
    """Fixed, disjoint index arrays for ``train`` (1,257), ``val`` (180) and ``test`` (360)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return {
        "test": np.sort(order[:TEST_SIZE]),
        "val": np.sort(order[TEST_SIZE : TEST_SIZE + VAL_SIZE]),
        "train": np.sort(order[TEST_SIZE + VAL_SIZE :]),
    }


class ShiftedImages(Dataset):
    """Images with labels; with ``max_shift > 0``, each sample is randomly translated by up to that many pixels
    (zero-padded, in normalised units: the background value), the usual augmentation for small images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_shift: int = 0, fill: float = 0.0):
        self.images, self.labels, self.max_shift, self.fill = images, labels, max_shift, fill

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if self.max_shift > 0:
            s = self.max_shift
            h, w = image.shape[-2:]
            padded = F.pad(image, (s, s, s, s), value=self.fill)
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            image = padded[:, dy : dy + h, dx : dx + w]
        return image, self.labels[i]


class DigitsDataModule(pl.LightningDataModule):
    """Digits at ``image_size`` x ``image_size`` (bilinear resize), normalised with the training split's mean/std.

    Args:
        image_size: side of the resized images (8 keeps the original resolution).
        batch_size: batch size of every loader.
        max_shift: random translation in pixels for training samples (0 turns augmentation off).
        num_workers: DataLoader workers (the data is tiny; 0 is fastest).
    """

    dataset_name = "digits"
    num_classes = 10
    in_chans = 1
    mean = DIGITS_MEAN
    std = DIGITS_STD

    def __init__(self, image_size: int = 16, batch_size: int = 64, max_shift: int = 2, num_workers: int = 0):
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 (the digits are 8x8), got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.image_size, self.batch_size = image_size, batch_size
        self.max_shift, self.num_workers = max_shift, num_workers
        self.splits: dict[str, ShiftedImages] = {}

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = load_digits_tensors()
        if self.image_size != 8:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        images = (images - self.mean[0]) / self.std[0]
        fill = -self.mean[0] / self.std[0]
        for name, idx in digits_split(len(labels)).items():
            idx = torch.from_numpy(idx)
            shift = self.max_shift if name == "train" else 0
            self.splits[name] = ShiftedImages(images[idx].contiguous(), labels[idx], shift, fill)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
