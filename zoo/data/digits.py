"""scikit-learn's bundled digits (1,797 8x8 grey images of 0-9) as a LightningDataModule.

The data ships with scikit-learn, so demos and tests need no download. The train/val/test split is fixed by
``SPLIT_SEED`` and never changes, so accuracies in the cards stay comparable across releases.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._base import ImageDataModule, TensorImages, seeded_split

__all__ = ["DigitsDataModule", "digits_split", "load_digits_tensors", "DIGITS_MEAN", "DIGITS_STD"]

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
    return seeded_split(n, {"test": TEST_SIZE, "val": VAL_SIZE}, rest="train")


class DigitsDataModule(ImageDataModule):
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
        super().__init__(batch_size, num_workers)
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 (the digits are 8x8), got {image_size}")
        self.save_hyperparameters()
        self.image_size, self.max_shift = image_size, max_shift

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = load_digits_tensors()
        if self.image_size != 8:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        images = (images - self.mean[0]) / self.std[0]
        for name, idx in digits_split(len(labels)).items():
            idx = torch.from_numpy(idx)
            shift = self.max_shift if name == "train" else 0
            self.splits[name] = TensorImages(images[idx].contiguous(), labels[idx], self.mean, self.std, shift)
