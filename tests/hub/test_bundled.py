"""The weights that ship in cards/: loaded by card name with zoo.from_pretrained and by timm's pretrained=True, with
the accuracy their cards state."""

import re
import time

import pytest
import timm
import torch

import zoo
from zoo.data import DigitsDataModule
from zoo.hub.bundled import BUNDLED_LIMIT_MB, bundled_folder, default_cards_folder, recipe_for
from zoo.hub.checkpoint import WEIGHTS_NAME, read_config

CARDS = default_cards_folder()
SHIPPED = sorted(p.parent.name for p in CARDS.glob(f"*/{WEIGHTS_NAME}"))


def _digits_test_batches():
    data = DigitsDataModule(image_size=8, batch_size=512)
    data.setup("test")
    return list(data.test_dataloader())


def _correct(model, batches) -> int:
    with torch.inference_mode():
        return sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)


def test_the_zoo_ships_weights_within_its_size_limit():
    assert "xnor_resnet18-digits" in SHIPPED
    total = sum((CARDS / name / WEIGHTS_NAME).stat().st_size for name in SHIPPED)
    assert total < BUNDLED_LIMIT_MB * 1e6


@pytest.mark.parametrize("card", SHIPPED)
def test_a_shipped_card_loads_by_name_with_its_cards_accuracy(card):
    start = time.perf_counter()
    model = zoo.from_pretrained(card)
    assert time.perf_counter() - start < 10
    config = read_config(CARDS / card / "config.json")
    assert model.config["name"] == card
    batches = _digits_test_batches()
    total = sum(len(y) for _, y in batches)
    assert _correct(model, batches) == round(config["training"]["top1"] * total)


def test_timm_pretrained_builds_the_trainable_model_with_the_shipped_weights():
    packed = zoo.from_pretrained("xnor_resnet18-digits")
    model = timm.create_model("xnor_resnet18", pretrained=True).eval()
    assert (model.num_classes, model.conv1.in_channels) == (10, 1)
    expected = packed.to_trainable().state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    assert model.pretrained_cfg["input_size"] == (1, 8, 8)
    assert model.pretrained_cfg["mean"] == tuple(packed.config["mean"])
    batches = _digits_test_batches()
    assert _correct(model, batches) == _correct(packed, batches)


def test_pretrained_with_another_class_count_keeps_all_but_the_classifier():
    reference = zoo.create_model("xnor_resnet18", pretrained=True)
    model = zoo.create_model("xnor_resnet18", pretrained=True, num_classes=4)
    assert model.fc.out_features == 4
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_pretrained_feature_maps_are_those_of_the_pretrained_model():
    model = zoo.create_model("xnor_resnet18", pretrained=True).eval()
    features = zoo.create_model("xnor_resnet18", pretrained=True, features_only=True, out_indices=(1, 4)).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        maps = features(x)
        stem = model.act1(model.bn1(model.conv1(x)))
        torch.testing.assert_close(maps[0], model.layer1(stem))
        torch.testing.assert_close(maps[1], model.forward_features(x))
    assert features.pretrained_cfg["input_size"] == (1, 8, 8)


def test_pretrained_refuses_arguments_the_weights_were_not_trained_with():
    with pytest.raises(ValueError, match="in_chans=1, not 3"):
        zoo.create_model("xnor_resnet18", pretrained=True, in_chans=3)


def test_bundled_folder_finds_cards_and_nothing_outside_them(tmp_path):
    assert bundled_folder("xnor_resnet18-digits") == CARDS / "xnor_resnet18-digits"
    assert bundled_folder("no_such_model-digits") is None
    assert bundled_folder("org/xnor_resnet18-digits") is None  # a Hub repo id
    assert bundled_folder("../cards/xnor_resnet18-digits") is None
    (tmp_path / "xnor_resnet18-digits").mkdir()
    assert bundled_folder("xnor_resnet18-digits", cards=tmp_path) is None  # a folder without a config is no card


def test_cards_without_weights_raise_a_checkpoint_error_naming_the_recipe():
    start = time.perf_counter()
    with pytest.raises(zoo.CheckpointError, match=r"ships no weights.*recipes/digits/fp_resnet18\.yaml"):
        zoo.from_pretrained("fp_resnet18-digits")
    with pytest.raises(zoo.CheckpointError, match=r"ships no weights.*recipes/digits/fp_resnet18\.yaml"):
        zoo.create_model("fp_resnet18", pretrained=True)
    assert time.perf_counter() - start < 1


def test_a_name_that_is_no_folder_card_or_repo_id_fails_at_once():
    start = time.perf_counter()
    with pytest.raises(zoo.CheckpointError, match="no such folder, no such card"):
        zoo.from_pretrained("not a model name")
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("card", sorted(p.parent.name for p in CARDS.glob("*-digits/README.md")))
def test_every_digits_cards_use_lines_name_what_exists(card):
    readme = (CARDS / card / "README.md").read_text()
    loaded = re.search(r'zoo\.from_pretrained\("([^"]+)"\)', readme).group(1)
    if (CARDS / card / WEIGHTS_NAME).is_file():
        assert loaded == card
    else:
        assert loaded == f"hub/{card}"
        command = re.search(r"zoo fit --config (\S+) --publish\.enabled true", readme)
        assert command is not None and recipe_for(card) is not None
        assert (CARDS.parent / command.group(1)) == recipe_for(card)
