"""CIFAR-10 from its binary version: small data sets written byte by byte in the real format, read back exactly."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, CIFAR10DataModule, read_cifar10_batch, seeded_split
from zoo.data import cifar10 as cifar10_module

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 20  # per batch file in these tests; the real files have 10,000


def _record(label: int, red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> bytes:
    """One record as the CIFAR page describes it: the label byte, then the red, green and blue planes, row by row."""
    planes = b"".join(bytes(int(v) for row in plane for v in row) for plane in (red, green, blue))
    return bytes([label]) + planes


def write_cifar(root: Path, records: int = RECORDS, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random images in the binary layout under ``root/cifar-10-batches-bin``; returns what each file holds."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        images = rng.integers(0, 256, size=(records, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=records, dtype=np.uint8)
        (folder / name).write_bytes(b"".join(_record(y, *x) for x, y in zip(images, labels, strict=True)))
        written[name] = (images, labels.astype(np.int64))
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return written


@pytest.fixture
def small_cifar(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_module, "BATCH_RECORDS", RECORDS)
    return tmp_path, write_cifar(tmp_path)


def test_read_batch_decodes_planes_row_major(tmp_path):
    y, x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    red, green, blue = (y * 32 + x) % 256, 255 - (7 * y + x) % 256, (3 * x + 11 * y) % 256
    path = tmp_path / "batch.bin"
    path.write_bytes(_record(7, red, green, blue) + _record(0, blue, red, green))
    images, labels = read_cifar10_batch(path, records=2)
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32) and labels.tolist() == [7, 0]
    assert images[0, 0, 0, 1] == 1 and images[0, 0, 1, 0] == 32  # red plane: row-major, x fastest
    for channel, plane in enumerate((red, green, blue)):
        assert np.array_equal(images[0, channel].numpy(), plane)
    assert np.array_equal(images[1].numpy(), np.stack([blue, red, green]))


def test_truncated_or_foreign_files_are_named(tmp_path):
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(bytes(3073 * 2 + 100))
    with pytest.raises(ValueError, match=r"data_batch_3\.bin has 6,246 bytes, expected 30,730,000.*truncated"):
        read_cifar10_batch(path)
    path.write_bytes(_record(12, *np.zeros((3, 32, 32), dtype=np.uint8)))
    with pytest.raises(ValueError, match="record 0 has label 12"):
        read_cifar10_batch(path, records=1)


def test_module_splits_and_pixels(small_cifar):
    root, written = small_cifar
    dm = CIFAR10DataModule(root=str(root), val_size=10, batch_size=16, augment=False)
    dm.setup()
    assert (dm.num_classes, dm.in_chans, dm.input_size, dm.dataset_name) == (10, 3, (3, 32, 32), "cifar10")
    assert dm.classes == CIFAR10_CLASSES
    train_images = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    train_labels = np.concatenate([written[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    split = seeded_split(5 * RECORDS, {"val": 10}, rest="train")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 90, "val": 10, "test": 20}
    for name in ("train", "val"):
        assert np.array_equal(dm.splits[name].images.numpy(), train_images[split[name]])
        assert np.array_equal(dm.splits[name].labels.numpy(), train_labels[split[name]])
    test_images, test_labels = written["test_batch.bin"]
    assert np.array_equal(dm.splits["test"].images.numpy(), test_images)
    image, label = dm.splits["test"][3]
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)
    torch.testing.assert_close(image, (torch.from_numpy(test_images[3]).float() / 255 - mean) / std)
    assert label == test_labels[3]
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64


def test_training_augmentation_is_a_padded_crop_and_a_flip(small_cifar):
    root, _ = small_cifar
    dm = CIFAR10DataModule(root=str(root), val_size=10)
    dm.setup()
    train = dm.splits["train"]
    base = (train.images[0].float() / 255 - train.mean) / train.std
    padded = train.fill.expand(3, 40, 40).clone()
    padded[:, 4:36, 4:36] = base
    windows = [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
    seen = set()
    for _ in range(60):
        image, _ = train[0]
        match = [(i, f) for i, w in enumerate(windows) for f in (False, True) if torch.equal(w.flip(-1) if f else w,
                                                                                              image)]
        assert match, "a training sample must be a (possibly mirrored) 32x32 window of the image padded by 4"
        seen.add(match[0])
    assert len({i for i, _ in seen}) > 5 and {f for _, f in seen} == {False, True}
    val = dm.splits["val"]
    assert torch.equal(val[0][0], (val.images[0].float() / 255 - val.mean) / val.std)  # evaluation: not augmented


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path / "nowhere"))
    dm.prepare_data()  # download=False: never touches the network
    with pytest.raises(FileNotFoundError, match=r"looked in .*nowhere/cifar-10-batches-bin.*--data\.download true"):
        dm.setup()


def test_download_only_when_asked_and_missing(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, md5=None, **kwargs):
        calls.append((url, download_root, md5))
        write_cifar(Path(download_root), records=1)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    monkeypatch.setattr(cifar10_module, "BATCH_RECORDS", 1)
    CIFAR10DataModule(root=str(tmp_path), download=False).prepare_data()
    assert calls == []
    dm = CIFAR10DataModule(root=str(tmp_path), download=True, val_size=1)
    dm.prepare_data()
    dm.prepare_data()  # the files are there now: no second download
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", str(tmp_path),
                      "c32a1d4ab5d03f1284b67883e8d87530")]
    dm.setup()
    assert len(dm.splits["train"]) == 4 and len(dm.splits["test"]) == 1


def test_bad_arguments(small_cifar):
    root, _ = small_cifar
    with pytest.raises(ValueError, match="val_size must be >= 1"):
        CIFAR10DataModule(val_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        CIFAR10DataModule(batch_size=0)
    with pytest.raises(ValueError, match="cannot hold out .*'val': 100.* from 100 samples"):
        CIFAR10DataModule(root=str(root), val_size=100).setup()


def test_zoo_fit_runs_the_cifar10_recipe_on_the_written_files(small_cifar, monkeypatch):
    from zoo.cli import ZooCLI
    from zoo.training.callbacks import RunReport

    monkeypatch.setattr(sys, "argv", ["zoo"])
    root, _ = small_cifar
    cli = ZooCLI(args=[
        "fit", "--config", str(ROOT / "recipes" / "cifar10" / "fp_resnet18.yaml"),
        "--data.root", str(root), "--data.val_size", "10", "--data.batch_size", "4", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.default_root_dir", str(root),
    ])
    assert cli.trainer.global_step == 2 and cli.model.hparams.num_classes == 10 and cli.model.hparams.in_chans == 3
    assert isinstance(cli.datamodule, CIFAR10DataModule) and cli.datamodule.root == root
    report = next(c for c in cli.trainer.callbacks if isinstance(c, RunReport))
    assert 0.0 <= report.test_metrics["test/top1"] <= 1.0
