import os

# Keep wandb local in every test run, whatever the machine's configuration.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A real, normalised batch of 64 digits from the training split at 8x8."""
    from zoo.data import DigitsDataModule

    dm = DigitsDataModule(image_size=8, max_shift=0)
    dm.setup()
    images, labels = dm.splits["train"].images[:64], dm.splits["train"].labels[:64]
    return images.clone(), labels.clone()
