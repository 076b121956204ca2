"""Push to and pull from a Hub (the suite's local Hub server, over real HTTP, with the real client)."""

import hashlib

import pytest
import torch

import zoo
from zoo.hub import CheckpointError


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_then_from_pretrained_into_empty_cache(trained_xnor, digits_batch, tmp_path, hub_server):
    images, _ = digits_batch
    packed = zoo.pack_model(trained_xnor, training={"dataset": "digits", "top1": 0.5})
    local = tmp_path / "local"
    packed.save_pretrained(local)
    packed.push_to_hub("zoo-tests/xnor_resnet18-digits", token="hf_dummy")
    assert hub_server.head("zoo-tests/xnor_resnet18-digits")
    cache = tmp_path / "empty-cache"
    model = zoo.from_pretrained("zoo-tests/xnor_resnet18-digits", cache_dir=cache)
    downloaded = {p.name: p for p in cache.rglob("*") if p.is_file() and p.name in ("model.safetensors", "config.json")}
    pushed = hub_server.files("zoo-tests/xnor_resnet18-digits")
    for name in ("model.safetensors", "config.json"):
        assert _sha(downloaded[name]) == hashlib.sha256(pushed[name]).hexdigest()
    assert downloaded["config.json"].read_text() == (local / "config.json").read_text()
    reference = packed.net.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in model.net.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(images).argmax(1), trained_xnor(images).argmax(1))
    assert "hf_dummy" in hub_server.tokens


def test_unknown_repo_id_is_one_clear_error(tmp_path):
    message = "nobody/no-such-model: no such local folder or card, and no such model repository"
    with pytest.raises(CheckpointError, match=message):
        zoo.from_pretrained("nobody/no-such-model", cache_dir=tmp_path)
