import pytest
import timm
import torch
from torch import nn

import zoo
from zoo.layers import BinaryConv2d, BinaryLinear

MODELS = zoo.list_models()


def test_registry_lists_the_paper_models():
    for arch in ("resnet18", "resnet34"):
        for scheme in ("fp", "bwn", "xnor", "xnor_nobeta"):
            assert f"{scheme}_{arch}" in MODELS
    assert zoo.list_models("xnor_resnet*") == ["xnor_resnet18", "xnor_resnet34"]


def test_zoo_models_are_timm_models():
    assert timm.is_model("xnor_resnet18")
    model = timm.create_model("xnor_resnet18", num_classes=3)
    assert model.binarize_config.name == "xnor"


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_finite(name):
    model = zoo.create_model(name, num_classes=7, in_chans=1, small_input=True).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_imagenet_shape_forward(name):
    model = zoo.create_model(name).eval()
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_converted_layer_counts(name):
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True)
    cfg = model.pretrained_cfg
    scheme = cfg["scheme"]
    reference = timm.create_model(cfg["backbone"], num_classes=10, in_chans=1)
    n_convs = sum(type(m) is nn.Conv2d for m in reference.modules())
    binary = [m for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))]
    assert len(binary) == (0 if scheme == "fp" else n_convs - 1)
    first_conv, classifier = model.get_submodule(cfg["first_conv"]), model.get_submodule(cfg["classifier"])
    assert type(first_conv) is nn.Conv2d and type(classifier) is nn.Linear
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert cfg["first_conv"] + ".weight" in model.state_dict() and cfg["classifier"] + ".weight" in model.state_dict()


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    # timm zero-initialises each block's last BatchNorm scale, which blocks the very first backward through the
    # residual branches; after one optimizer step every parameter must receive a gradient (a dead STE shows here).
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead[:5]}"


def test_unknown_model_lists_known():
    with pytest.raises(KeyError, match="known models: .*xnor_resnet18"):
        zoo.create_model("xnor_resnet19")


def test_pretrained_flag_points_to_from_pretrained():
    with pytest.raises(RuntimeError, match="from_pretrained"):
        zoo.create_model("xnor_resnet18", pretrained=True)


def test_binary_gradient_model_option():
    model = zoo.create_model("xnor_resnet18", binary_gradient=True)
    assert model.binarize_config.binary_gradient
