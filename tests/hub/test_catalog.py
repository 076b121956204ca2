"""zoo.hub.catalog: the rows and table of ``zoo models``, checked against the cards' own config files."""

import json
import shutil
from pathlib import Path

import pytest

from zoo.hub.catalog import bits_text, default_cards_folder, model_rows, models_table
from zoo.schemes import get_scheme

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("scheme", "bits"),
    [("fp", "32/32"), ("bwn", "1/32"), ("xnor", "1/1"), ("xnor_nobeta", "1/1"), ("w1a2", "1/2")],
)
def test_bits_are_the_schemes_weight_and_input_bits(scheme, bits):
    assert bits_text(get_scheme(scheme)) == bits


def test_the_default_cards_folder_is_the_repositorys():
    assert default_cards_folder() == ROOT / "cards"


def test_rows_take_size_and_top1_from_the_digits_card_and_see_weights(tmp_path):
    cards = tmp_path / "cards"
    for name in ("xnor_resnet18-digits", "bwn_resnet18-digits"):
        shutil.copytree(ROOT / "cards" / name, cards / name)
    (cards / "xnor_resnet18-digits" / "model.safetensors").unlink()  # a card without weights
    (cards / "bwn_resnet18-digits" / "model.safetensors").write_bytes(b"")
    rows = {r["name"]: r for r in model_rows("*_resnet18", cards) if "bireal" not in r["name"]}
    assert sorted(rows) == ["bwn_resnet18", "fp_resnet18", "w1a2_resnet18", "w1a4_resnet18", "xnor_nobeta_resnet18",
                            "xnor_resnet18"]
    xnor = json.loads((cards / "xnor_resnet18-digits" / "config.json").read_text())
    assert rows["xnor_resnet18"]["packed_bytes"] == xnor["sizes"]["packed_bytes"]
    assert rows["xnor_resnet18"]["top1"] == xnor["training"]["top1"]
    assert (rows["xnor_resnet18"]["scheme"], rows["xnor_resnet18"]["architecture"]) == ("xnor", "resnet18")
    assert rows["xnor_resnet18"]["weights"] is None and rows["bwn_resnet18"]["weights"] is not None
    assert rows["fp_resnet18"]["card"] is None and rows["fp_resnet18"]["top1"] is None

    lines = models_table(list(rows.values())).splitlines()
    cells = {line.split()[0]: line.split() for line in lines[1:]}
    assert lines[0].split() == ["model", "scheme", "architecture", "bits", "w/a", "packed", "(digits)", "top-1",
                                "(digits)", "weights"]
    assert cells["xnor_resnet18"] == ["xnor_resnet18", "xnor", "resnet18", "1/1",
                                      f"{xnor['sizes']['packed_bytes'] / 1e6:.2f}", "MB",
                                      f"{100 * xnor['training']['top1']:.2f}%", "no"]
    assert cells["bwn_resnet18"][-1] == "yes" and cells["bwn_resnet18"][3] == "1/32"
    assert cells["fp_resnet18"] == ["fp_resnet18", "fp", "resnet18", "32/32", "-", "-", "no"]


def test_a_card_that_does_not_read_is_no_card(tmp_path):
    (tmp_path / "xnor_resnet18-digits").mkdir()
    (tmp_path / "xnor_resnet18-digits" / "config.json").write_text("{not json")
    (row,) = model_rows("xnor_resnet18", tmp_path)
    assert row["card"] is None and row["top1"] is None


def test_no_match_is_no_rows(tmp_path):
    assert model_rows("resnet*", tmp_path) == []
