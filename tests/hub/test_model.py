"""zoo.from_pretrained's answers for names that lead nowhere: one CheckpointError within a second, naming what was
looked for and where; a repo already in the Hub cache still loads while the Hub is unreachable."""

import socket
import time

import huggingface_hub
import pytest
import torch

import zoo
from zoo.hub import CheckpointError


@pytest.fixture
def hub_unreachable(monkeypatch):
    probe = socket.create_server(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()  # connections there are refused
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    return endpoint


@pytest.mark.parametrize("name", ["no_such_model-digits", "nobody/no-such-model"])
def test_a_repo_id_while_the_hub_is_unreachable(name, hub_unreachable, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        zoo.from_pretrained(name, cache_dir=tmp_path / "cache")
    assert time.monotonic() - start < 1.0
    port = hub_unreachable.rsplit(":", 1)[1]
    assert str(info.value) == (f"{name}: no such local folder or card, the Hub at {hub_unreachable} is unreachable "
                               f"(127.0.0.1:{port}: Connection refused), and config.json is not in the Hub cache")


@pytest.mark.parametrize("name", ["no/such/folder", "./xnor_resnet18-digits", "cards/", "a b", "--help"])
def test_a_name_that_cannot_be_a_repo_id(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=f"^{name}: no such folder".replace(".", r"\.")):
        zoo.from_pretrained(name)
    assert time.monotonic() - start < 1.0


def test_a_cached_repo_loads_while_the_hub_is_unreachable(hub_server, tmp_path, monkeypatch):
    model = zoo.create_model("xnor_resnet18", num_classes=10, in_chans=1, small_input=True).eval()
    packed = zoo.pack_model(model)
    packed.push_to_hub("zoo-tests/cached-xnor", token="hf_dummy")
    cache = tmp_path / "cache"
    zoo.from_pretrained("zoo-tests/cached-xnor", cache_dir=cache)  # fills the cache
    probe = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{probe.getsockname()[1]}")
    probe.close()
    start = time.monotonic()
    loaded = zoo.from_pretrained("zoo-tests/cached-xnor", cache_dir=cache)
    assert time.monotonic() - start < 5.0
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), packed(x))
