"""``zoo bench`` on tiny settings: the JSON's structure, values consistent with each other and with the files on
disk, the packed model against its reference, and the CUDA error without CUDA. Timings are never asserted."""

import json
import re

import pytest
import timm
import torch
from safetensors.torch import save_model
from zoo_kernels import int8_route, routes
from zoo_kernels.bench import float_variants
from zoo_kernels.cpu_features import cpu_class, cpu_features, has_native_bf16

import zoo
from zoo import bench
from zoo.cli import main as zoo_main


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_json(tmp_path, restore_threads, capsys):
    out = tmp_path / "bench.json"
    zoo_main(["bench", "--repeats", "1", "--warmup", "0", "--input-size", "32", "--batches", "1", "2",
              "--channels", "64", "512", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "best float" in printed and "xnor_resnet18 resnet18" in printed
    doc = json.loads(out.read_text())

    meta = doc["meta"]
    assert meta["device"] == "cpu" and meta["threads"] == 2 == torch.get_num_threads() and meta["repeats"] == 1
    assert meta["torch"] == torch.__version__.split("+")[0] and "cores" in meta["hardware"] and meta["date"]
    assert meta["cpu_class"] == cpu_class() and meta["cpu_features"] == cpu_features()
    floats = set(float_variants("cpu"))
    assert {"f32", "f32_cl"} <= floats and ("bf16_cl" in floats) == has_native_bf16()

    # conv shapes of ResNet-18 at 32x32: 64 channels at 8x8 and 512 at 1x1, batches 1 and 2
    assert [(r["batch"], r["channels"], r["size"]) for r in doc["conv"]] == [(1, 64, 8), (1, 512, 1), (2, 64, 8),
                                                                            (2, 512, 1)]
    for r in doc["conv"]:
        assert r["best_float"] in floats
        assert r["float_ms"] == min(r[f"{n}_ms"] for n in floats)  # the fastest float variant is the baseline
        assert r["speedup"] == pytest.approx(r["float_ms"] / r["xnor_ms"], rel=1e-12)
        assert r["speedup_k"] == pytest.approx(r["float_ms"] / r["xnor_k_ms"], rel=1e-12)
        assert r["speedup_a2"] == pytest.approx(r["float_ms"] / r["a2_ms"], rel=1e-12)
        assert 0 < r["xnor_min_ms"] <= r["xnor_ms"]
        assert {routes.route_of(r[f"route_{v}"]) for v in ("xnor", "xnor_k", "a2")} <= set(routes.ROUTES)
        if int8_route.int8_route_available():
            assert r["speedup_int8"] == pytest.approx(r["float_ms"] / r["int8_ms"], rel=1e-12)
            assert all(f"{v}_{route}_ms" in r for v in ("xnor", "xnor_k", "a2") for route in routes.ROUTES)

    assert [(r["model"], r["baseline"], r["batch"]) for r in doc["end_to_end"]] == [
        ("xnor_resnet18", "resnet18", 1), ("xnor_resnet18", "resnet18", 2)]
    for r in doc["end_to_end"]:
        assert r["input_size"] == [3, 32, 32] and r["best_float"] in floats
        assert r["float_ms"] == min(r[f"{n}_ms"] for n in floats)
        assert r["speedup"] == pytest.approx(r["float_ms"] / r["packed_ms"], rel=1e-12)
        # one route per binary conv call: the 19 binary convs of ResNet-18 (16 in the blocks, 3 downsamples)
        assert len(r["routes"]) == 19 and all(routes.route_of(c["route"]) in routes.ROUTES for c in r["routes"])
        assert r["routes"][0]["key"].startswith(f"conv|b1|n{r['batch']}|c64|")

    # sizes: the files the float model and the packed checkpoint really take
    (size,) = doc["sizes"]
    save_model(timm.create_model("resnet18"), str(tmp_path / "float.safetensors"))
    zoo.pack_model(zoo.create_model("xnor_resnet18")).save_pretrained(tmp_path / "packed")
    assert size["model"] == "xnor_resnet18"
    assert size["float_bytes"] == (tmp_path / "float.safetensors").stat().st_size
    assert size["packed_bytes"] == (tmp_path / "packed" / "model.safetensors").stat().st_size
    assert size["ratio"] == pytest.approx(size["float_bytes"] / size["packed_bytes"], rel=1e-12)
    assert size["ratio"] > 10


def test_packed_model_equals_its_reference():
    torch.manual_seed(0)
    float_model, binary, label = bench.build_pair("xnor_resnet18")
    assert label == "resnet18" and not float_model.training and not binary.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = binary(x), zoo.pack(binary)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert float_model(x).shape == out.shape == (2, 1000)


def test_model_names_and_baselines():
    assert bench.split_name("xnor_nobeta_resnet18") == ("xnor_nobeta", "resnet18")
    assert bench.split_name("bwn_bireal_resnet18") == ("bwn", "bireal_resnet18")
    assert bench.baseline_name("xnor_resnet34") == "fp_resnet34"
    names = bench.bench_models("*")
    assert names[0] == "xnor_resnet18" and len(names) == len(set(names))
    assert {"bwn_resnet18", "xnor_alexnet", "xnor_nobeta_resnet34"} <= set(names)
    assert all(not n.startswith("fp_") and zoo.is_model(bench.baseline_name(n)) for n in names)
    assert bench.bench_models(None) == ["xnor_resnet18"]
    with pytest.raises(ValueError, match="registered scheme"):
        bench.split_name("resnet18")


def test_cuda_without_cuda_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as info:
        bench.main(["--device", "cuda"])
    assert info.value.code == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


def test_quick_bench_and_profile(restore_threads, capsys):
    zoo_main(["bench", "--quick", "--channels", "--profile"])
    printed = capsys.readouterr().out
    assert "profile of packed xnor_resnet18 batch 1:" in printed
    assert "Self CPU" in printed and re.search(r"xnor_resnet18 +resnet18 +1 +3x64x64 ", printed)


def test_report_renders_bench_json_as_markdown(tmp_path, restore_threads, capsys):
    torch.set_num_threads(2)
    doc = bench.run(batches=(1,), repeats=1, warmup=0, input_size=32, channels=[64], sizes=False)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    zoo_main(["bench", "--report", str(path), str(path)])
    page = capsys.readouterr().out
    assert page == bench.markdown_report([doc, doc]) and page.count(f"## {doc['meta']['hardware']}") == 2
    (conv,), (e2e,) = doc["conv"], doc["end_to_end"]
    assert f"| 1 | 64x8x8 | {conv['f32_ms']:.3f} |" in page and f"| {e2e['speedup']:.2f} |" in page


def test_docs_benchmarks_is_the_report_of_its_json_files():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    files = sorted((docs / "bench").glob("*.json"))
    assert files, "docs/bench/ holds the zoo bench --json files docs/benchmarks.md is made from"
    expected = bench.markdown_report([json.loads(p.read_text()) for p in files])
    assert (docs / "benchmarks.md").read_text() == expected, "regenerate: zoo bench --report docs/bench/*.json"
