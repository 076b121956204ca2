from huggingface_hub import ModelCard

import zoo.hub.paper_results as paper_results
from zoo.cli import main
from zoo.hub.cards import MEASURED, REPORTED, card_row, index_table, model_card
from zoo.hub.leaderboard import leaderboard_html
from zoo.hub.paper_results import PaperResult, paper_card_config, paper_result
from zoo.hub.publish import collect_cards

LABEL = "reported in the paper, not reproduced here"


def test_paper_results_name_zoo_architectures_and_the_paper_table():
    assert paper_result("xnor_resnet18") == PaperResult("xnor_resnet18", "ResNet-18", "XNOR-Net", 0.512, 0.732,
                                                        "Table 2")
    assert paper_result("bwn_alexnet").top1 == 0.568 and paper_result("xnor_alexnet").top5 == 0.692
    assert paper_result("xnor_googlenet") is None  # the paper gives no XNOR-Net GoogLenet figure
    assert paper_result("xnor_nobeta_resnet18") is None
    for result in paper_results.PAPER_RESULTS:
        assert result.architecture.split("_")[0] == {"full precision": "fp", "Binary-Weight-Network": "bwn",
                                                     "XNOR-Net": "xnor"}[result.method]


def test_imagenet_card_measures_the_packed_size_and_labels_the_paper_accuracy(tmp_path):
    config = paper_card_config(paper_result("xnor_resnet18"))
    assert config["name"] == "xnor_resnet18-imagenet" and config["num_classes"] == 1000
    assert config["input_size"] == [3, 224, 224] and "training" not in config
    # measured: binary convs at 1 bit per weight, float stem, classifier (512 x 1000 + bias) and BatchNorms
    assert 3_500_000 < config["sizes"]["packed_bytes"] < 3_800_000
    assert 46_000_000 < config["sizes"]["float_bytes"] < 47_500_000
    row = card_row(config)
    assert (row["top1"], row["top5"], row["dataset"], row["split"]) == (0.512, 0.732, "imagenet", "validation")
    assert row["accuracy_source"] == REPORTED and row["fit_seconds"] is None

    model_card(config).save(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results is None  # the model-index is for our own evaluations only
    assert f"| top-1 | 51.20%, {LABEL} (Rastegari et al. 2016, Table 2: ResNet-18, XNOR-Net) |" in card.text
    assert "No trained weights come with this card" in card.text and "zoo.from_pretrained" not in card.text
    assert 'zoo.create_model("xnor_resnet18", num_classes=1000)' in card.text

    measured = {**config, "name": "mine", "training": {"dataset": "imagenet", "top1": 0.5, "top5": 0.7}}
    assert card_row(measured)["accuracy_source"] == MEASURED
    assert [r.metric_value for r in model_card(measured).data.eval_results] == [50.0, 70.0]
    table = index_table([config, measured])
    assert f"| 51.20% | 73.20% | {LABEL} |" in table and "| 50.00% | 70.00% | measured here |" in table
    html = leaderboard_html([config])
    assert f'<td class="source" data-value="{LABEL}">{LABEL}</td>' in html and '<tr class="reported">' in html


def test_zoo_cards_imagenet_adds_the_registered_architectures(tmp_path, monkeypatch, capsys):
    results = (paper_result("bwn_resnet18"), PaperResult("xnor_vgg7", "VGG", "XNOR-Net", 0.1, 0.2, "Table 9"))
    monkeypatch.setattr(paper_results, "PAPER_RESULTS", results)
    main(["cards", "--out", str(tmp_path / "cards"), "--imagenet"])
    out = capsys.readouterr()
    assert "no xnor_vgg7 card: the zoo does not register xnor_vgg7" in out.err
    assert f"| bwn_resnet18-imagenet | bwn | imagenet | 60.80% | 83.00% | {LABEL} |" in out.out
    assert [c["name"] for c in collect_cards(tmp_path / "cards")] == ["bwn_resnet18-imagenet"]
    assert not (tmp_path / "cards" / "bwn_resnet18-imagenet" / "model.safetensors").exists()
