"""ImageNet (ILSVRC-2012, or any data set in its folder layout) as a LightningDataModule.

The images stay on disk in the usual layout, one folder per class (a WordNet id such as ``n01440764``)::

    root/train/<wnid>/*.JPEG
    root/val/<wnid>/*.JPEG

and are read with torchvision's ``ImageFolder`` (PIL decoding; nothing is unpickled). The labels of ImageNet's test
images were never published, so the ``test`` split is the validation set, as in the papers that report ImageNet
accuracy (XNOR-Net's included).
"""

from __future__ import annotations

from pathlib import Path

from ._base import ImageDataModule

__all__ = ["ImageNetDataModule", "IMAGENET_MEAN", "IMAGENET_STD"]

# Per-channel mean and std of ImageNet's training pixels scaled to [0, 1], as used by torchvision and timm.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_CROPS = ("random_resized", "random")


def _class_folders(folder: Path) -> list[str]:
    from torchvision.datasets.folder import find_classes

    if not folder.is_dir():
        raise FileNotFoundError(
            f"ImageNet folder {folder} not found: the data module expects {folder.parent}/train/<wnid>/*.JPEG and "
            f"{folder.parent}/val/<wnid>/*.JPEG (the validation images sorted into one folder per class)"
        )
    try:
        return find_classes(str(folder))[0]
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{folder} has no class folders: expected {folder}/<wnid>/*.JPEG") from e


class ImageNetDataModule(ImageDataModule):
    """ImageNet at ``image_size`` x ``image_size``, normalised with ImageNet's mean/std.

    Training images get a random crop and a horizontal flip; validation and test images are resized so that their
    shorter side is ``resize``, then centre-cropped. The classes are the folders of ``root/train``, sorted (so
    ImageNet's 1,000 WordNet ids map to the usual indices 0-999); ``root/val`` must have the same folders.

    Args:
        root: folder holding ``train/`` and ``val/``.
        image_size: side of the square crops fed to the model.
        resize: shorter side of evaluation images before the centre crop (and of training images with
            ``train_crop="random"``).
        batch_size: batch size of every loader (per process under DDP).
        num_workers: DataLoader workers decoding JPEGs.
        train_crop: ``"random_resized"`` (a random area and aspect ratio, resized to ``image_size``: the usual
            augmentation today) or ``"random"`` (resize to ``resize``, then a random ``image_size`` crop: AlexNet's,
            and the XNOR-Net authors' code's).
    """

    dataset_name = "imagenet"
    in_chans = 3
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        root: str = "data/imagenet",
        image_size: int = 224,
        resize: int = 256,
        batch_size: int = 256,
        num_workers: int = 8,
        train_crop: str = "random_resized",
    ):
        super().__init__(batch_size, num_workers)
        if image_size < 1 or resize < image_size:
            raise ValueError(f"need 1 <= image_size <= resize, got image_size={image_size}, resize={resize}")
        if train_crop not in TRAIN_CROPS:
            raise ValueError(f"unknown train_crop {train_crop!r}; known: {', '.join(TRAIN_CROPS)}")
        self.save_hyperparameters()
        self.root, self.image_size, self.resize, self.train_crop = Path(root), image_size, resize, train_crop
        self.classes = _class_folders(self.root / "train")
        val_classes = _class_folders(self.root / "val")
        if val_classes != self.classes:
            only_train = sorted(set(self.classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(self.classes))
            raise ValueError(
                f"{self.root / 'train'} and {self.root / 'val'} must have the same class folders; only in train: "
                f"{only_train[:5]}{' ...' if len(only_train) > 5 else ''}, only in val: "
                f"{only_val[:5]}{' ...' if len(only_val) > 5 else ''}"
            )
        self.num_classes = len(self.classes)

    def transforms(self, train: bool):
        """The torchvision transform of training (``train=True``) or evaluation images."""
        from torchvision import transforms as T

        if not train:
            crop = [T.Resize(self.resize), T.CenterCrop(self.image_size)]
        elif self.train_crop == "random_resized":
            crop = [T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip()]
        else:
            crop = [T.Resize(self.resize), T.RandomCrop(self.image_size), T.RandomHorizontalFlip()]
        return T.Compose([*crop, T.ToTensor(), T.Normalize(self.mean, self.std)])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from torchvision.datasets import ImageFolder

        self.splits["train"] = ImageFolder(str(self.root / "train"), transform=self.transforms(train=True))
        self.splits["val"] = ImageFolder(str(self.root / "val"), transform=self.transforms(train=False))
        self.splits["test"] = self.splits["val"]  # ImageNet's test labels are not public
