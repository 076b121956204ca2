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


def test_with_latency_sets_replaces_or_removes_and_leaves_its_inputs_alone():
    fresh = _config("xnor_resnet18-digits", "xnor_resnet18", cpu_latency={"packed_ms": 99.0})
    stale = _config("xnor_resnet34-digits", "xnor_resnet34", cpu_latency={"packed_ms": 40.0})
    out = with_latency([fresh, stale], BENCH)
    assert out[0]["cpu_latency"] == LATENCY
    assert "cpu_latency" not in out[1]  # this bench has no row for it: n/a, never an older figure
    assert fresh["cpu_latency"] == {"packed_ms": 99.0} and stale["cpu_latency"] == {"packed_ms": 40.0}


def test_card_and_index_show_the_latency(tmp_path):
    with_row, without = with_latency(
        [_config("xnor_resnet18-digits", "xnor_resnet18"), _config("xnor_resnet34-digits", "xnor_resnet34")], BENCH
    )
    model_card(with_row).save(tmp_path / "README.md")
    assert f"| CPU latency | {LINE} |" in ModelCard.load(tmp_path / "README.md").text
    assert "| CPU latency | n/a |" in model_card(without).text
    rows = index_table([with_row, without]).splitlines()[2:]
    assert rows[0].startswith("| xnor_resnet18-digits |") and rows[0].endswith("| 18.0 ms | n/a | n/a |")
    assert rows[1].startswith("| xnor_resnet34-digits |") and rows[1].endswith("| n/a | n/a |")


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
    write_cards([_config("xnor_resnet18-digits", "xnor_resnet18")], cards)
    (cards / "bench.json").write_text(json.dumps(BENCH))
    main(["cards", "--out", str(cards)])
    config = json.loads((cards / "xnor_resnet18-digits" / "config.json").read_text())
    assert config["cpu_latency"] == LATENCY
    assert "| 18.0 ms |" in capsys.readouterr().out and "| 18.0 ms |" in (cards / "index.md").read_text()
    assert ">18.0 ms</td>" in (cards / "index.html").read_text()
    assert LINE in (cards / "xnor_resnet18-digits" / "README.md").read_text()

    other = tmp_path / "other.json"
    other.write_text(json.dumps({**BENCH, "end_to_end": BENCH["end_to_end"][2:]}))
    main(["cards", "--out", str(cards), "--bench", str(other)])
    assert "cpu_latency" not in json.loads((cards / "xnor_resnet18-digits" / "config.json").read_text())
    with pytest.raises(SystemExit):
        main(["cards", "--out", str(cards), "--bench", str(tmp_path / "missing.json")])
