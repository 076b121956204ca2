"""ImageNet's folder layout with real JPEG files: classes, labels, decoded colours, transforms and errors."""

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from zoo.data import IMAGENET_MEAN, IMAGENET_STD, ImageNetDataModule

ROOT = Path(__file__).resolve().parents[2]
# Class folders as ImageNet names them, each with a flat colour so a decoded image tells its class.
COLOURS = {"n01440764": (200, 30, 30), "n01443537": (30, 180, 40), "n02102040": (20, 40, 220)}
SIZES = [(48, 40), (40, 56), (64, 64)]  # (width, height): landscape, portrait, square


def write_imagenet(root: Path, train_per_class: int = 3, val_per_class: int = 2, classes=COLOURS) -> None:
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for wnid, colour in classes.items():
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                size = SIZES[i % len(SIZES)]
                Image.new("RGB", size, colour).save(folder / f"{wnid}_{i}.JPEG", format="JPEG", quality=95)


@pytest.fixture
def small_imagenet(tmp_path) -> Path:
    write_imagenet(tmp_path)
    return tmp_path


def _denormalise(image: torch.Tensor) -> torch.Tensor:
    return image * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def test_classes_labels_and_decoded_pixels(small_imagenet):
    dm = ImageNetDataModule(root=str(small_imagenet), image_size=32, resize=36, batch_size=4, num_workers=0)
    assert dm.classes == sorted(COLOURS) and dm.num_classes == 3
    assert (dm.in_chans, dm.input_size, dm.dataset_name) == (3, (3, 32, 32), "imagenet")
    dm.setup()
    assert (len(dm.splits["train"]), len(dm.splits["val"])) == (9, 6)
    assert dm.splits["test"] is dm.splits["val"]  # ImageNet's test labels are not public
    assert dm.splits["train"].class_to_idx == {wnid: i for i, wnid in enumerate(sorted(COLOURS))}
    for i, (path, label) in enumerate(dm.splits["val"].samples):
        image, decoded_label = dm.splits["val"][i]
        wnid = Path(path).parent.name
        assert decoded_label == label == dm.classes.index(wnid)
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        colour = torch.tensor(COLOURS[wnid], dtype=torch.float32) / 255
        torch.testing.assert_close(_denormalise(image).mean(dim=(1, 2)), colour, atol=4 / 255, rtol=0)
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64


@pytest.mark.parametrize("train_crop", ["random_resized", "random"])
def test_training_and_evaluation_transforms(small_imagenet, train_crop):
    dm = ImageNetDataModule(root=str(small_imagenet), image_size=24, resize=28, train_crop=train_crop, num_workers=0)
    dm.setup()
    gradient = Image.linear_gradient("L").resize((40, 30)).convert("RGB")  # top-to-bottom ramp: crops differ
    train, evaluate = dm.transforms(train=True), dm.transforms(train=False)
    crops = [train(gradient) for _ in range(20)]
    assert all(c.shape == (3, 24, 24) for c in crops)
    assert len({round(c.mean().item(), 4) for c in crops}) > 1, "training crops must be random"
    assert torch.equal(evaluate(gradient), evaluate(gradient)) and evaluate(gradient).shape == (3, 24, 24)
    # evaluation: shorter side 30 -> 28, then the central 24 rows of the ramp, so the mean is the ramp's middle
    middle = _denormalise(evaluate(gradient)).mean().item()
    assert abs(middle - 0.5) < 0.02
    assert dm.splits["train"][0][0].shape == (3, 24, 24)


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere/train not found.*train/<wnid>/\*\.JPEG"):
        ImageNetDataModule(root=str(tmp_path / "nowhere"))
    (tmp_path / "no_val" / "train" / "n01440764").mkdir(parents=True)
    (tmp_path / "no_val" / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no_val/val has no class folders"):
        ImageNetDataModule(root=str(tmp_path / "no_val"))
    (tmp_path / "no_val_dir" / "train" / "n01440764").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no_val_dir/val not found"):
        ImageNetDataModule(root=str(tmp_path / "no_val_dir"))


def test_train_and_val_must_have_the_same_classes(tmp_path):
    write_imagenet(tmp_path)
    (tmp_path / "val" / "n09999999").mkdir()
    (tmp_path / "train" / "n01443537").rename(tmp_path / "train" / "n01443538")
    with pytest.raises(ValueError, match=r"only in train: \['n01443538'\], only in val: \['n01443537', 'n09999999'\]"):
        ImageNetDataModule(root=str(tmp_path))


def test_bad_arguments(small_imagenet):
    with pytest.raises(ValueError, match="image_size <= resize"):
        ImageNetDataModule(root=str(small_imagenet), image_size=224, resize=200)
    with pytest.raises(ValueError, match="unknown train_crop 'center'"):
        ImageNetDataModule(root=str(small_imagenet), train_crop="center")
    with pytest.raises(ValueError, match="batch_size"):
        ImageNetDataModule(root=str(small_imagenet), batch_size=0)


def test_zoo_fit_runs_the_imagenet_recipe_on_the_written_files(small_imagenet, monkeypatch):
    from zoo.cli import ZooCLI
    from zoo.training.callbacks import RunReport

    monkeypatch.setattr(sys, "argv", ["zoo"])
    cli = ZooCLI(args=[
        "fit", "--config", str(ROOT / "recipes" / "imagenet" / "xnor_resnet18.yaml"),
        "--data.root", str(small_imagenet), "--data.image_size", "32", "--data.resize", "36",
        "--data.batch_size", "4", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1", "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(small_imagenet),
    ])
    assert cli.trainer.global_step == 2 and cli.model.hparams.num_classes == 3
    assert cli.model.hparams.lr_schedule == "regime" and cli.trainer.optimizers[0].param_groups[0]["lr"] == 1e-3
    report = next(c for c in cli.trainer.callbacks if isinstance(c, RunReport))
    assert 0.0 <= report.test_metrics["test/top1"] <= 1.0
