"""CPU latency for the cards, taken from a ``zoo bench --json`` file.

The bench JSON has ``meta`` (``device``, ``hardware``, ``torch``, ``threads``, ``repeats``) and ``end_to_end`` rows
(``model``, ``baseline``, ``batch``, ``input_size``, ``float_ms``, ``packed_ms``, ``speedup``). A card gets the batch-1
row whose ``model`` is its architecture, stored as ``config["cpu_latency"]`` together with what it was measured on
(input size, threads, hardware, torch), so the figure never travels without its conditions. Rows are matched by
architecture only: a card trained at another input size shows the latency with the bench's input size next to it.

A full-precision card (``fp_<arch>``) has no packed row of its own: ``zoo bench`` times the float network as the
baseline of ``xnor_<arch>``'s row (``baseline`` is ``fp_<arch>``, or timm's ``<arch>`` which ``fp_<arch>`` is), so the
fp card takes that row's ``float_ms`` as its latency, marked ``"float": True`` (float32 weights, float convs).
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


def _conditions(bench: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    meta = bench["meta"]
    return {
        "batch": 1,
        "input_size": list(row.get("input_size") or []),
        "threads": meta.get("threads"),
        "hardware": meta.get("hardware"),
        "torch": meta.get("torch"),
        "repeats": meta.get("repeats"),
    }


def _batch1_row(bench: dict[str, Any], model: str, key: str) -> dict[str, Any] | None:
    for row in bench["end_to_end"]:
        if row.get("model") == model and row.get("batch") == 1 and row.get(key) is not None:
            return row
    return None


def cpu_latency(bench: dict[str, Any], architecture: str) -> dict[str, Any] | None:
    """The batch-1 latency of ``architecture`` in ``bench``, with its conditions; ``None`` without a row.

    A binary architecture's figure is its packed time; an ``fp_<arch>`` card's is the float baseline time of the
    ``xnor_<arch>`` row (see the module docstring)."""
    row = _batch1_row(bench, architecture, "packed_ms")
    if row is not None:
        return {
            "packed_ms": float(row["packed_ms"]),
            "float_ms": row.get("float_ms"),
            "speedup": row.get("speedup"),
            "baseline": row.get("baseline"),
            **_conditions(bench, row),
        }
    if architecture.startswith("fp_"):
        twin = _batch1_row(bench, "xnor_" + architecture[3:], "float_ms")
        if twin is not None and twin.get("baseline") in (architecture, architecture[3:]):
            return {"packed_ms": float(twin["float_ms"]), "float": True, "baseline": twin["baseline"],
                    "measured_with": twin["model"], **_conditions(bench, twin)}
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
