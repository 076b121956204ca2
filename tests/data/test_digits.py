import numpy as np
import pytest
import torch

from zoo.data import DIGITS_MEAN, DIGITS_STD, DigitsDataModule, digits_split, load_digits_tensors

PINNED_TEST_HEAD = [0, 2, 4, 10, 14, 15, 24, 29]


def test_split_is_fixed_disjoint_and_complete():
    split = digits_split()
    assert {k: len(v) for k, v in split.items()} == {"test": 360, "val": 180, "train": 1257}
    everything = np.concatenate(list(split.values()))
    assert len(np.unique(everything)) == 1797
    again = digits_split()
    assert all(np.array_equal(split[k], again[k]) for k in split)
    # pinned: the split never changes between releases, so the cards' accuracies stay comparable
    assert split["test"][:8].tolist() == PINNED_TEST_HEAD


def test_normalisation_constants_are_the_training_split_stats():
    images, _ = load_digits_tensors()
    train = images[torch.from_numpy(digits_split()["train"])]
    assert abs(train.mean().item() - DIGITS_MEAN[0]) < 5e-4
    assert abs(train.std().item() - DIGITS_STD[0]) < 5e-4


@pytest.mark.parametrize("size", [8, 16])
def test_module_shapes_and_labels(size):
    dm = DigitsDataModule(image_size=size, batch_size=32, max_shift=0)
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, size, size) and labels.dtype == torch.int64
    assert dm.input_size == (1, size, size) and dm.num_classes == 10
    test_labels = torch.cat([y for _, y in dm.test_dataloader()])
    raw_images, raw_labels = load_digits_tensors()
    assert torch.equal(test_labels, raw_labels[torch.from_numpy(digits_split()["test"])])


def test_native_size_is_normalised_raw_pixels():
    dm = DigitsDataModule(image_size=8, max_shift=0)
    dm.setup()
    raw, _ = load_digits_tensors()
    idx = torch.from_numpy(digits_split()["val"])
    torch.testing.assert_close(dm.splits["val"].images, (raw[idx] - DIGITS_MEAN[0]) / DIGITS_STD[0])


def test_shift_augmentation_translates_training_images_only():
    dm = DigitsDataModule(image_size=8, max_shift=2)
    dm.setup()
    train = dm.splits["train"]
    base = train.images[0]
    fill = -DIGITS_MEAN[0] / DIGITS_STD[0]
    padded = torch.nn.functional.pad(base, (2, 2, 2, 2), value=fill)
    windows = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
    seen = set()
    for _ in range(40):
        image, _ = train[0]
        matches = [i for i, w in enumerate(windows) if torch.equal(w, image)]
        assert matches, "an augmented image must be a translated window of the original"
        seen.add(matches[0])
    assert len(seen) > 3
    assert torch.equal(dm.splits["test"][0][0], dm.splits["test"].images[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        DigitsDataModule(image_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        DigitsDataModule(batch_size=0)
