import copy
import json

import pytest
from huggingface_hub import ModelCard

from zoo.cli import main
from zoo.hub.cards import index_table, model_card
from zoo.hub.publish import write_cards
from zoo.hub.reproduction import recipe_differences, reproduction_record, with_reproductions

CONFIG = {
    "format_version": 1, "name": "xnor_resnet18-digits", "architecture": "xnor_resnet18",
    "scheme": {"name": "xnor", "kernel_quantizer": "scaled_sign", "input_quantizer": "bin_activ", "input_scale": True},
    "num_classes": 10, "in_chans": 1, "small_input": True, "input_size": [1, 8, 8],
    "sizes": {"packed_bytes": 1_600_000, "float_bytes": 44_800_000},
    "training": {"dataset": "digits", "split": "test", "top1": 0.9722, "top5": 0.9972, "fit_seconds": 271.4,
                 "hardware": "AMD EPYC, 2 cores",
                 "recipe": "seed_everything: 0\nmodel:\n  model_name: xnor_resnet18\n"},
}


def _rerun(top1: float, **training) -> dict:
    rerun = copy.deepcopy(CONFIG)
    rerun["training"].update(top1=top1, top5=0.99, hardware="AMD EPYC, 2 cores, torch 2.14.1 (1 threads)", **training)
    return rerun


@pytest.mark.parametrize("top1, delta, within", [(0.9722, 0.0, True), (0.9750, 0.28, True), (0.9611, -1.11, False)])
def test_record_gives_the_difference_in_points(top1, delta, within):
    record = reproduction_record(CONFIG, _rerun(top1))
    assert record["delta_points"] == pytest.approx(delta, abs=1e-6)
    assert record["within_tolerance"] is within and record["top1"] == top1


def test_exactly_half_a_point_is_within():
    assert reproduction_record(CONFIG, _rerun(0.9772))["within_tolerance"] is True
    assert reproduction_record(CONFIG, _rerun(0.9773))["within_tolerance"] is False


def test_a_run_of_another_recipe_is_refused():
    other = _rerun(0.9722, recipe="seed_everything: 0\nmodel:\n  model_name: xnor_resnet18\n  lr: 0.1\n")
    with pytest.raises(ValueError, match="did not run the card's recipe; they differ in model.lr"):
        reproduction_record(CONFIG, other)
    reseeded = _rerun(0.9722, recipe="seed_everything: 1\nmodel:\n  model_name: xnor_resnet18\n")
    with pytest.raises(ValueError, match="differ in seed_everything"):
        reproduction_record(CONFIG, reseeded)
    renamed = {**_rerun(0.9722), "name": "bwn_resnet18-digits"}
    with pytest.raises(ValueError, match="not a run of card"):
        reproduction_record(CONFIG, renamed)


def test_output_settings_and_new_null_arguments_do_not_make_another_recipe():
    card = ("# pytorch_lightning==2.6.6\nseed_everything: 0\ntrainer:\n  max_epochs: 25\n  default_root_dir: runs/a\n"
            "  logger:\n    init_args:\n      save_dir: runs/a\nmodel:\n  lr: 0.01\npublish:\n  name: a\n")
    rerun = ("seed_everything: 0\ntrainer:\n  max_epochs: 25\n  default_root_dir: runs/b\n  logger:\n    init_args:\n"
             "      save_dir: runs/b\nmodel:\n  lr: 0.01\n  regime: null\npublish:\n  name: null\n")
    assert recipe_differences(card, rerun) == []
    assert recipe_differences(card, rerun.replace("max_epochs: 25", "max_epochs: 24")) == ["trainer.max_epochs"]
    assert recipe_differences(card, rerun.replace("regime: null", "regime: [[0, 0.1, 0.0]]")) == ["model.regime"]


def test_rerun_without_a_card_is_an_error_and_cards_without_rerun_are_untouched():
    other = {**CONFIG, "name": "fp_resnet18-digits"}
    with pytest.raises(ValueError, match="reruns without a card: nope"):
        with_reproductions([CONFIG], [{**_rerun(0.97), "name": "nope"}])
    out = with_reproductions([CONFIG, other], [_rerun(0.9750)])
    assert out[0]["reproduction"]["top1"] == 0.9750 and "reproduction" not in out[1]
    assert "reproduction" not in CONFIG  # copies, the input is not modified


def test_card_and_index_show_the_rerun():
    config = with_reproductions([CONFIG], [_rerun(0.9750)])[0]
    text = model_card(config).text
    assert "| reproduced | rerun of the recipe: 97.50% top-1 (+0.28 points, within 0.5), AMD EPYC" in text
    assert "| reproduced | not rerun yet |" in model_card(CONFIG).text
    row = index_table([config]).splitlines()[2]
    assert row.endswith("| 97.50% |")


def test_cards_tool_records_reruns(tmp_path, monkeypatch):
    write_cards([CONFIG], tmp_path / "cards")
    write_cards([_rerun(0.9611)], tmp_path / "rerun")
    monkeypatch.chdir(tmp_path)
    main(["cards", "--rerun", "rerun"])
    stored = json.loads((tmp_path / "cards" / CONFIG["name"] / "config.json").read_text())
    assert stored["reproduction"]["delta_points"] == pytest.approx(-1.11)
    assert stored["reproduction"]["within_tolerance"] is False
    card = ModelCard.load(tmp_path / "cards" / CONFIG["name"] / "README.md")
    assert "outside 0.5" in card.text


def test_cards_tool_refuses_a_missing_rerun_folder(tmp_path, monkeypatch, capsys):
    write_cards([CONFIG], tmp_path / "cards")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["cards", "--rerun", "nowhere"])
    assert "--rerun nowhere: no such folder" in capsys.readouterr().err
