"""zoo_kernels.bench: the interleaved timing loop."""

from zoo_kernels.bench import time_interleaved


def test_time_interleaved_rotates_the_order():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("float", "xnor", "xnor_k")}
    times = time_interleaved(fns, repeats=6, warmup=2, device="cpu")
    assert calls[:6] == ["float"] * 2 + ["xnor"] * 2 + ["xnor_k"] * 2  # warm-up first, untimed
    rounds = [calls[6 + 3 * r: 9 + 3 * r] for r in range(6)]
    assert all(sorted(r) == ["float", "xnor", "xnor_k"] for r in rounds)  # each once per round
    assert [r[0] for r in rounds] == ["float", "xnor", "xnor_k"] * 2  # none always first
    assert {k: len(v) for k, v in times.items()} == {"float": 6, "xnor": 6, "xnor_k": 6}
    assert all(t >= 0 for v in times.values() for t in v)
