"""zoo_kernels.bench: the interleaved timing loop."""

from zoo_kernels.bench import time_interleaved


def test_time_interleaved_shuffles_the_order():
    calls: list[str] = []
    names = ("float", "xnor", "xnor_k")
    fns = {name: (lambda name=name: calls.append(name)) for name in names}
    times = time_interleaved(fns, repeats=30, warmup=2, device="cpu")
    assert calls[:6] == ["float"] * 2 + ["xnor"] * 2 + ["xnor_k"] * 2  # warm-up first, untimed
    timed = calls[6:]
    rounds = [timed[3 * r: 3 * r + 3] for r in range(30)]
    assert all(sorted(r) == sorted(names) for r in rounds)  # each once per round
    after_float = [timed[i + 1] for i in range(len(timed) - 1) if timed[i] == "float"]
    assert 0.25 < after_float.count("xnor") / len(after_float) < 0.75  # neither XNOR variant mostly follows float
    assert {k: len(v) for k, v in times.items()} == {name: 30 for name in names}
    assert all(t >= 0 for v in times.values() for t in v)
