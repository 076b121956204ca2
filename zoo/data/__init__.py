from ._base import SPLIT_SEED, ImageDataModule, TensorImages, seeded_split
from .cifar10 import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, CIFAR10DataModule, read_cifar10_batch
from .digits import DIGITS_MEAN, DIGITS_STD, DigitsDataModule, digits_split, load_digits_tensors
from .imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageNetDataModule
