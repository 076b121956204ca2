"""CPU latency of a card's own network at the card's own input size (``zoo cards --measure-latency``).

The network is the one the card describes (its architecture, scheme, classes, input channels and stem from the
card's config), built packed as ``zoo.from_pretrained`` returns it, and timed at batch 1 on an input of the card's
``input_size`` (a digits card: 1x8x8). A binary card is timed against its float twin ``fp_<arch>`` built with the
same settings, each float variant a user would run (:func:`zoo.bench.float_models`), in the interleaved rounds of
``zoo bench`` (median of ``repeats``, warm-up excluded). Weights are random: the kernels' speed does not depend on
their values. The figure carries its conditions (input size, threads, hardware, torch), as a ``zoo bench`` row does.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..bench import _time_models, baseline_name, float_models
from ..models import create_model
from ..schemes import BinarizeConfig
from .checkpoint import build_packed
from .publish import cpu_description

__all__ = ["measure_latency", "with_measured_latency"]


def measure_latency(config: dict[str, Any], repeats: int = 21, warmup: int = 3) -> dict[str, Any]:
    """The batch-1 CPU latency of the network ``config`` describes, at ``config["input_size"]``."""
    size = tuple(int(d) for d in config["input_size"])
    packed = build_packed(config)
    conditions = {
        "batch": 1, "input_size": list(size), "threads": torch.get_num_threads(), "hardware": cpu_description(),
        "torch": torch.__version__.split("+")[0], "repeats": repeats,
    }
    cpu = torch.device("cpu")
    if BinarizeConfig.from_dict(config["scheme"]).is_float:  # the card's network is the float one
        times = _time_models(float_models(packed, cpu), packed, 1, size, cpu, repeats, warmup)
        return {"packed_ms": times["packed_ms"], "float": True, **conditions}
    baseline = baseline_name(config["architecture"])
    float_model = create_model(baseline, num_classes=int(config["num_classes"]), in_chans=int(config["in_chans"]),
                               small_input=bool(config.get("small_input", False))).eval()
    times = _time_models(float_models(float_model, cpu), packed, 1, size, cpu, repeats, warmup)
    return {"packed_ms": times["packed_ms"], "float_ms": times["float_ms"], "speedup": times["speedup"],
            "baseline": baseline, **conditions}


def with_measured_latency(configs: list[dict[str, Any]], repeats: int = 21, warmup: int = 3) -> list[dict[str, Any]]:
    """Copies of ``configs`` whose cards of zoo-trained models (``training`` present) get :func:`measure_latency`
    as their ``cpu_latency``; the others are unchanged."""
    out = []
    for config in configs:
        config = copy.deepcopy(config)
        if config.get("training"):
            config["cpu_latency"] = measure_latency(config, repeats, warmup)
        out.append(config)
    return out
