import pytest
import timm
import torch
from timm.layers import Conv2dSame
from torch import nn

import zoo
from zoo.layers import BinaryConv2d, BinaryConvBlock, BinaryLinear


def _binary_convs(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, BinaryConv2d)}


def test_xnor_resnet_conversion_counts_and_full_precision_ends():
    model = timm.create_model("resnet18", num_classes=10)
    n_convs = sum(type(m) is nn.Conv2d for m in model.modules())
    zoo.binarize_(model, "xnor")
    convs = _binary_convs(model)
    assert len(convs) == n_convs - 1 == 19
    assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear
    assert isinstance(model.layer1[0].conv1, BinaryConvBlock)
    assert isinstance(model.layer1[0].conv1.norm, nn.BatchNorm2d)
    assert model.binarize_config.name == "xnor"


def test_binactiv_takes_the_place_of_the_activation_before_a_binary_conv():
    model = zoo.binarize_(timm.create_model("resnet18", num_classes=10), "xnor")
    assert all(isinstance(b.act1, nn.Identity) and isinstance(b.act2, nn.ReLU) for b in model.layer1)
    model = zoo.binarize_(timm.create_model("resnet18", num_classes=10), "bwn")
    assert all(isinstance(b.act1, nn.ReLU) for b in model.layer1)
    model = zoo.binarize_(timm.create_model("resnet18", num_classes=10), "xnor", keep=["layer1.0.conv2"])
    assert isinstance(model.layer1[0].act1, nn.ReLU) and isinstance(model.layer1[1].act1, nn.Identity)


def test_bwn_conversion_has_no_pre_norm():
    model = zoo.binarize_(timm.create_model("resnet18", num_classes=10), "bwn")
    assert isinstance(model.layer1[0].conv1, BinaryConv2d)
    assert not any(isinstance(m, BinaryConvBlock) for m in model.modules())


def test_fp_scheme_changes_nothing():
    model = timm.create_model("resnet18", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zoo.binarize_(model, "fp")
    assert not _binary_convs(model)
    assert before.keys() == model.state_dict().keys()


def _sign_shares(model, images):
    shares = {}

    def hook(name):
        def fn(module, inputs):
            x = inputs[0]
            shares[name] = ((x >= 0).float().mean().item(), (x < 0).float().mean().item())

        return fn

    for name, module in model.named_modules():
        if isinstance(module, (BinaryConv2d, nn.Conv2d)) and name != "conv1":
            module.register_forward_pre_hook(hook(name))
    model.train()
    with torch.no_grad():
        model(images)
    return shares


def test_every_binary_conv_sees_both_signs_on_digits(digits_batch):
    images, _ = digits_batch
    model = zoo.create_model("xnor_resnet18", num_classes=10, in_chans=1, small_input=True)
    shares = _sign_shares(model, images)
    assert len(shares) == 19
    for name, (pos, neg) in shares.items():
        assert 0.2 <= pos <= 0.8 and 0.2 <= neg <= 0.8, f"{name}: +{pos:.2f} / -{neg:.2f}"


def test_trap_plain_resnet_conv_inputs_are_post_relu(digits_batch):
    # What the pre-sign BatchNorm fixes: in a float timm ResNet, a conv's input follows a ReLU, so sign() would
    # be +1 almost everywhere.
    images, _ = digits_batch
    model = zoo.create_model("fp_resnet18", num_classes=10, in_chans=1, small_input=True)
    shares = _sign_shares(model, images)
    assert len(shares) == 19
    assert all(neg == 0.0 for _, neg in shares.values())


def test_subclassed_conv_is_refused_and_model_left_untouched():
    model = timm.create_model("resnet18", num_classes=10)
    model.layer2[0].conv1 = Conv2dSame(64, 128, 3, stride=2)
    with pytest.raises(TypeError, match=r"layer2\.0\.conv1.*Conv2dSame.*keep="):
        zoo.binarize_(model, "xnor")
    assert not _binary_convs(model)
    assert getattr(model, "binarize_config", None) is None
    zoo.binarize_(model, "xnor", keep=["layer2.0.conv1"])
    assert type(model.layer2[0].conv1) is Conv2dSame and len(_binary_convs(model)) == 18


def test_bad_keep_and_double_conversion():
    model = timm.create_model("resnet18", num_classes=10)
    with pytest.raises(KeyError, match="not found"):
        zoo.binarize_(model, "xnor", keep=["layer9"])
    zoo.binarize_(model, "xnor")
    with pytest.raises(ValueError, match="already binarized"):
        zoo.binarize_(model, "bwn")


def test_unknown_scheme():
    with pytest.raises(KeyError, match="known schemes"):
        zoo.binarize_(timm.create_model("resnet18"), "ternary")


def test_model_without_pretrained_cfg_keeps_first_conv_and_last_linear():
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.Linear(16, 3)
    )
    zoo.binarize_(model, "xnor")
    assert type(model[0]) is nn.Conv2d and type(model[5]) is nn.Linear
    assert isinstance(model[2], BinaryConvBlock) and isinstance(model[4].conv, BinaryLinear)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_overrides_reach_layers():
    model = zoo.binarize_(timm.create_model("resnet18"), "xnor", binary_gradient=True)
    assert all(m.grad_quantizer is not None for m in _binary_convs(model).values())
    model = zoo.binarize_(timm.create_model("resnet18"), "w1a2")
    assert all(m.input_quantizer.bits == 2 for m in _binary_convs(model).values())


def test_feature_batchnorm_normalises_the_last_dimension_of_any_rank():
    from zoo.layers import FeatureBatchNorm

    norm = FeatureBatchNorm(6).train()
    reference = torch.nn.BatchNorm1d(6).train()
    tokens = torch.randn(4, 5, 6)
    out, want = norm(tokens), reference(tokens.reshape(20, 6)).reshape(4, 5, 6)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    assert set(norm.state_dict()) == set(reference.state_dict())
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        norm(torch.randn(4, 6, 5))


def test_a_binarized_vision_transformer_runs_and_trains():
    # timm's ViT feeds its Linear layers (B, tokens, features): the BatchNorm before each sign is over the features
    model = zoo.binarize_(timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8), "xnor")
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model(x).sum().backward()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 10)
