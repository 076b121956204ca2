"""zoo.hub.card_latency: a card's latency is its own network's, timed at the card's own input size."""

import json
from pathlib import Path

import pytest
from torch import nn

from zoo.hub import card_latency
from zoo.hub.cards import latency_text

ROOT = Path(__file__).resolve().parents[2]


def _card(name: str) -> dict:
    return json.loads((ROOT / "cards" / name / "config.json").read_text())


class _Shapes(nn.Module):
    """The packed network, recording the shape of every input it is timed on."""

    def __init__(self, net: nn.Module, shapes: list):
        super().__init__()
        self.net, self.shapes = net, shapes

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.net(x)


@pytest.mark.parametrize("name", ["xnor_resnet18-digits", "fp_resnet18-digits"])
def test_the_cards_network_is_timed_at_the_cards_input_size(name, monkeypatch):
    config = _card(name)
    shapes, built, build_packed = [], [], card_latency.build_packed

    def build(cfg):
        built.append(cfg)
        return _Shapes(build_packed(cfg), shapes)

    monkeypatch.setattr(card_latency, "build_packed", build)
    latency = card_latency.measure_latency(config, repeats=3, warmup=1)
    assert built == [config]  # the card's own architecture, classes, channels and stem
    assert shapes and set(shapes) == {(1, *config["input_size"])} == {(1, 1, 8, 8)}
    assert latency["input_size"] == [1, 8, 8] and latency["batch"] == 1 and latency["repeats"] == 3
    assert latency["packed_ms"] > 0 and latency["threads"] >= 1 and latency["torch"]
    if name.startswith("fp_"):
        assert latency["float"] is True and "float_ms" not in latency
        assert latency_text(latency).startswith(f"{latency['packed_ms']:.1f} ms float32 at batch 1, input 1x8x8,")
    else:
        assert latency["baseline"] == "fp_resnet18" and latency["float_ms"] > 0
        assert latency["speedup"] == pytest.approx(latency["float_ms"] / latency["packed_ms"])
        assert latency_text(latency).startswith(f"{latency['packed_ms']:.1f} ms packed at batch 1, input 1x8x8,")


def test_only_cards_of_zoo_trained_models_are_measured(monkeypatch):
    measured = []
    monkeypatch.setattr(card_latency, "measure_latency", lambda c, r, w: measured.append(c["name"]) or {"x": 1})
    trained, reported = _card("xnor_resnet18-digits"), _card("xnor_resnet18-imagenet")
    out = card_latency.with_measured_latency([trained, reported], repeats=3)
    assert measured == ["xnor_resnet18-digits"]
    assert out[0]["cpu_latency"] == {"x": 1} and out[1] == reported and trained == _card("xnor_resnet18-digits")
