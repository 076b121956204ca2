import json

import pytest
from huggingface_hub import ModelCard

from zoo.cli import main
from zoo.hub.cards import index_table, latency_text, model_card
from zoo.hub.latency import cpu_latency, read_bench, with_latency
from zoo.hub.publish import write_cards

SCHEME = {"name": "xnor", "kernel_quantizer": "scaled_sign", "input_quantizer": "bin_activ", "input_scale": True}


def _config(name, architecture, **extra):
    return {
        "format_version": 1, "name": name, "architecture": architecture, "scheme": SCHEME, "num_classes": 10,
        "in_chans": 1, "small_input": True, "input_size": [1, 8, 8],
        "sizes": {"packed_bytes": 1_600_000, "float_bytes": 44_800_000},
        "training": {"dataset": "digits", "split": "test", "top1": 0.97, "top5": 1.0}, **extra,
    }


BENCH = {
    "meta": {"device": "cpu", "hardware": "AMD EPYC 7B13, 2 cores", "torch": "2.14.1", "threads": 2, "repeats": 11},
    "end_to_end": [
        {"model": "xnor_resnet18", "baseline": "resnet18", "batch": 16, "input_size": [3, 224, 224],
         "float_ms": 764.5, "packed_ms": 338.0, "speedup": 2.3},
        {"model": "xnor_resnet18", "baseline": "resnet18", "batch": 1, "input_size": [3, 224, 224],
         "float_ms": 46.7, "packed_ms": 18.0, "speedup": 2.6, "new_field": "ignored"},
        {"model": "xnor_nobeta_resnet18", "baseline": "resnet18", "batch": 1, "input_size": [3, 224, 224],
         "float_ms": 46.7, "packed_ms": 17.0, "speedup": 2.7},
    ],
    "conv": [],
    "sizes": [],
}
LATENCY = {
    "packed_ms": 18.0, "float_ms": 46.7, "speedup": 2.6, "baseline": "resnet18", "batch": 1,
    "input_size": [3, 224, 224], "threads": 2, "hardware": "AMD EPYC 7B13, 2 cores", "torch": "2.14.1", "repeats": 11,
}
LINE = ("18.0 ms packed at batch 1, input 3x224x224, 2 threads, AMD EPYC 7B13, 2 cores, torch 2.14.1; "
        "float `resnet18` 46.7 ms (2.6x)")


def test_batch1_row_of_the_exact_architecture_with_its_conditions():
    assert cpu_latency(BENCH, "xnor_resnet18") == LATENCY  # not the batch-16 row, not xnor_nobeta_resnet18
    assert cpu_latency(BENCH, "xnor_resnet34") is None


def test_fp_card_takes_the_float_baseline_of_its_xnor_twin():
    assert cpu_latency(BENCH, "fp_resnet18") == {
        "packed_ms": 46.7, "float": True, "baseline": "resnet18", "measured_with": "xnor_resnet18", "batch": 1,
        "input_size": [3, 224, 224], "threads": 2, "hardware": "AMD EPYC 7B13, 2 cores", "torch": "2.14.1",
        "repeats": 11,
    }
    assert cpu_latency(BENCH, "fp_resnet34") is None  # no xnor_resnet34 row
    other = {**BENCH, "end_to_end": [{**BENCH["end_to_end"][1], "baseline": "resnet50"}]}
    assert cpu_latency(other, "fp_resnet18") is None  # the twin's baseline is another network
    line = latency_text(cpu_latency(BENCH, "fp_resnet18"))
    assert line == ("46.7 ms float32 at batch 1, input 3x224x224, 2 threads, AMD EPYC 7B13, 2 cores, torch 2.14.1; "
                    "timed as `resnet18`, the float baseline of `xnor_resnet18`")


def _imagenet(name, architecture, **extra):
    return {**_config(name, architecture, **extra), "in_chans": 3, "num_classes": 1000, "small_input": False,
            "input_size": [3, 224, 224]}


OWN = {"packed_ms": 0.9, "float_ms": 2.7, "speedup": 3.0, "baseline": "fp_resnet18", "batch": 1,
       "input_size": [1, 8, 8], "threads": 2, "hardware": "AMD EPYC 7B13, 2 cores", "torch": "2.14.1", "repeats": 21}


def test_the_bench_figure_is_a_cards_latency_only_where_the_bench_timed_the_cards_network():
    imagenet = _imagenet("xnor_resnet18-imagenet", "xnor_resnet18", cpu_latency={"packed_ms": 99.0})
    digits = _config("xnor_resnet18-digits", "xnor_resnet18")
    out = with_latency([imagenet, digits], BENCH)
    assert out[0]["cpu_latency"] == LATENCY and "bench_latency" not in out[0]  # 3x224x224, 1000 classes: its own
    assert "cpu_latency" not in out[1] and out[1]["bench_latency"] == LATENCY  # 1x8x8, 10 classes: not its own
    assert imagenet["cpu_latency"] == {"packed_ms": 99.0} and "bench_latency" not in digits  # inputs left alone


def test_with_latency_keeps_an_own_measurement_and_drops_one_at_another_input_size():
    measured = _config("xnor_resnet18-digits", "xnor_resnet18", cpu_latency=OWN)
    misattributed = _config("xnor_nobeta_resnet18-digits", "xnor_nobeta_resnet18", cpu_latency=LATENCY)
    for bench in (BENCH, None):
        out = with_latency([measured, misattributed], bench)
        assert out[0]["cpu_latency"] == OWN  # measured at the card's 1x8x8: kept, with or without a bench
        assert "cpu_latency" not in out[1]  # a 3x224x224 figure on a 1x8x8 card is not the card's latency
    assert with_latency([misattributed], BENCH)[0]["bench_latency"] == cpu_latency(BENCH, "xnor_nobeta_resnet18")


def test_with_latency_removes_the_bench_figures_the_bench_has_no_row_for():
    stale = _imagenet("xnor_resnet34-imagenet", "xnor_resnet34", cpu_latency={**LATENCY, "packed_ms": 40.0})
    digits = _config("xnor_resnet34-digits", "xnor_resnet34", bench_latency=LATENCY, cpu_latency=OWN)
    out = with_latency([stale, digits], BENCH)
    assert "cpu_latency" not in out[0]  # this bench has no row for it: n/a, never an older figure
    assert "bench_latency" not in out[1] and out[1]["cpu_latency"] == OWN


def test_card_and_index_show_the_cards_own_latency_and_label_the_bench_figure(tmp_path):
    measured, unmeasured = with_latency(
        [_config("xnor_resnet18-digits", "xnor_resnet18", cpu_latency=OWN), _config("xnor_resnet34-digits",
                                                                                      "xnor_resnet34")], BENCH
    )
    model_card(measured).save(tmp_path / "README.md")
    text = ModelCard.load(tmp_path / "README.md").text
    own = ("0.9 ms packed at batch 1, input 1x8x8, 2 threads, AMD EPYC 7B13, 2 cores, torch 2.14.1; "
           "float `fp_resnet18` 2.7 ms (3.0x)")
    assert f"| CPU latency | {own} |" in text
    assert f"| CPU latency at 3x224x224, 1000 classes (the architecture at ImageNet shape) | {LINE} |" in text
    assert "| CPU latency | n/a (not measured at input 1x8x8) |" in model_card(unmeasured).text
    assert "ImageNet shape) |" not in model_card(unmeasured).text  # the bench has no xnor_resnet34 row
    header, _, *rows = index_table([measured, unmeasured]).splitlines()
    assert header.endswith("| CPU latency | architecture at ImageNet shape | training time | rerun top-1 |")
    assert rows[0].startswith("| xnor_resnet18-digits |") and rows[0].endswith("| 0.9 ms | 18.0 ms at 3x224x224 | "
                                                                               "n/a | n/a |")
    assert rows[1].startswith("| xnor_resnet34-digits |") and rows[1].endswith("| n/a | n/a | n/a | n/a |")


@pytest.mark.parametrize(
    "bench, problem",
    [
        ({"end_to_end": []}, "no 'meta' object"),
        ({"meta": {"device": "cpu"}}, "no 'end_to_end' list"),
        ({"meta": {"device": "cuda"}, "end_to_end": []}, "measured on 'cuda'"),
    ],
)
def test_read_bench_rejects_what_is_not_a_cpu_bench(tmp_path, bench, problem):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    with pytest.raises(ValueError, match=problem):
        read_bench(path)


def test_zoo_cards_takes_the_bench_next_to_the_cards_or_the_one_given(tmp_path, capsys):
    cards = tmp_path / "cards"
    write_cards([_imagenet("xnor_resnet18-imagenet", "xnor_resnet18"), _config("xnor_resnet18-digits",
                                                                              "xnor_resnet18")], cards)
    (cards / "bench.json").write_text(json.dumps(BENCH))
    main(["cards", "--out", str(cards)])
    imagenet = json.loads((cards / "xnor_resnet18-imagenet" / "config.json").read_text())
    digits = json.loads((cards / "xnor_resnet18-digits" / "config.json").read_text())
    assert imagenet["cpu_latency"] == LATENCY and digits["bench_latency"] == LATENCY and "cpu_latency" not in digits
    table = capsys.readouterr().out
    assert table == (cards / "index.md").read_text().split("\n\n", 2)[2]
    assert "| 18.0 ms | 18.0 ms at 3x224x224 |" in table  # the imagenet card: its own figure, at ImageNet shape
    assert "| n/a | 18.0 ms at 3x224x224 |" in table  # the digits card: not its own latency
    assert ">18.0 ms</td>" in (cards / "index.html").read_text()
    assert LINE in (cards / "xnor_resnet18-imagenet" / "README.md").read_text()

    other = tmp_path / "other.json"
    other.write_text(json.dumps({**BENCH, "end_to_end": BENCH["end_to_end"][2:]}))
    main(["cards", "--out", str(cards), "--bench", str(other)])
    assert "cpu_latency" not in json.loads((cards / "xnor_resnet18-imagenet" / "config.json").read_text())
    assert "bench_latency" not in json.loads((cards / "xnor_resnet18-digits" / "config.json").read_text())
    with pytest.raises(SystemExit):
        main(["cards", "--out", str(cards), "--bench", str(tmp_path / "missing.json")])
