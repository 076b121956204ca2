"""Every registered zoo model has timm's model interface, checked as timm's own ``tests/test_models.py`` checks timm's
models: ``default_cfg`` and its names, ``forward_features`` / ``forward_head`` against ``num_features``,
``head_hidden_size`` and ``pool_size``, ``reset_classifier``, ``features_only`` against ``feature_info``,
``forward_intermediates`` and torch.fx tracing. Small-input models at their default 32x32 input keep it fast; the
ImageNet-size configs are checked for shapes on the meta device."""

import copy
import functools
from typing import NamedTuple

import pytest
import timm
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import zoo
from zoo.models._builder import SMALL_INPUT_SIZE, features_only

MODELS = zoo.list_models()
RESNETS = zoo.list_models("*resnet*")  # on timm's ResNet (Bi-Real-Net too): forward_intermediates as timm's
CFG_KEYS = ("architecture", "input_size", "mean", "std", "num_classes", "first_conv", "classifier", "pool_size",
            "crop_pct", "interpolation")


class Reference(NamedTuple):
    model: nn.Module  # the small-input model, 10 classes, eval mode; tests change copies of it
    x: torch.Tensor  # one image at the model's default_cfg input_size
    out: torch.Tensor  # model(x)
    features: torch.Tensor  # model.forward_features(x)
    maps: list[torch.Tensor]  # the outputs of the modules that model.feature_info names, in model(x)


@functools.cache
def _reference(name: str) -> Reference:
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=10, small_input=True).eval()
    x = torch.randn(1, *model.default_cfg["input_size"])
    seen = {}
    modules = [info["module"] for info in model.feature_info]
    hooks = [model.get_submodule(m).register_forward_hook(lambda _, i, o, m=m: seen.__setitem__(m, o.clone()))
             for m in modules]
    with torch.no_grad():
        out = model(x)
        for h in hooks:
            h.remove()
        features = model.forward_features(x)
    return Reference(model, x, out, features, [seen[m] for m in modules])


@pytest.fixture(autouse=True, scope="module")
def _free_references():
    yield
    _reference.cache_clear()


def _model(name: str) -> nn.Module:
    return copy.deepcopy(_reference(name).model)


@pytest.mark.parametrize("name", MODELS)
def test_default_cfg_is_timms(name):
    model = _reference(name).model
    cfg = model.default_cfg
    assert cfg is model.pretrained_cfg and all(key in cfg for key in CFG_KEYS)
    assert cfg["architecture"] == name and cfg["num_classes"] == model.num_classes == 10
    assert cfg["input_size"] == (3, SMALL_INPUT_SIZE, SMALL_INPUT_SIZE) and cfg["small_input"]
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state


@pytest.mark.parametrize("name", MODELS)
def test_forward_features_and_head(name):
    ref = _reference(name)
    model = _model(name)
    assert ref.features.shape == (1, model.num_features, *model.default_cfg["pool_size"])
    assert torch.equal(ref.features, ref.maps[-1])  # the last feature map is forward_features'
    assert ref.out.shape == (1, 10) and torch.isfinite(ref.out).all()
    with torch.no_grad():
        assert torch.equal(model.forward_head(ref.features), ref.out)
        pre_logits = model.forward_head(ref.features, pre_logits=True)
        assert pre_logits.shape == (1, model.head_hidden_size)

        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model.forward_head(ref.features), pre_logits)
        model.reset_classifier(5)
        assert model.num_classes == 5 and model.forward_head(ref.features).shape == (1, 5)
        assert model.fc.in_features == model.head_hidden_size
        if isinstance(model, zoo.models.alexnet.XnorAlexNet):  # fc6 reads a fixed pool: no global pool to drop
            with pytest.raises(ValueError, match="no global pool"):
                model.reset_classifier(0, "")
        else:
            model.reset_classifier(0, "")
            assert torch.equal(model.forward_head(ref.features), ref.features)


@pytest.mark.parametrize("name", MODELS)
def test_features_only_matches_feature_info_and_the_models_own_maps(name):
    ref = _reference(name)
    indices = (1, 2, 4)
    features = zoo.create_model(name, small_input=True, features_only=True, out_indices=indices).eval()
    # the extractor holds the model's layers up to the last map, and not the head (AlexNet's: fc6, fc7)
    missing, unexpected = features.load_state_dict(ref.model.state_dict(), strict=False)
    assert not missing and {k.split(".")[0] for k in unexpected} in ({"fc"}, {"head", "fc"})
    assert "classifier" not in features.pretrained_cfg and features.default_cfg is features.pretrained_cfg
    info = [ref.model.feature_info[i] for i in indices]
    assert features.feature_info.channels() == [i["num_chs"] for i in info]
    assert features.feature_info.reduction() == [i["reduction"] for i in info]
    assert len(ref.model.feature_info) == 5  # timm's default out_indices (0, 1, 2, 3, 4)
    with torch.no_grad():
        maps = features(ref.x)
    for m, i, index in zip(maps, info, indices, strict=True):
        side = SMALL_INPUT_SIZE // i["reduction"]
        assert m.shape == (1, i["num_chs"], side, side)
        assert torch.equal(m, ref.maps[index])


@pytest.mark.parametrize("name", MODELS)
def test_imagenet_size_cfg_pool_size_and_feature_reductions(name):
    with torch.device("meta"):
        model = zoo.create_model(name).eval()
        cfg = model.default_cfg
        assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000 and "small_input" not in cfg
        x = torch.empty(1, *cfg["input_size"])
        assert model.forward_features(x).shape == (1, model.num_features, *cfg["pool_size"])
        features = features_only(model)
        for m, r in zip(features(x), features.feature_info.reduction(), strict=True):
            assert all(abs(side - 224 / r) <= 1 for side in m.shape[2:])


@pytest.mark.parametrize("name", ["xnor_resnet18", "xnor_alexnet", "xnor_googlenet", "xnor_bireal_resnet18"])
def test_timms_other_feature_extractors(name):
    ref = _reference(name)
    for feature_cls in ("dict", "hook", "fx"):  # fx: timm's FeatureGraphNet, on timm's torch.fx helpers
        features = features_only(copy.deepcopy(ref.model), feature_cls=feature_cls).eval()
        with torch.no_grad():
            maps = features(ref.x)
        maps = list(maps.values()) if isinstance(maps, dict) else maps
        assert len(maps) == 5 and all(torch.equal(m, w) for m, w in zip(maps, ref.maps, strict=True)), feature_cls


def test_unknown_feature_class_is_named():
    with pytest.raises(KeyError, match="unknown feature class 'lists' .*did you mean list"):
        zoo.create_model("xnor_resnet18", small_input=True, features_only=True, feature_cls="lists")


@pytest.mark.parametrize("name", RESNETS)
def test_forward_intermediates(name):
    ref = _reference(name)
    with torch.no_grad():
        final, maps = _model(name).forward_intermediates(ref.x)
    assert torch.equal(final, ref.features) and all(torch.equal(m, w) for m, w in zip(maps, ref.maps, strict=True))
    getter = features_only(_model(name), out_indices=(2, 3), feature_cls="getter")  # prunes layer4 and the head
    assert len(getter.model.layer4) == 0 and isinstance(getter.model.fc, nn.Identity)
    with torch.no_grad():
        assert all(torch.equal(m, w) for m, w in zip(getter(ref.x), ref.maps[2:4], strict=True))


@pytest.mark.parametrize("name", MODELS)
def test_fx_traced_model_equals_the_model(name):
    ref = _reference(name)
    traced = create_feature_extractor(_model(name), return_nodes={"fc": "out"})
    with torch.no_grad():
        assert torch.equal(traced(ref.x)["out"], ref.out)


@pytest.mark.parametrize("name", ["xnor_resnet18", "w1a2_resnet18", "bwn_alexnet", "xnor_alexnet", "xnor_googlenet",
                                  "xnor_bireal_resnet18"])
def test_fx_traced_model_trains_as_the_model(name):
    # the straight-through gradients of the binary layers stay in the traced graph
    model = _model(name).train()
    traced = create_feature_extractor(model, return_nodes={"fc": "out"}).train()
    x = torch.randn(2, 3, 16, 16)

    def gradients(net: nn.Module) -> dict[str, torch.Tensor]:
        net.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        out = net(x)
        (out if isinstance(out, torch.Tensor) else out["out"]).square().sum().backward()
        return {n: p.grad for n, p in net.named_parameters()}

    eager, fx = gradients(model), gradients(traced)
    assert eager.keys() == fx.keys() and all(g is not None for g in eager.values())
    assert all(torch.equal(eager[n], fx[n]) for n in eager)


def test_timm_sees_the_zoo_models():
    assert set(MODELS) <= set(timm.list_models())
    features = timm.create_model("xnor_resnet18", small_input=True, features_only=True, out_indices=(3, 4))
    assert features.feature_info.channels() == [256, 512] and features.feature_info.reduction() == [4, 8]
