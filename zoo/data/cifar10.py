"""CIFAR-10 (60,000 32x32 colour images in 10 classes) as a LightningDataModule, read from its binary version.

The zoo never unpickles data, so it does not use torchvision's ``CIFAR10`` (which reads the python version, a set of
pickles). The binary version, ``cifar-10-binary.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html, extracts
to ``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``data_batch_5.bin`` (training) and ``test_batch.bin``, each
10,000 records of 3,073 bytes (one label byte, then 1,024 red, 1,024 green and 1,024 blue bytes, each a row-major
32x32 plane), and ``batches.meta.txt`` with the class names, one a line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._base import ImageDataModule, TensorImages, seeded_split

__all__ = ["CIFAR10DataModule", "read_cifar10_batch", "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD"]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # as published on the CIFAR page, next to the link
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
RECORD_BYTES = 1 + 3 * 32 * 32
BATCH_RECORDS = 10_000
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and std of the 50,000 training images' pixels scaled to [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def read_cifar10_batch(path: str | Path, records: int = BATCH_RECORDS) -> tuple[torch.Tensor, torch.Tensor]:
    """One binary batch file as ``uint8`` images of shape (records, 3, 32, 32) and int64 labels.

    The file must hold exactly ``records`` records: a shorter or longer file (an interrupted download, the wrong
    file) is an error naming it, not a silently smaller data set.
    """
    path = Path(path)
    expected = records * RECORD_BYTES
    size = path.stat().st_size
    if size != expected:
        raise ValueError(
            f"{path} has {size:,} bytes, expected {expected:,} ({records:,} records of {RECORD_BYTES:,} bytes): the "
            f"file is truncated or not a CIFAR-10 binary batch; delete it and download the data again"
        )
    raw = np.fromfile(path, dtype=np.uint8).reshape(records, RECORD_BYTES)
    labels = raw[:, 0].astype(np.int64)
    if labels.max(initial=0) >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise ValueError(f"{path}: record {bad} has label {labels[bad]}, CIFAR-10 labels are 0-9")
    images = raw[:, 1:].reshape(records, 3, 32, 32)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 at 32x32, normalised with the training set's per-channel mean/std.

    ``val_size`` images are held out of the 50,000 training images by the zoo's fixed seeded split (the same every
    run); the test split is CIFAR-10's 10,000 test images. Training samples are augmented as usual for CIFAR: a
    random 32x32 crop of the image padded by 4 pixels, and a random horizontal flip.

    Args:
        root: folder holding (or to receive) ``cifar-10-batches-bin/``.
        download: fetch and extract ``cifar-10-binary.tar.gz`` (162 MB, MD5-checked) into ``root`` if missing.
        batch_size: batch size of every loader.
        num_workers: DataLoader workers.
        val_size: training images held out for validation.
        augment: random crop and flip for training samples (False: the plain images, e.g. to debug).
    """

    dataset_name = "cifar10"
    num_classes = 10
    in_chans = 3
    image_size = 32
    mean = CIFAR10_MEAN
    std = CIFAR10_STD
    classes = CIFAR10_CLASSES

    def __init__(
        self,
        root: str = "data/cifar10",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 2,
        val_size: int = 5000,
        augment: bool = True,
    ):
        super().__init__(batch_size, num_workers)
        if val_size < 1:
            raise ValueError(f"val_size must be >= 1 (images held out of the training set), got {val_size}")
        self.save_hyperparameters()
        self.root, self.download, self.val_size, self.augment = Path(root), download, val_size, augment

    @property
    def folder(self) -> Path:
        return self.root / FOLDER

    def _missing(self) -> list[str]:
        return [name for name in (*TRAIN_FILES, TEST_FILE) if not (self.folder / name).is_file()]

    def prepare_data(self) -> None:
        """Download and extract the binary archive (once, on the main process) when asked to and still missing."""
        if self.download and self._missing():
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(URL, download_root=str(self.root), md5=MD5)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        missing = self._missing()
        if missing:
            raise FileNotFoundError(
                f"CIFAR-10 not found: looked in {self.folder} for {', '.join(missing)}. Download it with "
                f"`--data.download true` (CIFAR10DataModule(download=True)), or download {URL} yourself and "
                f"extract it so that {FOLDER}/ sits under {self.root}"
            )
        meta = self.folder / META_FILE
        if meta.is_file():
            names = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip())
            if len(names) != self.num_classes:
                raise ValueError(f"{meta} names {len(names)} classes, CIFAR-10 has {self.num_classes}: {names}")
            self.classes = names
        train = [read_cifar10_batch(self.folder / name, BATCH_RECORDS) for name in TRAIN_FILES]
        images, labels = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
        test_images, test_labels = read_cifar10_batch(self.folder / TEST_FILE, BATCH_RECORDS)
        for name, idx in seeded_split(len(labels), {"val": self.val_size}, rest="train").items():
            idx, augment = torch.from_numpy(idx), self.augment and name == "train"
            self.splits[name] = TensorImages(
                images[idx], labels[idx], self.mean, self.std, max_shift=4 if augment else 0, hflip=augment
            )
        self.splits["test"] = TensorImages(test_images, test_labels, self.mean, self.std)
