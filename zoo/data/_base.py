"""What every zoo data module shares: the seeded split, in-memory image tensors with shift/flip augmentation, and
the LightningDataModule surface the CLI, the training module and the model cards rely on.

A data module tells the rest of the zoo ``dataset_name``, ``num_classes``, ``in_chans``, ``input_size``, ``mean``
and ``std``: the CLI links ``num_classes`` / ``in_chans`` to the model, and publishing writes the rest into the
checkpoint's config and card.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["SPLIT_SEED", "seeded_split", "TensorImages", "ImageDataModule"]

# One seed for every split the zoo draws, so held-out sets never change between releases and the cards' accuracies
# stay comparable (the number is the paper's arXiv id).
SPLIT_SEED = 1603_05279


def seeded_split(n: int, sizes: dict[str, int], rest: str, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Disjoint, sorted index arrays over ``range(n)``: one of each size in ``sizes`` (drawn in that order from one
    seeded permutation), and the remaining indices under ``rest``."""
    taken = sum(sizes.values())
    if min(sizes.values(), default=0) < 0 or taken >= n:
        raise ValueError(f"cannot hold out {sizes} from {n} samples: {rest!r} would be empty")
    order = np.random.default_rng(seed).permutation(n)
    split, start = {}, 0
    for name, size in sizes.items():
        split[name] = np.sort(order[start : start + size])
        start += size
    split[rest] = np.sort(order[start:])
    return split


class TensorImages(Dataset):
    """Images held in one ``(N, C, H, W)`` tensor, with labels, for data sets that fit in memory.

    ``images`` are either floats already normalised with ``mean`` / ``std``, or ``uint8`` pixels (0-255), which each
    sample normalises on the fly (a quarter of the memory of floats). With ``max_shift > 0`` a sample is randomly
    translated by up to that many pixels, the uncovered border filled with black (``-mean / std`` once normalised):
    the same as padding by ``max_shift`` and taking a random crop of the original size. With ``hflip`` it is also
    mirrored left-right with probability 1/2.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        max_shift: int = 0,
        hflip: bool = False,
    ):
        if images.dim() != 4 or len(images) != len(labels):
            raise ValueError(f"images must be (N, C, H, W) with one label each, got {tuple(images.shape)} images "
                             f"and {len(labels)} labels")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"mean and std need one value per channel ({images.shape[1]}), got {mean} and {std}")
        self.images, self.labels, self.max_shift, self.hflip = images, labels, max_shift, hflip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        # the normalised value of a black pixel, rounded once from double precision
        self.fill = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if image.dtype == torch.uint8:
            image = (image.float() / 255.0 - self.mean) / self.std
        if self.max_shift > 0:
            s = self.max_shift
            c, h, w = image.shape
            padded = self.fill.expand(c, h + 2 * s, w + 2 * s).clone()
            padded[:, s : s + h, s : s + w] = image
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            image = padded[:, dy : dy + h, dx : dx + w]
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.labels[i]


class ImageDataModule(pl.LightningDataModule):
    """Base of the zoo's data modules: loaders over ``self.splits`` (``train``, ``val``, ``test``; ``predict`` uses
    ``test``), filled by the subclass's ``setup``, and the attributes the rest of the zoo reads.

    Args:
        batch_size: batch size of every loader (per process under DDP).
        num_workers: DataLoader worker processes (kept alive between epochs when > 0).
    """

    dataset_name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(self, batch_size: int, num_workers: int):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.splits: dict[str, Dataset] = {}

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
