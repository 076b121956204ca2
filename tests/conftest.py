import os
import sys
import tempfile

# Keep wandb local in every test run, whatever the machine's configuration.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# A local Hugging Face Hub for the whole session (tests/hub_server.py). It must start, and set HF_ENDPOINT,
# HF_HUB_DISABLE_XET & co, before anything imports huggingface_hub (timm does), which reads them at import.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/ is not a package (importlib import mode)
from hub_server import HubServer, reserve_endpoint  # noqa: E402

HUB_SERVER: HubServer = reserve_endpoint()

import pytest  # noqa: E402
import torch  # noqa: E402

# Without a GPU the Triton kernels run on CPU tensors in Triton's interpreter. Triton reads TRITON_INTERPRET when
# @triton.jit decorates a kernel, i.e. when a test module first imports zoo_kernels.triton_xnor, after this file.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _bare_argv(monkeypatch):
    """The CLI run in-process sees a command line of its own: ``sys.argv`` without pytest's arguments (LightningCLI
    warns when it is given ``args`` while ``sys.argv`` has arguments too)."""
    monkeypatch.setattr(sys, "argv", sys.argv[:1])


@pytest.fixture(scope="session")
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A real, normalised batch of 64 digits from the training split at 8x8."""
    from zoo.data import DigitsDataModule

    dm = DigitsDataModule(image_size=8, max_shift=0)
    dm.setup()
    images, labels = dm.splits["train"].images[:64], dm.splits["train"].labels[:64]
    return images.clone(), labels.clone()


@pytest.fixture(scope="session")
def hub_server() -> HubServer:
    """The session's local Hub, at ``hub_server.endpoint``, where huggingface_hub already points."""
    return HUB_SERVER


def _trained_briefly(name: str, images: torch.Tensor, labels: torch.Tensor) -> torch.nn.Module:
    """Model ``name`` after 12 Adam steps on real digits (non-trivial weights and BatchNorm statistics), in eval
    mode."""
    import zoo

    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(12):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def trained_xnor(digits_batch):
    """xnor_resnet18 briefly trained on real digits, in eval mode."""
    return _trained_briefly("xnor_resnet18", *digits_batch)


@pytest.fixture(scope="session")
def trained_w1a2(digits_batch):
    """w1a2_resnet18 (2-bit inputs, sign weights) briefly trained on real digits, in eval mode."""
    return _trained_briefly("w1a2_resnet18", *digits_batch)


@pytest.fixture(autouse=True)
def _float32_stem(request, monkeypatch):
    """Packed ResNets run their float stem in float32 in tests, so that packed outputs can be held to float32
    tolerances against the trained models on every CPU; tests marked ``native_stem`` keep the default (bfloat16 where
    the CPU has native bfloat16) and check it."""
    if request.node.get_closest_marker("native_stem") is None:
        from zoo.packing import PackedResNet

        monkeypatch.setattr(PackedResNet, "stem_dtype", torch.float32)


# Binary convs take the popcount route in tests unless a test asks for another (the route tests, and the int8
# backend of the packed-model tests): a measured choice would make which kernel ran depend on the machine's load.
# Choices measured in tests go to a folder of the test session, not to the user's cache.
os.environ.setdefault("ZOO_KERNELS_ROUTE", "popcount")
os.environ.setdefault("ZOO_KERNELS_ROUTE_CACHE", tempfile.mkdtemp(prefix="zoo-routes-"))
