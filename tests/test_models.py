import pytest
import timm
import torch
from torch import nn

import zoo
from zoo.layers import BinaryConv2d, BinaryLinear

MODELS = zoo.list_models()


def test_registry_lists_the_paper_models():
    for arch in ("alexnet", "resnet18", "resnet34", "googlenet", "bireal_resnet18"):
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


def _arch(model: nn.Module) -> str:
    cfg = model.pretrained_cfg
    return cfg["architecture"][len(cfg["scheme"]) + 1:]


@pytest.mark.parametrize("name", MODELS)
def test_converted_layer_counts(name):
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True)
    cfg = model.pretrained_cfg
    reference = zoo.create_model(f"fp_{_arch(model)}", num_classes=10, in_chans=1, small_input=True)
    kept = zoo.full_precision_layer_names(reference)
    assert {cfg["first_conv"], cfg["classifier"]} <= kept
    n_layers = sum(
        type(m) in (nn.Conv2d, nn.Linear) and not any(n == k or n.startswith(k + ".") for k in kept)
        for n, m in reference.named_modules()
    )
    binary = [m for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))]
    assert n_layers > 0 and len(binary) == (0 if cfg["scheme"] == "fp" else n_layers)
    for name_kept in kept:
        assert not any(isinstance(m, (BinaryConv2d, BinaryLinear)) for m in model.get_submodule(name_kept).modules())
    first_conv, classifier = model.get_submodule(cfg["first_conv"]), model.get_submodule(cfg["classifier"])
    assert type(first_conv) is nn.Conv2d and type(classifier) is nn.Linear
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
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


def test_pretrained_flag_loads_the_shipped_digits_weights():
    model = zoo.create_model("xnor_resnet18", pretrained=True)
    assert (model.num_classes, model.pretrained_cfg["input_size"], model.pretrained_cfg["tag"]) == (10, (1, 8, 8),
                                                                                                   "digits")


def test_binary_gradient_model_option():
    model = zoo.create_model("xnor_resnet18", binary_gradient=True)
    assert model.binarize_config.binary_gradient


def test_bireal_has_a_real_valued_shortcut_around_every_binary_conv():
    from zoo.models.bireal import BiRealBlock

    model = zoo.create_model("xnor_bireal_resnet18", num_classes=10, in_chans=1, small_input=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, BiRealBlock)]
    assert len(blocks) == 8
    assert all(type(b.downsample[1]) is nn.Conv2d for b in blocks if b.downsample is not None)  # kept float
    block = blocks[2]  # layer2.0: stride 2, with the average-pool shortcut
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        h = block.bn1(block.conv1(x)) + block.downsample(x)
        expected = block.bn2(block.conv2(h)) + h
        torch.testing.assert_close(block(x), expected)
        # each conv sees sign(BN(x)): its output equals a float conv of the signs of the pre-sign BatchNorm's output
        conv = block.conv1.conv
        signs = torch.where(block.conv1.norm(x) >= 0, 1.0, -1.0)
        k = zoo.quantizers.xnor_input_scale(block.conv1.norm(x), conv.kernel_size, conv.stride, conv.padding,
                                            conv.dilation)
        ref = nn.functional.conv2d(signs.double(), conv.quantized_weight().double(), None, conv.stride, conv.padding)
        torch.testing.assert_close(block.conv1(x).double(), ref * k.double(), rtol=1e-5, atol=1e-5)


def test_alexnet_keeps_first_and_last_layer_float_and_binarizes_the_rest():
    model = zoo.create_model("xnor_alexnet", num_classes=10, in_chans=3, small_input=True)
    binary = sorted(n for n, m in model.named_modules() if isinstance(m, (BinaryConv2d, BinaryLinear)))
    assert binary == ["head.fc6.conv", "head.fc7.conv", "stage2.conv.conv", "stage3.conv.conv", "stage4.conv.conv",
                      "stage5.conv.conv"]
    full = zoo.create_model("xnor_alexnet", num_classes=1000)
    assert full.stem.conv.kernel_size == (11, 11) and full.head.fc6.conv.kernel_size == (6, 6)


def _leaf_sequence(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(module type, output shape) of every leaf module (binary layers counted as leaves) in the order the forward
    runs them."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, tuple(o.shape[1:]))))
             for m in model.modules() if not list(m.children()) or isinstance(m, (BinaryConv2d, BinaryLinear))]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def test_xnor_alexnet_is_alexnetxnor_lua_layer_for_layer():
    # models/alexnetxnor.lua (allenai/XNOR-Net): conv1 -> BN -> ReLU -> pool, then BN -> sign -> conv (-> pool) for
    # conv2..conv5, fc6 (6x6 conv) and fc7 (1x1 conv), then BN -> ReLU -> the float classifier; pools 3x3/2 unpadded.
    model = zoo.create_model("xnor_alexnet", num_classes=1000)
    seq = [(t, s) for t, s in _leaf_sequence(model, torch.randn(1, 3, 224, 224))
           if t not in ("BinActiv", "ScaledSign", "Dropout2d", "AdaptiveAvgPool2d", "Flatten")]
    block = lambda c_in, c_out, size: [("BatchNorm2d", (c_in, *size[1])), ("BinaryConv2d", (c_out, *size[0]))]  # noqa
    expected = [("Conv2d", (96, 55, 55)), ("BatchNorm2d", (96, 55, 55)), ("ReLU", (96, 55, 55)),
                ("MaxPool2d", (96, 27, 27)),
                *block(96, 256, ((27, 27), (27, 27))), ("MaxPool2d", (256, 13, 13)),
                *block(256, 384, ((13, 13), (13, 13))),
                *block(384, 384, ((13, 13), (13, 13))),
                *block(384, 256, ((13, 13), (13, 13))), ("MaxPool2d", (256, 6, 6)),
                *block(256, 4096, ((1, 1), (6, 6))),
                *block(4096, 4096, ((1, 1), (1, 1))),
                ("BatchNorm2d", (4096, 1, 1)), ("ReLU", (4096, 1, 1)), ("Linear", (1000,))]
    assert seq == expected
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 8 and not any(m.affine for m in norms)  # SpatialBatchNormalization(n, eps, false)


def test_float_alexnet_is_alexnet_lua_layer_for_layer():
    model = zoo.create_model("bwn_alexnet", num_classes=1000)
    seq = [(t, s) for t, s in _leaf_sequence(model, torch.randn(1, 3, 224, 224))
           if t not in ("ScaledSign", "AdaptiveAvgPool2d", "Flatten")]
    unit = lambda conv, c, size: [(conv, (c, *size)), ("BatchNorm2d", (c, *size)), ("ReLU", (c, *size))]  # noqa
    expected = [*unit("Conv2d", 96, (55, 55)), ("MaxPool2d", (96, 27, 27)),
                *unit("BinaryConv2d", 256, (27, 27)), ("MaxPool2d", (256, 13, 13)),
                *unit("BinaryConv2d", 384, (13, 13)), *unit("BinaryConv2d", 384, (13, 13)),
                *unit("BinaryConv2d", 256, (13, 13)), ("MaxPool2d", (256, 6, 6)),
                ("Dropout2d", (256, 6, 6)), *unit("BinaryConv2d", 4096, (1, 1)),
                ("Dropout2d", (4096, 1, 1)), *unit("BinaryConv2d", 4096, (1, 1)), ("Linear", (1000,))]
    assert seq == expected


def test_alexnet_block_relu_option_restores_the_relu_in_front_of_each_block():
    model = zoo.create_model("xnor_alexnet", num_classes=10, in_chans=1, small_input=True, block_relu=True)
    assert model.binarize_config.block_relu and type(model.stage3.act) is nn.ReLU
    assert type(model.stage3.conv.norm) is nn.BatchNorm2d and type(model.stage4.conv) is zoo.layers.BinaryConvBlock


@pytest.mark.parametrize("name, drop", [("fp_alexnet", 0.5), ("bwn_alexnet", 0.5), ("xnor_alexnet", 0.0),
                                        ("xnor_nobeta_alexnet", 0.0)])
def test_alexnet_drops_dropout_before_binarized_inputs_and_starts_with_a_small_classifier(name, drop):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True)
    assert model.head.drop6.p == drop and model.head.drop7.p == drop
    assert zoo.create_model(name, num_classes=10, drop_rate=0.3).head.drop7.p == 0.3  # an explicit rate wins
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.1) and not model.fc.bias.any()
    # the untrained network's cross-entropy starts near log(10), not at tens (a classifier of std 0.01)
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(32, 1, 8, 8)), torch.arange(32) % 10)
    assert loss.item() < 3.0


def test_googlenet_is_torchvisions_without_auxiliary_heads():
    model = zoo.create_model("xnor_googlenet", num_classes=10, in_chans=1, small_input=True)
    assert model.aux1 is None and model.aux2 is None
    binary = [n for n, m in model.named_modules() if isinstance(m, BinaryConv2d)]
    assert len(binary) == 56 and "conv1.conv" not in binary  # every conv of the 9 inceptions (6 each) and conv2/3


def test_googlenet_relus_stay_only_where_a_float_layer_reads_them():
    from zoo.models.googlenet import ZooBasicConv2d

    ends = {"conv1", "inception5b.branch1", "inception5b.branch2.1", "inception5b.branch3.1", "inception5b.branch4.1"}
    for name, relus in (("xnor_googlenet", ends), ("bwn_googlenet", None)):
        model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True)
        units = {n: type(m.act) for n, m in model.named_modules() if isinstance(m, ZooBasicConv2d)}
        assert len(units) == 57
        assert {n for n, act in units.items() if act is nn.ReLU} == (relus or set(units))
    kept = zoo.create_model("xnor_googlenet", num_classes=10, in_chans=1, small_input=True, block_relu=True)
    assert all(type(m.act) is nn.ReLU for m in kept.modules() if isinstance(m, ZooBasicConv2d))


def test_resnet_float_downsample_option():
    model = zoo.create_model("xnor_resnet18", num_classes=10, in_chans=1, small_input=True, float_downsample=True)
    for stage in (2, 3, 4):
        ds = model.get_submodule(f"layer{stage}.0.downsample")
        assert type(ds[0]) is nn.Conv2d and type(ds[1]) is nn.BatchNorm2d
    default = zoo.create_model("xnor_resnet18", num_classes=10, in_chans=1, small_input=True)
    assert type(default.layer2[0].downsample[0]) is zoo.layers.BinaryConvBlock
    assert type(default.layer1[0].act1) is nn.Identity
    relu = zoo.create_model("xnor_resnet18", num_classes=10, in_chans=1, small_input=True, block_relu=True)
    assert type(relu.layer1[0].act1) is nn.ReLU


@pytest.mark.parametrize("name, affine", [("xnor_alexnet", False), ("xnor_resnet18", True), ("xnor_googlenet", True)])
def test_norm_before_the_sign_is_affine_as_documented(name, affine):
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True)
    blocks = [m for m in model.modules() if isinstance(m, zoo.layers.BinaryConvBlock)]
    assert blocks and all(b.norm.affine is affine for b in blocks)
    assert model.binarize_config.norm_affine is affine
    other = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True, norm_affine=not affine)
    assert all(b.norm.affine is not affine for b in other.modules() if isinstance(b, zoo.layers.BinaryConvBlock))


def test_bireal_refuses_timm_options_its_block_would_ignore():
    with pytest.raises(ValueError, match="BiRealBlock does not support .*drop_path"):
        zoo.create_model("xnor_bireal_resnet18", drop_path_rate=0.1)
