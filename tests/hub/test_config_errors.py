"""Every hostile config.json is one CheckpointError naming the problem, raised before anything is built or loaded."""

import json
import os
import time

import huggingface_hub.constants
import pytest
import torch

import zoo
from zoo import CheckpointError
from zoo.hub import checkpoint


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = zoo.create_model("xnor_resnet18", num_classes=10, in_chans=1, small_input=True).eval()
    folder = tmp_path_factory.mktemp("ckpt") / "xnor_resnet18-digits"
    zoo.pack_model(model, training={"dataset": "digits", "top1": 0.5}).save_pretrained(folder)
    return folder


@pytest.fixture
def copy(saved, tmp_path):
    dst = tmp_path / "copy"
    dst.mkdir()
    for f in saved.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.fixture
def nothing_loaded(monkeypatch):
    """Counts what loading got to: networks built, safetensors files opened, state dicts loaded."""
    calls = {"build": 0, "open": 0, "load": 0}

    def counting(key, real):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(checkpoint, "create_model", counting("build", checkpoint.create_model))
    monkeypatch.setattr(checkpoint, "safe_open", counting("open", checkpoint.safe_open))
    monkeypatch.setattr(torch.nn.Module, "load_state_dict", counting("load", torch.nn.Module.load_state_dict))
    return calls


def _config(saved):
    return json.loads((saved / "config.json").read_text())


def _with(saved, *keys_and_value):
    """The saved config with ``config[k1][k2]... = value``, as JSON text."""
    *keys, value = keys_and_value
    config = _config(saved)
    target = config
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return json.dumps(config, allow_nan=True)


def _nested(depth):
    return "[" * depth + "]" * depth


RAW = {
    "not JSON": (b"{not json", r"config\.json: not valid JSON \(Expecting property name"),
    "empty": (b"", r"config\.json: empty file"),
    "blank": (b"  \n", r"config\.json: empty file"),
    "not UTF-8": (b'{"name": "caf\xe9"}', r"config\.json: not UTF-8 \(byte 0xe9 at offset 13\)"),
    "a JSON list": (b"[1, 2]", r"config\.json: must hold a JSON object, not a JSON list"),
    "a JSON string": (b'"config"', r"config\.json: must hold a JSON object, not a JSON str"),
    "nested 100000 deep": (_nested(100_000).encode(), r"config\.json: nested too deeply \(more than 16 levels\)"),
    "repeated key": (b'{"num_classes": 10, "num_classes": 1000}', r"config\.json: not valid JSON \(key 'num_classes' "
                     "appears twice"),
    "huge integer": (b'{"num_classes": 1' + b"0" * 5000 + b"}", r"config\.json: not valid JSON \(Exceeds the limit"),
    "number beyond float range": (b'{"training": {"notes": -1e999}}', r"config\.json: not valid JSON \(number -1e999 "
                                  r"is beyond float range"),
    "long number beyond float range": (b'{"top": 1' + b"0" * 400 + b'.5}', r"not valid JSON \(number 1000000000"
                                       r"000000000000000000000000000000\.\.\. is beyond float range"),
}

FIELDS = {
    "num_classes Infinity": (("num_classes", float("inf")), r"not valid JSON \(Infinity is not a JSON number"),
    "num_classes NaN": (("num_classes", float("nan")), r"not valid JSON \(NaN is not a JSON number"),
    "num_classes 1e30": (("num_classes", 1e30), r"num_classes must be an integer, not float 1e\+30"),
    "num_classes '10'": (("num_classes", "10"), r"num_classes must be an integer, not str '10'"),
    "num_classes 10.7": (("num_classes", 10.7), r"num_classes must be an integer, not float 10\.7"),
    "num_classes true": (("num_classes", True), r"num_classes must be an integer, not bool True"),
    "num_classes 0": (("num_classes", 0), r"num_classes must be in \[1, 1000000\], not 0"),
    "num_classes 10**7": (("num_classes", 10**7), r"num_classes must be in \[1, 1000000\], not 10000000"),
    "in_chans -1": (("in_chans", -1), r"in_chans must be in \[1, 64\], not -1"),
    "in_chans null": (("in_chans", None), r"in_chans must be an integer, not null None"),
    "in_chans 65": (("in_chans", 65), r"in_chans must be in \[1, 64\], not 65"),
    "architecture a list": (("architecture", ["xnor_resnet18"]), r"architecture must be a string, not list"),
    "architecture unknown": (("architecture", "xnor_resnet1000"), r"unknown architecture 'xnor_resnet1000'; known:"),
    "format_version true": (("format_version", True), r"unknown format_version True"),
    "scheme a string": (("scheme", "xnor"), r"scheme must be an object, not str 'xnor'"),
    "scheme unknown field": (("scheme", "trits", 2), r"bad scheme: unknown BinarizeConfig field\(s\) \['trits'\]"),
    "scheme name unknown": (("scheme", "name", "ternary"), r"bad scheme: unknown name 'ternary'; known: bwn, fp"),
    "scheme.input_scale 'yes'": (("scheme", "input_scale", "yes"), r"scheme\.input_scale must be true/false"),
    "scheme.input_bits 0.5": (("scheme", "input_bits", 0.5), r"scheme\.input_bits must be an integer, not float"),
    "small_input 'no'": (("small_input", "no"), r"small_input must be true/false, not str 'no'"),
    "input_size two entries": (("input_size", [8, 8]), r"input_size must have 3 entries, not 2"),
    "mean a string": (("mean", "0.5"), r"mean must be a list, not str '0\.5'"),
    "std zero": (("std", [0.0, 1.0, 1.0]), r"std entry 0 must be in \[1e-12, 1e\+06\], not 0\.0"),
    "sizes a list": (("sizes", [1, 2]), r"sizes must be an object, not list"),
    "packed_bytes negative": (("sizes", "packed_bytes", -5), r"sizes\.packed_bytes must be in \[0, \d+\], not -5"),
    "training.top1 2.0": (("training", "top1", 2.0), r"training\.top1 must be in \[0, 1\], not 2\.0"),
    "deeply nested value": (("training", "notes", json.loads(_nested(20))), r"nested too deeply \(more than 16"),
}


def _assert_refused(folder, message, calls):
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=message) as info:
        zoo.from_pretrained(folder)
    assert time.monotonic() - start < 5
    assert str(folder) in str(info.value)
    assert calls == {"build": 0, "open": 0, "load": 0}


@pytest.mark.parametrize("case", RAW)
def test_hostile_config_bytes(case, copy, nothing_loaded):
    data, message = RAW[case]
    (copy / "config.json").write_bytes(data)
    _assert_refused(copy, message, nothing_loaded)


@pytest.mark.parametrize("case", FIELDS)
def test_hostile_config_field(case, saved, copy, nothing_loaded):
    change, message = FIELDS[case]
    (copy / "config.json").write_text(_with(saved, *change))
    _assert_refused(copy, r"config\.json: " + message, nothing_loaded)


def test_larger_than_1_mib(saved, copy, nothing_loaded):
    (copy / "config.json").write_text(_with(saved, "notes", "x" * (1 << 20)))
    _assert_refused(copy, r"config\.json: larger than 1048576 bytes \(1 MiB\)", nothing_loaded)


def test_symlink_to_dev_zero(copy, nothing_loaded):
    (copy / "config.json").unlink()
    (copy / "config.json").symlink_to("/dev/zero")
    _assert_refused(copy, r"config\.json: not a regular file \(a device\)", nothing_loaded)


def test_fifo(copy, nothing_loaded):
    (copy / "config.json").unlink()
    os.mkfifo(copy / "config.json")
    _assert_refused(copy, r"config\.json: not a regular file \(a FIFO\)", nothing_loaded)


def test_config_is_a_folder(copy, nothing_loaded):
    (copy / "config.json").unlink()
    (copy / "config.json").mkdir()
    _assert_refused(copy, r"config\.json: not a regular file \(a folder\)", nothing_loaded)


def test_symlink_to_a_good_config_is_followed(saved, copy):
    """Hub cache snapshots are symbolic links to blobs."""
    (copy / "config.json").unlink()
    (copy / "config.json").symlink_to(saved / "config.json")
    assert zoo.from_pretrained(copy).config["num_classes"] == 10


def test_missing_config(copy, nothing_loaded):
    (copy / "config.json").unlink()
    _assert_refused(copy, r"config\.json: file not found", nothing_loaded)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"architecture": "xnor_nobeta_resnet18", "scheme": zoo.get_scheme("xnor_nobeta").to_dict()},
         r"model\.safetensors: written as architecture 'xnor_resnet18', but config\.json names 'xnor_nobeta_resnet18'"),
        ({"architecture": "bwn_resnet18", "scheme": zoo.get_scheme("bwn").to_dict()},
         r"model\.safetensors: written as architecture 'xnor_resnet18', but config\.json names 'bwn_resnet18'"),
    ],
)
def test_config_and_weights_metadata_disagree(saved, copy, nothing_loaded, change, message):
    (copy / "config.json").write_text(json.dumps({**_config(saved), **change}))
    with pytest.raises(CheckpointError, match=message):
        zoo.from_pretrained(copy)
    assert nothing_loaded["load"] == 0


def test_missing_folder(tmp_path, nothing_loaded):
    for name in (tmp_path / "nope", str(tmp_path / "nope"), "./nope", "../nope/deeper", "~/nope"):
        with pytest.raises(CheckpointError, match=r"nope(/deeper)?: no such folder"):
            zoo.from_pretrained(name)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match=r"file: not a folder"):
        zoo.from_pretrained(tmp_path / "file")
    assert nothing_loaded == {"build": 0, "open": 0, "load": 0}


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "local_files_only"])
def test_unknown_repo_id_offline_is_quick_and_named(how, tmp_path, monkeypatch):
    kwargs = {"cache_dir": tmp_path}
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    else:
        kwargs["local_files_only"] = True
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=r"^nobody/no-such-model: no such local folder or card, and config\.json "
                                              r"is not in the Hub cache while offline"):
        zoo.from_pretrained("nobody/no-such-model", **kwargs)
    assert time.monotonic() - start < 5
