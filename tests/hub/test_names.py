"""Model names as folder names (zoo.hub.names): hostile names from a config.json or the publish options are refused
with a clear error, and nothing outside the target folder is deleted or written."""

import json
from pathlib import Path

import pytest
import torch

from zoo import CheckpointError
from zoo.hub.names import check_model_name, name_folder
from zoo.hub.publish import PublishOptions, collect_cards, publish, write_cards

CONFIG = {
    "format_version": 1,
    "name": "xnor_resnet18-digits",
    "architecture": "xnor_resnet18",
    "scheme": {"name": "xnor", "kernel_quantizer": "scaled_sign", "input_quantizer": "bin_activ", "input_scale": True},
    "num_classes": 10,
    "in_chans": 1,
}

VALID = ["xnor_resnet18-digits", "a", "A" * 128, "w1a2_resnet18.v2", "x..y", "9-lives_"]
HOSTILE = [
    "",
    ".",
    "..",
    "../victim",
    "../../victim",
    "..\\victim",
    "a/../../victim",
    "a/b",
    "a\\b",
    "/abs/victim",
    "victim\x00",
    "a" * 129,
    "a\u2215b",  # division slash
    "a\uff0fb",  # fullwidth solidus
    "\uff0e\uff0e",  # fullwidth full stops
    "\u2024\u2024",  # one dot leaders
    "caf\u00e9",
    ".hidden",
    "-rf",
    "_x",
    " name",
    "name\n",
    "na me",
    "~",
    "$HOME",
]


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with what it is: file contents, a folder, or a link's target."""
    tree = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            tree[key] = f"link -> {path.readlink()}"
        elif path.is_dir():
            tree[key] = "dir"
        else:
            tree[key] = path.read_text()
    return tree


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder beside the target folders, with a file that must survive every test."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    return folder


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name, tmp_path):
    assert check_model_name(name) == name
    assert name_folder(tmp_path, name) == tmp_path / name


@pytest.mark.parametrize("name", HOSTILE + [None, 5, ["a"]])
def test_hostile_names_are_refused(name):
    with pytest.raises(ValueError) as info:
        check_model_name(name, "card name")
    assert str(info.value).startswith(f"card name {name!r} is not a valid model name")


@pytest.mark.parametrize("name", HOSTILE + [None, 5])
def test_write_cards_touches_nothing_for_a_hostile_name(name, tmp_path, victim):
    out = tmp_path / "cards"
    write_cards([CONFIG], out)
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="is not a valid model name"):
        write_cards([CONFIG, {**CONFIG, "name": name}], out)  # the good card is not rewritten either
    assert _tree(tmp_path) == before
    assert (victim / "precious.txt").read_text() == "keep me"


def test_an_absolute_name_naming_the_victim_is_refused(tmp_path, victim):
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="is not a valid model name"):
        write_cards([{**CONFIG, "name": str(victim)}], tmp_path / "cards")
    assert _tree(tmp_path) == before  # not even the cards folder was created


@pytest.mark.parametrize("name", ["../victim", "/abs/victim", "..\\victim", "a\u2215b", ".."])
def test_zoo_cards_from_a_hub_with_a_hostile_config(name, tmp_path, victim):
    """``zoo cards --from HUB``: the config.json's name is checked when the configs are collected."""
    hub = tmp_path / "hub"
    (hub / "evil").mkdir(parents=True)
    (hub / "evil" / "config.json").write_text(json.dumps({**CONFIG, "name": name}))
    before = _tree(tmp_path)
    with pytest.raises(CheckpointError) as info:
        collect_cards(hub)
    message = str(info.value)
    assert message.startswith(f"{hub / 'evil' / 'config.json'}: name {name!r} is not a valid model name")
    assert _tree(tmp_path) == before


def test_a_symlink_at_the_card_folder_is_not_followed(tmp_path, victim):
    out = tmp_path / "cards"
    out.mkdir()
    (out / "evil").symlink_to(victim, target_is_directory=True)
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match=r"card name 'evil': .*evil is a symbolic link \(to .*victim\), not followed"):
        write_cards([{**CONFIG, "name": "evil"}], out)
    assert _tree(tmp_path) == before
    (out / "evil").unlink()
    (out / "index.html").symlink_to(victim / "precious.txt")
    with pytest.raises(ValueError, match=r"index.html is a symbolic link \(to .*precious.txt\), not followed"):
        write_cards([CONFIG], out)
    assert (victim / "precious.txt").read_text() == "keep me" and not (out / CONFIG["name"]).exists()


def test_a_symlinked_cards_folder_is_written_where_it_points(tmp_path):
    """The target itself may be a link (a cards folder kept elsewhere): its cards land in the linked folder."""
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "cards").symlink_to(real, target_is_directory=True)
    write_cards([CONFIG], tmp_path / "cards")
    assert json.loads((real / CONFIG["name"] / "config.json").read_text()) == CONFIG


@pytest.mark.parametrize("name", ["index.md", "index.html", "bench.json"])
def test_the_cards_folder_files_are_not_card_names(name, tmp_path):
    out = tmp_path / "cards"
    write_cards([CONFIG], out)
    (out / "bench.json").write_text("{}")
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match=f"card name '{name}' is taken by the cards folder's own {name}"):
        write_cards([{**CONFIG, "name": name}], out)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    ("option", "default"),
    [("../victim", "ok"), ("/abs/victim", "ok"), ("a/b", "ok"), ("a\x00", "ok"), (None, "../victim"), (None, ""),
     ("", "..")],  # an empty --publish.name means the default
)
def test_publish_refuses_a_hostile_name_before_writing(option, default, tmp_path, victim):
    """The name is checked before the model is packed (an Identity here: it is never used)."""
    options = PublishOptions(enabled=True, folder=str(tmp_path / "hub"), name=option)
    before = _tree(tmp_path)
    with pytest.raises(ValueError) as info:
        publish(torch.nn.Identity(), options, {"name": default})
    assert str(info.value).startswith(f"publish name {option or default!r} is not a valid model name")
    assert _tree(tmp_path) == before


def test_publish_refuses_a_symlinked_checkpoint_folder(tmp_path, victim):
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "xnor_resnet18-digits").symlink_to(victim, target_is_directory=True)
    with pytest.raises(ValueError, match="publish name 'xnor_resnet18-digits': .* is a symbolic link"):
        publish(torch.nn.Identity(), PublishOptions(enabled=True, folder=str(hub)), {"name": "xnor_resnet18-digits"})
    assert _tree(victim) == {"precious.txt": "keep me"}
