"""Packed checkpoint folders: round trip, sizes, and every kind of bad file raising one clear error."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.hub import CheckpointError, load_checkpoint
from zoo.layers import BinaryConv2d
from zoo.packing import PackedBinaryConv2d


@pytest.fixture(scope="module")
def saved(trained_xnor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "xnor_resnet18-digits"
    zoo.pack_model(trained_xnor, training={"dataset": "digits", "top1": 0.5, "top5": 0.9}).save_pretrained(folder)
    return folder


def _copy(saved, tmp_path):
    dst = tmp_path / "copy"
    dst.mkdir(parents=True)
    for f in saved.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _header(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_header(path, header, data):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_folder_layout_and_metadata(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    header, _ = _header(saved / "model.safetensors")
    meta = header["__metadata__"]
    assert meta["zoo_format_version"] == "1" and meta["packing"] == zoo.hub.PACKING and meta["scheme"] == "xnor"
    config = json.loads((saved / "config.json").read_text())
    assert config["architecture"] == "xnor_resnet18" and config["scheme"]["name"] == "xnor"
    assert config["num_classes"] == 10 and config["in_chans"] == 1 and config["format_version"] == 1
    assert config["sizes"]["packed_bytes"] == (saved / "model.safetensors").stat().st_size
    assert b"\x80\x04" not in (saved / "model.safetensors").read_bytes()[:16]  # no pickle protocol header


def test_round_trip_is_bit_identical_with_same_predictions(saved, trained_xnor, digits_batch):
    images, _ = digits_batch
    model = zoo.from_pretrained(saved)
    original = zoo.pack(trained_xnor).state_dict()
    loaded = model.net.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    with torch.no_grad():
        ref, out = trained_xnor(images), model(images)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert torch.equal(out.argmax(1), ref.argmax(1))
    assert not model.training


def test_trainable_again_after_loading(saved, trained_xnor):
    trainable = zoo.from_pretrained(saved).to_trainable()
    a = trained_xnor.get_submodule("layer3.1.conv1.conv")
    b = trainable.get_submodule("layer3.1.conv1.conv")
    assert type(b) is BinaryConv2d and torch.equal(a.quantized_weight(), b.quantized_weight())


def test_imagenet_xnor_resnet18_is_one_tenth_of_float_and_one_bit_per_weight(tmp_path):
    model = zoo.create_model("xnor_resnet18").eval()
    zoo.pack_model(model).save_pretrained(tmp_path / "packed")
    float_file = tmp_path / "float.safetensors"
    save_file({k: v.contiguous() for k, v in zoo.create_model("fp_resnet18").state_dict().items()}, str(float_file))
    packed_size = (tmp_path / "packed" / "model.safetensors").stat().st_size
    assert packed_size * 10 <= float_file.stat().st_size, (packed_size, float_file.stat().st_size)
    header, _ = _header(tmp_path / "packed" / "model.safetensors")
    packed = zoo.pack(model)
    n_binary = 0
    for name, layer in packed.named_modules():
        if isinstance(layer, PackedBinaryConv2d):
            entry = header[f"{name}.weight_bits"]
            start, end = entry["data_offsets"]
            weights = layer.out_channels * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
            assert entry["dtype"] == "I32" and (end - start) * 8 == weights, name
            n_binary += 1
    assert n_binary == 19


def test_truncated_file(saved, tmp_path):
    bad = _copy(saved, tmp_path)
    raw = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupted or truncated"):
        load_checkpoint(bad)


def test_garbage_header(saved, tmp_path):
    bad = _copy(saved, tmp_path)
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[8:40] = b"{" * 32
    (bad / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(bad)


def test_header_lying_about_shape(saved, tmp_path):
    bad = _copy(saved, tmp_path)
    header, data = _header(bad / "model.safetensors")
    header["fc.weight"]["shape"] = [20, 512]
    _write_header(bad / "model.safetensors", header, data)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(bad)


def test_header_lying_about_dtype(saved, tmp_path):
    bad = _copy(saved, tmp_path)
    header, data = _header(bad / "model.safetensors")
    header["layer1.0.conv1.conv.weight_bits"]["dtype"] = "F32"  # same byte count, wrong meaning
    _write_header(bad / "model.safetensors", header, data)
    with pytest.raises(CheckpointError, match=r"'layer1\.0\.conv1\.conv\.weight_bits' is torch\.float32"):
        load_checkpoint(bad)


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_missing_or_extra_tensor(saved, tmp_path, change):
    bad = _copy(saved, tmp_path)
    tensors = zoo.from_pretrained(saved).net.state_dict()
    if change == "missing":
        del tensors["layer4.1.bn2.running_var"]
    else:
        tensors["surprise"] = torch.zeros(3)
    header, _ = _header(saved / "model.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(bad / "model.safetensors"), header["__metadata__"])
    with pytest.raises(CheckpointError, match="layer4.1.bn2.running_var" if change == "missing" else "surprise"):
        load_checkpoint(bad)


def test_unknown_format_version_in_weights_and_config(saved, tmp_path):
    bad = _copy(saved, tmp_path)
    header, data = _header(bad / "model.safetensors")
    header["__metadata__"]["zoo_format_version"] = "99"
    _write_header(bad / "model.safetensors", header, data)
    with pytest.raises(CheckpointError, match="unknown zoo_format_version '99'"):
        load_checkpoint(bad)
    bad = _copy(saved, tmp_path / "b")
    config = json.loads((bad / "config.json").read_text())
    config["format_version"] = 2
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: unknown format_version 2"):
        load_checkpoint(bad)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("architecture", "xnor_resnet1000", "unknown architecture 'xnor_resnet1000'; known: .*xnor_resnet18"),
        ("scheme", {"name": "ternary", "trits": 2}, "bad scheme"),
        ("scheme", {"name": "bwn", "kernel_quantizer": "scaled_sign"}, "does not match architecture"),
    ],
)
def test_config_naming_unknown_architecture_or_scheme(saved, tmp_path, key, value, message):
    bad = _copy(saved, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    config[key] = value
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        zoo.from_pretrained(bad)


def test_config_not_json_and_missing_files(saved, tmp_path):
    bad = _copy(saved, tmp_path)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_checkpoint(bad)
    bad = _copy(saved, tmp_path / "b")
    (bad / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file not found"):
        load_checkpoint(bad)


def test_a_loaded_model_reports_the_preprocessing_of_its_config(saved, tmp_path):
    # timm's resolve_data_config reads the loaded model's pretrained_cfg: the card's input, not ImageNet's
    import timm.data

    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(input_size=[1, 8, 8], mean=[0.306], std=[0.3763])
    (folder / "config.json").write_text(json.dumps(config))
    model = zoo.from_pretrained(folder)
    data = timm.data.resolve_data_config(model=model)
    assert data["input_size"] == (1, 8, 8) and data["mean"] == (0.306,) and data["std"] == (0.3763,)
    assert model.net.pretrained_cfg["test_input_size"] == (1, 8, 8) and model.default_cfg is model.pretrained_cfg


@pytest.mark.parametrize("options", [{"float_downsample": True}, {"block_relu": True}, {"norm_affine": False},
                                     {"binary_gradient": True}])
def test_a_checkpoint_of_a_model_with_options_loads_as_that_model(options, tmp_path):
    # the scheme's options and ResNet's float_downsample are recorded in config.json and rebuilt on load
    torch.manual_seed(0)
    model = zoo.create_model("xnor_resnet18", num_classes=10, in_chans=1, small_input=True, **options).eval()
    packed = zoo.pack_model(model)
    packed.save_pretrained(tmp_path / "ckpt")
    loaded = zoo.from_pretrained(tmp_path / "ckpt")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), packed(x))
    assert loaded.net.binarize_config == model.binarize_config
