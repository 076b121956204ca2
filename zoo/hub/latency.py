"""CPU latency for the cards, taken from a ``zoo bench --json`` file.

The bench JSON has ``meta`` (``device``, ``hardware``, ``torch``, ``threads``, ``repeats``) and ``end_to_end`` rows
(``model``, ``baseline``, ``batch``, ``input_size``, ``float_ms``, ``packed_ms``, ``speedup``). A card gets the batch-1
row whose ``model`` is its architecture, stored as ``config["cpu_latency"]`` together with what it was measured on
(input size, threads, hardware, torch), so the figure never travels without its conditions. Rows are matched by
architecture only: a card trained at another input size shows the latency with the bench's input size next to it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

__all__ = ["BENCH_NAME", "read_bench", "cpu_latency", "with_latency"]

BENCH_NAME = "bench.json"


def read_bench(path: Path) -> dict[str, Any]:
    """Load a bench JSON and check it is a CPU benchmark with ``meta`` and ``end_to_end`` rows."""
    bench = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(bench, dict) or not isinstance(bench.get("meta"), dict):
        raise ValueError(f"{path}: not a zoo bench JSON (no 'meta' object)")
    if not isinstance(bench.get("end_to_end"), list):
        raise ValueError(f"{path}: not a zoo bench JSON (no 'end_to_end' list)")
    device = bench["meta"].get("device", "cpu")
    if device != "cpu":
        raise ValueError(f"{path}: measured on {device!r}; the cards show CPU latency")
    return bench


def cpu_latency(bench: dict[str, Any], architecture: str) -> dict[str, Any] | None:
    """The batch-1 packed latency of ``architecture`` in ``bench``, with its conditions; ``None`` without a row."""
    meta = bench["meta"]
    for row in bench["end_to_end"]:
        if row.get("model") == architecture and row.get("batch") == 1 and row.get("packed_ms") is not None:
            return {
                "packed_ms": float(row["packed_ms"]),
                "float_ms": row.get("float_ms"),
                "speedup": row.get("speedup"),
                "baseline": row.get("baseline"),
                "batch": 1,
                "input_size": list(row.get("input_size") or []),
                "threads": meta.get("threads"),
                "hardware": meta.get("hardware"),
                "torch": meta.get("torch"),
                "repeats": meta.get("repeats"),
            }
    return None


def with_latency(configs: list[dict[str, Any]], bench: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of ``configs`` whose ``cpu_latency`` is this bench's figure, or absent where the bench has no row."""
    out = []
    for config in configs:
        config = copy.deepcopy(config)
        latency = cpu_latency(bench, config["architecture"])
        if latency is None:
            config.pop("cpu_latency", None)
        else:
            config["cpu_latency"] = latency
        out.append(config)
    return out
