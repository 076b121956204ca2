"""CPU latency for the cards, taken from a ``zoo bench --json`` file.

The bench JSON has ``meta`` (``device``, ``hardware``, ``torch``, ``threads``, ``repeats``) and ``end_to_end`` rows
(``model``, ``baseline``, ``batch``, ``input_size``, ``float_ms``, ``packed_ms``, ``speedup``). ``zoo bench`` times
each architecture as ``zoo.create_model(name)`` builds it: 3 input channels, 1000 classes, the ImageNet stem, at the
row's ``input_size`` (3x224x224 by default). A card gets the batch-1 row whose ``model`` is its architecture, with
what it was measured on (input size, threads, hardware, torch), so that the figure never travels without its
conditions:

- as ``config["cpu_latency"]``, the card's latency, when the card's network is the one the bench timed (same input
  size, 3 channels, 1000 classes, no small-input stem: the ``-imagenet`` cards);
- else as ``config["bench_latency"]``, shown apart and labelled with its input size, never as the card's latency.
  A card's own ``cpu_latency`` at its own input size comes from ``zoo cards --measure-latency``
  (:mod:`zoo.hub.card_latency`); a ``cpu_latency`` measured at another input size than the card's is dropped.

A full-precision card (``fp_<arch>``) has no packed row of its own: ``zoo bench`` times the float network as the
baseline of ``xnor_<arch>``'s row (``baseline`` is ``fp_<arch>``, or timm's ``<arch>`` which ``fp_<arch>`` is), so the
fp card takes that row's ``float_ms``, marked ``"float": True`` (float32 weights, float convs).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

__all__ = ["BENCH_NAME", "BENCH_NETWORK", "has_bench_settings", "read_bench", "cpu_latency", "with_latency"]

BENCH_NAME = "bench.json"
# The settings zoo bench builds every architecture with (zoo.create_model's defaults).
BENCH_NETWORK = {"in_chans": 3, "num_classes": 1000, "small_input": False}


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


def has_bench_settings(config: dict[str, Any]) -> bool:
    """Whether the card's network has :data:`BENCH_NETWORK`'s settings (the ``-imagenet`` cards)."""
    return {k: config.get(k, False if k == "small_input" else None) for k in BENCH_NETWORK} == BENCH_NETWORK


def with_latency(configs: list[dict[str, Any]], bench: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Copies of ``configs`` with this bench's figure as ``cpu_latency`` or ``bench_latency`` (see the module
    docstring; where the bench has no row, neither of the bench's figures), and without a ``cpu_latency`` measured
    at another input size than the card's. With ``bench`` None only that last check is made."""
    out = []
    for config in configs:
        config = copy.deepcopy(config)
        size = list(config.get("input_size") or [])
        if bench is not None:
            latency = cpu_latency(bench, config["architecture"])
            config.pop("bench_latency", None)
            if has_bench_settings(config) and (latency is None or latency["input_size"] == size):
                config.pop("cpu_latency", None)
                if latency is not None:
                    config["cpu_latency"] = latency
            elif latency is not None:
                config["bench_latency"] = latency
        own = config.get("cpu_latency")
        if own is not None and list(own.get("input_size") or []) != size:
            config.pop("cpu_latency")
        out.append(config)
    return out
