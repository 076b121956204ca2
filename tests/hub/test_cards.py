import json

from huggingface_hub import ModelCard

from zoo.hub.cards import card_row, index_table, model_card
from zoo.hub.publish import collect_cards, write_cards

CONFIG = {
    "format_version": 1,
    "name": "xnor_resnet18-digits",
    "architecture": "xnor_resnet18",
    "scheme": {"name": "xnor", "kernel_quantizer": "scaled_sign", "input_quantizer": "bin_activ", "input_scale": True},
    "num_classes": 10,
    "in_chans": 1,
    "small_input": True,
    "input_size": [1, 8, 8],
    "mean": [0.306],
    "std": [0.3763],
    "sizes": {"packed_bytes": 1_600_000, "float_bytes": 44_800_000},
    "training": {
        "dataset": "digits",
        "split": "test",
        "top1": 0.9722,
        "top5": 0.9972,
        "fit_seconds": 271.4,
        "hardware": "AMD EPYC, 2 cores",
        "recipe": "model:\n  model_name: xnor_resnet18\n",
    },
}


def test_card_has_model_index_and_figures(tmp_path):
    card = model_card(CONFIG)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {r.metric_name: r for r in loaded.data.eval_results}
    assert results["top-1 accuracy"].metric_value == 97.22 and results["top-5 accuracy"].metric_value == 99.72
    assert results["top-1 accuracy"].dataset_type == "digits" and results["top-1 accuracy"].dataset_split == "test"
    assert loaded.data.library_name == "xnor-zoo"
    text = loaded.text
    assert "1.600 MB" in text and "44.800 MB" in text and "28.0x" in text
    assert "271 s" in text and "AMD EPYC, 2 cores" in text and "model_name: xnor_resnet18" in text
    assert "arxiv.org/abs/1603.05279" in text and "rastegari2016xnor" in text


def test_card_row_and_index_sorted_by_accuracy():
    worse = {**CONFIG, "name": "bwn", "training": {**CONFIG["training"], "top1": 0.5}}
    row = card_row(CONFIG)
    assert row["compression"] == 28.0 and row["scheme"] == "xnor"
    table = index_table([worse, CONFIG]).splitlines()
    assert table[2].startswith("| xnor_resnet18-digits |") and table[3].startswith("| bwn |")
    assert "97.22%" in table[2] and "50.00%" in table[3]


def test_write_and_collect_cards(tmp_path):
    table = write_cards([CONFIG], tmp_path / "cards")
    assert (tmp_path / "cards" / "xnor_resnet18-digits" / "README.md").is_file()
    assert json.loads((tmp_path / "cards" / "xnor_resnet18-digits" / "config.json").read_text()) == CONFIG
    assert table in (tmp_path / "cards" / "index.md").read_text()
    assert collect_cards(tmp_path / "cards") == [CONFIG]


def test_the_committed_cards_are_their_own_regeneration(tmp_path, capsys):
    """cards/ is what `zoo cards` makes of its configs and bench.json; no card shows a latency at another input."""
    import shutil
    from pathlib import Path

    from zoo.cli import main

    committed = Path(__file__).resolve().parents[2] / "cards"
    shutil.copytree(committed, tmp_path / "cards")
    main(["cards", "--out", str(tmp_path / "cards")])
    capsys.readouterr()
    files = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "cards") for p in (tmp_path / "cards").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "cards" / name).read_bytes() == (committed / name).read_bytes(), name
    for config in collect_cards(committed):
        latency = config.get("cpu_latency")
        assert latency is None or latency["input_size"] == config["input_size"], config["name"]
        if config.get("bench_latency"):
            assert config["bench_latency"]["input_size"] != config["input_size"]
            assert "(the architecture at ImageNet shape) |" in (committed / config["name"] / "README.md").read_text()
