"""Packed checkpoints of timm models converted with ``zoo.binarize_``: ``pack_model`` packs them, ``config.json``
records the timm architecture and the conversion, and ``from_pretrained`` rebuilds the same network."""

import json

import pytest
import timm
import torch
from torch import nn

import zoo
from zoo.hub.checkpoint import WEIGHTS_NAME
from zoo.packing import PackedBinaryConv2d, PackedBinaryLinear


def _converted(arch: str, scheme: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = zoo.binarize_(timm.create_model(arch, num_classes=7, **kwargs), scheme)
    with torch.no_grad():
        model.train()(torch.randn(4, kwargs.get("in_chans", 3), 32, 32))  # non-trivial BatchNorm statistics
    return model.eval()


@pytest.mark.parametrize(("arch", "scheme"), [
    ("resnet50", "xnor"), ("resnet50", "bwn"), ("mobilenetv3_small_100", "xnor"), ("efficientnet_b0", "xnor"),
    ("convnext_atto", "xnor"),
])
def test_a_converted_timm_model_round_trips_packed(arch, scheme, tmp_path):
    model = _converted(arch, scheme)
    zoo.pack_model(model).save_pretrained(tmp_path / arch)
    config = json.loads((tmp_path / arch / "config.json").read_text())
    assert (config["architecture"], config["converted"], config["scheme"]["name"]) == (
        arch, {"library": "timm", "keep": []}, scheme)
    loaded = zoo.from_pretrained(tmp_path / arch)
    packed = [m for m in loaded.modules() if isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear))]
    binary = [m for m in model.modules() if isinstance(m, (zoo.layers.BinaryConv2d, zoo.layers.BinaryLinear))]
    assert len(packed) == len(binary) > 0  # every binary layer stored at 1 bit per weight
    float_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert (tmp_path / arch / WEIGHTS_NAME).stat().st_size < float_bytes / 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_converted_models_record_kept_layers_and_in_chans(tmp_path):
    torch.manual_seed(0)
    model = zoo.binarize_(timm.create_model("resnet18", num_classes=3, in_chans=1), "xnor", keep=["layer4.1.conv2"])
    model.eval()
    zoo.pack_model(model).save_pretrained(tmp_path / "m")
    loaded = zoo.from_pretrained(tmp_path / "m")
    assert loaded.config["converted"]["keep"] == ["layer4.1.conv2"]
    assert (loaded.config["in_chans"], loaded.config["input_size"][0]) == (1, 1)
    assert type(loaded.net.layer4[1].conv2) is nn.Conv2d  # kept float, as converted
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_model_changed_after_conversion_is_refused_before_anything_is_written(tmp_path):
    model = zoo.binarize_(timm.create_model("resnet18", num_classes=7), "bwn")
    model.fc = nn.Linear(512, 3)  # the classifier swapped: timm.create_model(num_classes=7) would not rebuild it
    with pytest.raises(ValueError, match=r"resnet18.*converted again does not give this model's tensors.*fc\."):
        zoo.pack_model(model)


def test_a_model_timm_does_not_know_is_refused():
    model = zoo.binarize_(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(2)),
                          "bwn")
    with pytest.raises(ValueError, match="timm models converted with zoo.binarize_"):
        zoo.pack_model(model)


@pytest.mark.parametrize(("converted", "message"), [
    ({"library": "torchvision", "keep": []}, "converted.library must be 'timm'"),
    ({"library": "timm", "keep": "fc"}, "converted.keep must be a list"),
    ({"library": "timm", "keep": [], "extra": 1}, r"converted has unknown keys \['extra'\]"),
])
def test_bad_conversion_records_are_checkpoint_errors(converted, message, tmp_path):
    model = _converted("resnet18", "bwn")
    zoo.pack_model(model).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["converted"] = converted
    path.write_text(json.dumps(config))
    with pytest.raises(zoo.CheckpointError, match=message):
        zoo.from_pretrained(tmp_path / "m")


def test_a_converted_record_naming_no_timm_model_is_a_checkpoint_error(tmp_path):
    zoo.pack_model(_converted("resnet18", "bwn")).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["architecture"] = "resnet_nonexistent"
    path.write_text(json.dumps(config))
    with pytest.raises(zoo.CheckpointError, match="'resnet_nonexistent' is not a timm model"):
        zoo.from_pretrained(tmp_path / "m")
