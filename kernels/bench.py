"""Benchmark of the packed XNOR conv against the float conv: ResNet-18's 3x3 convolutions at 224x224.

The conv rows of ``zoo bench`` (:mod:`zoo.bench` prints and saves them). On CPU the baseline is float32
``F.conv2d``; on CUDA it is bfloat16 ``F.conv2d`` and the XNOR conv runs the kernel registered for CUDA. Both run in
the same process with the same ``torch.get_num_threads()``; each configuration is warmed up, then the variants are
timed in interleaved rounds (:func:`time_interleaved`, so that noise from other work on the machine hits all of them
alike) and the median (and min) wall-clock time is reported. The XNOR timings include packing the activations
(``zoo_xnor::pack_signs`` / ``pack_signs_absmean``); "xnor+K" also computes XNOR-Net's input scale K. The packed
weights and ``alpha`` are prepared once, outside the timing, as they would be at inference.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import ops
from .kbit import kbit_levels
from .packing import pack_weight_signs, weight_scale

__all__ = ["RESNET18_3X3", "benchmark_conv", "conv_shapes", "conv_table", "float_dtype", "time_interleaved"]

# (channels, spatial size) of ResNet-18's 3x3 stride-1 convolutions for a 224x224 input; C_out = C_in.
RESNET18_3X3 = [(64, 56), (128, 28), (256, 14), (512, 7)]


def conv_shapes(input_size: int = 224) -> list[tuple[int, int]]:
    """ResNet-18's 3x3 stride-1 conv shapes ``(channels, size)`` for a square input of ``input_size``."""
    return [(c, max(1, -(-input_size * s // 224))) for c, s in RESNET18_3X3]


def _synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: str | torch.device = "cpu"
) -> dict[str, list[float]]:
    """Seconds per call of each function: ``warmup`` untimed calls each, then ``repeats`` rounds calling every
    function once per round (interleaved), in an order shuffled every round (seeded), so that none runs more often
    right after a given other one (whose freed memory and evicted caches it would inherit: a rotation of three still
    puts one variant after the float conv two rounds in three). On CUDA the device is synchronized before and after
    each timed call."""
    sync = _synchronizer(torch.device(device))
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # no variant always runs right after the same other one
        for name in order:
            fn = fns[name]
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def float_dtype(device: str | torch.device) -> torch.dtype:
    """The float baseline's dtype: float32 on CPU, bfloat16 on GPU."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def _variants(
    batch: int, channels: int, size: int, device: torch.device, check: bool
) -> dict[str, Callable[[], torch.Tensor]]:
    dtype = float_dtype(device)
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
    w_packed, alpha = pack_weight_signs(w), weight_scale(w)
    fns = {
        "float": lambda: F.conv2d(x, w, None, 1, 1),
        "xnor": lambda: ops.xnor_conv2d(x, w_packed, alpha, channels, 3, 1, 1, 1, input_scale=False),
        "xnor_k": lambda: ops.xnor_conv2d(x, w_packed, alpha, channels, 3, 1, 1, 1, input_scale=True),
        "a2": lambda: ops.kbit_conv2d(x, w_packed, alpha, channels, 3, 1, 1, 1, bits=2),
    }
    if check:  # the XNOR result is alpha * conv(sign(x), sign(w)): the float conv of the binarized operands
        sx = torch.where(x >= 0, 1.0, -1.0)
        sw = torch.where(w >= 0, 1.0, -1.0) * alpha.view(-1, 1, 1, 1)
        torch.testing.assert_close(fns["xnor"](), F.conv2d(sx, sw, None, 1, 1), rtol=1e-4, atol=1e-3)
        q2 = (2 * kbit_levels(x, 2) - 3).to(dtype) / 3  # XNOR-Net's 2-bit quantizer
        torch.testing.assert_close(fns["a2"](), F.conv2d(q2, sw, None, 1, 1), rtol=1e-4, atol=1e-3)
    return fns


def benchmark_conv(
    shapes: list[tuple[int, int]] = RESNET18_3X3,
    batches: tuple[int, ...] = (1, 16),
    repeats: int = 11,
    warmup: int = 3,
    device: str | torch.device = "cpu",
    check: bool = True,
) -> list[dict[str, float]]:
    """Time the float conv, the XNOR conv and the XNOR conv with input scale; one row per (batch, shape).

    Not under ``torch.inference_mode``: the packed weights are then ordinary tensors, whose re-laid-out form the CPU
    kernel caches as it does for a model's weights (nothing here requires grad, so no autograd graph is recorded).

    A row has ``batch``, ``channels``, ``size``, ``<variant>_ms`` (median) and ``<variant>_min_ms`` for the variants
    ``float``, ``xnor``, ``xnor_k`` and ``a2`` (2-bit inputs: XNOR-Net's k-bit quantizer, two sign planes, as in
    ``w1a2`` models), and ``speedup`` = float / xnor, ``speedup_k`` = float / xnor_k, ``speedup_a2`` = float / a2
    (medians).
    """
    device = torch.device(device)
    rows = []
    for batch in batches:
        for channels, size in shapes:
            times = time_interleaved(_variants(batch, channels, size, device, check), repeats, warmup, device)
            row: dict[str, float] = {"channels": channels, "size": size, "batch": batch}
            for name, ts in times.items():
                row[f"{name}_ms"] = statistics.median(ts) * 1e3
                row[f"{name}_min_ms"] = min(ts) * 1e3
            row["speedup"] = row["float_ms"] / row["xnor_ms"]
            row["speedup_k"] = row["float_ms"] / row["xnor_k_ms"]
            row["speedup_a2"] = row["float_ms"] / row["a2_ms"]
            rows.append(row)
    return rows


def conv_table(rows: list[dict[str, float]], baseline: str) -> str:
    """The rows of :func:`benchmark_conv` as a text table: median ms (min ms) and speedups."""
    header = (f"{'batch':>5} {'C':>4} {'HxW':>7} | {baseline:>16} | {'xnor':>16} {'x':>5} | {'xnor+K':>16} "
              f"{'x':>5} | {'2-bit inputs':>16} {'x':>5}")
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = [f"{r[f'{n}_ms']:7.2f} ({r[f'{n}_min_ms']:6.2f})" for n in ("float", "xnor", "xnor_k", "a2")]
        lines.append(f"{r['batch']:>5} {r['channels']:>4} {r['size']:>3}x{r['size']:<3} | {cells[0]} | {cells[1]} "
                     f"{r['speedup']:5.1f} | {cells[2]} {r['speedup_k']:5.1f} | {cells[3]} {r['speedup_a2']:5.1f}")
    return "\n".join(lines)
