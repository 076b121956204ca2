"""zoo_kernels.routes: a binary conv's route, forced or chosen by measurement, remembered per CPU and torch version."""

import json
import time

import pytest
import torch
from zoo_kernels import cpu, int8_route, ops, routes
from zoo_kernels.packing import pack_weight_signs, weight_scale


@pytest.fixture
def fresh_routes(tmp_path, monkeypatch):
    """No forced route, an empty choice table and a cache file of the test's own."""
    monkeypatch.delenv("ZOO_KERNELS_ROUTE", raising=False)
    monkeypatch.setenv("ZOO_KERNELS_ROUTE_CACHE", str(tmp_path))
    routes.clear()
    monkeypatch.setitem(routes._loaded, "done", False)
    yield tmp_path
    routes.clear()


def test_batch_buckets():
    assert [routes.batch_bucket(n) for n in (0, 1, 2, 3, 4, 7, 8, 16, 31, 32)] == [0, 1, 2, 2, 4, 4, 8, 16, 16, 32]


def test_forced_route_from_the_environment_and_a_block(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS_ROUTE", "int8")
    assert routes.forced_route() == "int8"
    with routes.force_route("popcount"):
        assert routes.forced_route() == "popcount"
        with routes.force_route(None):
            assert routes.forced_route() is None
    assert routes.forced_route() == "int8"
    monkeypatch.setenv("ZOO_KERNELS_ROUTE", "fast")
    with pytest.raises(ValueError, match="ZOO_KERNELS_ROUTE='fast' is not one of popcount, int8"):
        routes.forced_route()
    with pytest.raises(ValueError, match="force_route"):
        with routes.force_route("gpu"):
            pass


def test_choice_is_the_fastest_and_is_remembered_on_disk(fresh_routes):
    calls = {"popcount": 0, "int8": 0}

    def slow():
        calls["popcount"] += 1
        time.sleep(0.02)
        return torch.zeros(1)

    def fast():
        calls["int8"] += 1
        return torch.ones(1)

    out = routes.run("k1", {"popcount": slow, "int8": fast})
    assert torch.equal(out, torch.ones(1))
    assert calls["popcount"] == 1 + routes._TIMED_CALLS  # a warm-up and the timed calls, and never run after
    table = routes.route_table()
    assert table["k1"]["route"] == "int8" and table["k1"]["ms"]["popcount"] >= 20
    routes.run("k1", {"popcount": slow, "int8": fast})
    assert calls["popcount"] == 1 + routes._TIMED_CALLS  # remembered: not timed again
    saved = json.loads(next(fresh_routes.glob("routes-*.json")).read_text())
    assert saved["k1"]["route"] == "int8"

    routes.clear()  # a new process: the choice comes from the file, nothing is timed

    def never():
        raise AssertionError("a remembered choice must not be measured again")

    routes._loaded["done"] = False
    assert routes.choose("k1", {"popcount": never, "int8": never}) == "int8"


def test_a_later_candidate_must_beat_an_earlier_one_by_the_margin():
    # the table's order decides between candidates within the timing noise; a clear win still counts
    assert routes._fastest({"popcount:avx512": 1.0, "popcount:avx2": 0.95, "int8": 0.99}) == "popcount:avx512"
    assert routes._fastest({"popcount:avx512": 1.0, "popcount:avx2": 0.8, "int8": 0.99}) == "popcount:avx2"
    assert routes._fastest({"popcount:avx512": 1.0, "popcount:avx2": 0.8, "int8": 0.5}) == "int8"
    assert routes._fastest({"int8": 2.0}) == "int8"


def test_a_damaged_choice_file_is_ignored(fresh_routes):
    routes.route_table()  # names the file
    path = routes._cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"k": {"route": "rm -rf"}, "j": [1, 2], "x": ')
    routes.clear()
    routes._loaded["done"] = False
    assert routes.route_table() == {}


@pytest.mark.skipif(not int8_route.int8_route_available(), reason="torch has no oneDNN int8 conv here")
def test_binary_conv_records_its_route_and_both_routes_agree(fresh_routes):
    c = 64
    x = torch.randn(2, c, 9, 9).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3)
    args = (x, pack_weight_signs(w), weight_scale(w), c, 3, 1, 1, 1)
    auto = ops.xnor_conv2d(*args, input_scale=True)
    (key, choice), = routes.route_table().items()
    candidates = {f"popcount:{v}" for v in routes.popcount_variants()} | {"int8"}
    assert key.startswith("conv|b1|n2|c64|9x9|o64|k3x3|") and choice["route"] in candidates
    assert set(choice["ms"]) == candidates  # every SIMD popcount variant that runs here, and int8
    assert all(v in cpu.available_variants() for v in routes.popcount_variants())
    with routes.record() as seen:
        ops.xnor_conv2d(*args, input_scale=True)
    assert seen == [(key, choice["route"])]
    for name in routes.ROUTES:
        with routes.force_route(name), routes.record() as seen:
            torch.testing.assert_close(ops.xnor_conv2d(*args, input_scale=True), auto, rtol=1e-5, atol=1e-4)
        assert [routes.route_of(c) for _, c in seen] == [name]


def test_kernel_info_names_the_cpu_and_the_routes(fresh_routes):
    import zoo_kernels
    from zoo_kernels.cpu_features import cpu_class

    routes.run("k2", {"popcount": lambda: torch.zeros(1)})
    info = zoo_kernels.kernel_info()
    assert info["cpu_class"] == cpu_class() and info["forced_route"] is None
    assert info["popcount"].startswith("xnor_conv2d")
    assert ("unavailable" in info["int8_route"]) != int8_route.int8_route_available()
    assert set(info["routes"]) == set(routes.route_table())
