"""Benchmark of the packed XNOR conv against the convs a user would run instead: ResNet-18's 3x3 convolutions.

The conv rows of ``zoo bench`` (:mod:`zoo.bench` prints and saves them). Baselines: the float convs a user picks
from (:func:`float_variants`: on CPU float32 NCHW and channels_last, and bfloat16 channels_last where the CPU has
native bfloat16; on CUDA bfloat16), the fastest of them per row being "the best float", and on CPU oneDNN's int8
conv. The XNOR convs run on the route chosen for each shape (:mod:`zoo_kernels.routes`) and on each route forced.
All run in the same process with the same ``torch.get_num_threads()``; each is warmed up, then the variants are
timed in interleaved rounds (:func:`time_interleaved`, so that noise from other work on the machine hits all of them
alike) and the median (and min) wall-clock time is reported. The XNOR timings include quantizing and packing the
float activations; "xnor+K" also computes XNOR-Net's input scale K. The packed weights and ``alpha`` are prepared
once, outside the timing, as they would be at inference.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import int8_route, ops, routes
from .cpu_features import has_native_bf16
from .input_scale import box_filter
from .kbit import kbit_levels
from .packing import pack_weight_signs, weight_scale

__all__ = ["RESNET18_3X3", "XNOR_VARIANTS", "benchmark_conv", "conv_shapes", "conv_table", "float_dtype",
           "float_variants", "time_interleaved"]

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
    """The float baseline's dtype on GPU (bfloat16); on CPU, float32 (the bfloat16 variants are extra rows)."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def float_variants(device: str | torch.device) -> dict[str, tuple[torch.dtype, torch.memory_format]]:
    """The float convs a user would pick from on ``device``: {name: (dtype, memory format)}. On CPU float32 NCHW and
    channels_last, and bfloat16 channels_last where the CPU has native bfloat16 (AVX512_BF16 or AMX: elsewhere oneDNN
    emulates it, slower than float32); on GPU bfloat16 NCHW and channels_last."""
    if torch.device(device).type != "cpu":
        return {"bf16": (torch.bfloat16, torch.contiguous_format), "bf16_cl": (torch.bfloat16, torch.channels_last)}
    out = {"f32": (torch.float32, torch.contiguous_format), "f32_cl": (torch.float32, torch.channels_last)}
    if has_native_bf16():
        out["bf16_cl"] = (torch.bfloat16, torch.channels_last)
    return out


def _int8_conv(x: torch.Tensor, w: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    """oneDNN's int8 conv as torchao's PT2E x86 route runs it between two int8 layers: uint8 activations (channels
    last) in, uint8 out, int8 weights with per-channel scales; None without oneDNN."""
    if not int8_route.int8_route_available():
        return None
    channels = w.shape[0]
    q = torch.randint(0, 256, x.shape, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    w_int8 = torch.randint(-127, 128, w.shape, dtype=torch.int8).contiguous(memory_format=torch.channels_last)
    scales, zeros = torch.full((channels,), 1e-3), torch.zeros(channels, dtype=torch.int64)
    packed = torch.ops.onednn.qconv_prepack(w_int8, scales, 0.02, 128, [1, 1], [1, 1], [1, 1], 1, list(x.shape))
    return lambda: torch.ops.onednn.qconv2d_pointwise(q, 0.02, 128, packed, scales, zeros, None, [1, 1], [1, 1],
                                                      [1, 1], 1, 0.05, 128, None, "none", [], "")


XNOR_VARIANTS = ("xnor", "xnor_k", "a2")  # no K, with K (xnor_resnet18's convs), 2-bit inputs; each on its route
_SPEEDUP = {"xnor": "speedup", "xnor_k": "speedup_k", "a2": "speedup_a2"}


def _variants(
    batch: int, channels: int, size: int, device: torch.device, check: bool
) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, str]]:
    """The row's timed calls, and the route key of each XNOR variant (CPU)."""
    x = torch.randn(batch, channels, size, size, device=device)
    w = torch.randn(channels, channels, 3, 3, device=device)
    w_packed, alpha = pack_weight_signs(w), weight_scale(w)
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    for name, (dtype, fmt) in float_variants(device).items():
        xf, wf = x.to(dtype, memory_format=fmt), w.to(dtype, memory_format=fmt)
        fns[name] = lambda xf=xf, wf=wf: F.conv2d(xf, wf, None, 1, 1)
    int8 = _int8_conv(x, w) if device.type == "cpu" else None
    if int8 is not None:
        fns["int8"] = int8
    xc = x.contiguous(memory_format=torch.channels_last)  # as a packed model's activations are
    calls = {
        "xnor": lambda: ops.xnor_conv2d(xc, w_packed, alpha, channels, 3, 1, 1, 1, input_scale=False),
        "xnor_k": lambda: ops.xnor_conv2d(xc, w_packed, alpha, channels, 3, 1, 1, 1, input_scale=True),
        "a2": lambda: ops.kbit_conv2d(xc, w_packed, alpha, channels, 3, 1, 1, 1, bits=2),
    }
    fns.update(calls)
    if device.type == "cpu":  # timed as a packed model calls them: checked once, prebound on the chosen route
        for name, bits, k in (("xnor", 1, False), ("xnor_k", 1, True), ("a2", 2, False)):
            calls[name]()  # the layer's first call: its route is chosen
            prebound = ops.prebound_conv2d(xc, w_packed, alpha, channels, 3, 1, 1, 1, bits, k)
            if prebound is not None:
                fns[name] = lambda prebound=prebound: prebound(xc, None)
    keys = {}
    if device.type == "cpu" and int8 is not None:
        for name, bits, k in (("xnor", 1, False), ("xnor_k", 1, True), ("a2", 2, False)):
            keys[name] = routes.conv_key("conv", xc, w_packed, [1, 1], [1, 1], [1, 1], bits, k, False)
            for route in routes.ROUTES:  # each route forced: what the choice chose from
                fns[f"{name}_{route}"] = lambda fn=calls[name], route=route: _forced(route, fn)
    if check:  # the XNOR result is alpha * conv(sign(x), sign(w)) (times K): the float conv of the binarized operands
        sw = torch.where(w >= 0, 1.0, -1.0) * alpha.view(-1, 1, 1, 1)
        ref = F.conv2d(torch.where(x >= 0, 1.0, -1.0), sw, None, 1, 1)
        q2 = (2 * kbit_levels(x, 2) - 3).to(x.dtype) / 3  # XNOR-Net's 2-bit quantizer
        refs = {"xnor": ref, "xnor_k": ref * box_filter(x.abs().mean(1, keepdim=True), (3, 3), 1, 1),
                "a2": F.conv2d(q2, sw, None, 1, 1)}
        for name, fn in fns.items():
            base = name.rsplit("_", 1)[0] if name.endswith(routes.ROUTES) else name  # xnor_k_int8 -> xnor_k
            if base in refs:
                torch.testing.assert_close(fn(), refs[base], rtol=1e-4, atol=1e-3)
    return fns, keys


def _forced(route: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    with routes.force_route(route):
        return fn()


def benchmark_conv(
    shapes: list[tuple[int, int]] = RESNET18_3X3,
    batches: tuple[int, ...] = (1, 16),
    repeats: int = 11,
    warmup: int = 3,
    device: str | torch.device = "cpu",
    check: bool = True,
) -> list[dict[str, object]]:
    """Time the float convs, oneDNN's int8 conv and the XNOR convs; one row per (batch, shape).

    Not under ``torch.inference_mode``: the packed weights are then ordinary tensors, whose re-laid-out form the
    kernels cache as they do for a model's weights (nothing here requires grad, so no autograd graph is recorded).

    A row has ``batch``, ``channels``, ``size``, ``<variant>_ms`` (median) and ``<variant>_min_ms`` for the float
    variants (:func:`float_variants`), ``int8`` (oneDNN's u8 x s8 conv, uint8 out: the int8 conv a user's PT2E model
    runs, on CPU), and the XNOR variants ``xnor`` (sign inputs), ``xnor_k`` (with XNOR-Net's input scale K, as in
    ``xnor_resnet18``) and ``a2`` (2-bit inputs, two sign planes, as in ``w1a2`` models), each on the route chosen
    for it (``route_<variant>``: popcount or int8, :mod:`zoo_kernels.routes`) and, on CPU with oneDNN, on each route
    forced (``<variant>_<route>_ms``). The XNOR timings include quantizing and packing the float activations. On CPU
    the three run as a packed model calls them (:func:`zoo_kernels.ops.prebound_conv2d`: arguments checked and route
    looked up once), where the chosen route is popcount; the forced-route variants call the public op each time.
    ``best_float`` names the fastest float variant and ``float_ms`` is its time; ``speedup``, ``speedup_k`` and
    ``speedup_a2`` are float_ms over the XNOR variants' times, ``speedup_int8`` float_ms / int8_ms (medians).
    """
    device = torch.device(device)
    rows = []
    for batch in batches:
        for channels, size in shapes:
            fns, keys = _variants(batch, channels, size, device, check)
            times = time_interleaved(fns, repeats, warmup, device)
            row: dict[str, object] = {"channels": channels, "size": size, "batch": batch}
            for name, ts in times.items():
                row[f"{name}_ms"] = statistics.median(ts) * 1e3
                row[f"{name}_min_ms"] = min(ts) * 1e3
            best = min(float_variants(device), key=lambda n: row[f"{n}_ms"])
            row["best_float"], row["float_ms"], row["float_min_ms"] = best, row[f"{best}_ms"], row[f"{best}_min_ms"]
            table = routes.route_table()
            for name in XNOR_VARIANTS:
                row[f"route_{name}"] = table.get(keys.get(name, ""), {}).get("route", "popcount")
                row[_SPEEDUP[name]] = row["float_ms"] / row[f"{name}_ms"]
            if "int8_ms" in row:
                row["speedup_int8"] = row["float_ms"] / row["int8_ms"]
            rows.append(row)
    return rows


def conv_table(rows: list[dict[str, object]]) -> str:
    """The rows of :func:`benchmark_conv` as a text table: median ms of every variant present, the XNOR variants'
    routes, and their speedups over the best float."""
    present = [n for n in ("f32", "f32_cl", "bf16", "bf16_cl", "int8", "xnor", "xnor_k", "xnor_k_popcount",
                           "xnor_k_int8", "a2") if all(f"{n}_ms" in r for r in rows)]
    header = f"{'batch':>5} {'C':>4} {'HxW':>7} | " + " ".join(f"{n:>9}" for n in present) + (
        f" | {'best float':>10} | {'xnor':>5} {'xnor+K':>6} {'route':>8} {'2-bit':>5}" + (
            f" {'int8':>5}" if "int8" in present else ""))
    lines = [header, "-" * len(header)]
    for r in rows:
        line = f"{r['batch']:>5} {r['channels']:>4} {r['size']:>3}x{r['size']:<3} | " + " ".join(
            f"{r[f'{n}_ms']:9.3f}" for n in present)
        line += (f" | {r['best_float']:>10} | {r['speedup']:5.1f} {r['speedup_k']:6.1f} {r['route_xnor_k']:>8} "
                 f"{r['speedup_a2']:5.1f}")
        if "int8" in present:
            line += f" {r['speedup_int8']:5.1f}"
        lines.append(line)
    return "\n".join(lines)
