"""Benchmark: float32 ``F.conv2d`` vs the packed XNOR conv on CPU, ResNet-18's 3x3 convolutions at 224x224.

Usage::

    python -m zoo_kernels.bench_cpu [--threads 2] [--batches 1 16] [--repeats 15]

Both run in the same process with the same ``torch.get_num_threads()``; each configuration is warmed up, then the
three variants are timed in interleaved rounds (so that noise from other work on the machine hits all of them
alike) and the median (and min) wall-clock time is reported. The XNOR timings include packing the float
activations (``zoo_xnor::pack_signs`` / ``pack_signs_absmean``); "xnor+K" also computes XNOR-Net's input scale K.
The packed weights and ``alpha`` are prepared once, outside the timing, as they would be at inference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import cpu, ops
from .packing import pack_weight_signs, weight_scale

__all__ = ["RESNET18_3X3", "benchmark_conv", "main"]

# (channels, spatial size) of ResNet-18's 3x3 stride-1 convolutions for a 224x224 input; C_out = C_in.
RESNET18_3X3 = [(64, 56), (128, 28), (256, 14), (512, 7)]


def _time(fns: dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int) -> dict[str, list[float]]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _variants(batch: int, channels: int, size: int, check: bool) -> dict[str, Callable[[], torch.Tensor]]:
    x = torch.randn(batch, channels, size, size)
    w = torch.randn(channels, channels, 3, 3)
    w_packed, alpha = pack_weight_signs(w), weight_scale(w)
    fns = {
        "f32": lambda: F.conv2d(x, w, None, 1, 1),
        "xnor": lambda: ops.xnor_conv2d(x, w_packed, alpha, channels, 3, 1, 1, 1, input_scale=False),
        "xnor+K": lambda: ops.xnor_conv2d(x, w_packed, alpha, channels, 3, 1, 1, 1, input_scale=True),
    }
    if check:  # the XNOR result is alpha * conv(sign(x), sign(w)): the float conv of the binarized operands
        sx, sw = torch.where(x >= 0, 1.0, -1.0), torch.where(w >= 0, 1.0, -1.0) * alpha.view(-1, 1, 1, 1)
        torch.testing.assert_close(fns["xnor"](), F.conv2d(sx, sw, None, 1, 1), rtol=1e-4, atol=1e-3)
    return fns


@torch.inference_mode()
def benchmark_conv(
    shapes: list[tuple[int, int]] = RESNET18_3X3,
    batches: tuple[int, ...] = (1, 16),
    repeats: int = 15,
    warmup: int = 3,
    check: bool = True,
) -> list[dict[str, float]]:
    """Time float32 conv2d, the XNOR conv and the XNOR conv with input scale; one dict (ms, speedups) per config."""
    rows = []
    for batch in batches:
        for channels, size in shapes:
            times = _time(_variants(batch, channels, size, check), repeats, warmup)
            row: dict[str, float] = {"batch": batch, "channels": channels, "size": size}
            for name, ts in times.items():
                row[f"{name}_ms"] = statistics.median(ts) * 1e3
                row[f"{name}_min_ms"] = min(ts) * 1e3
            row["speedup"] = row["f32_ms"] / row["xnor_ms"]
            row["speedup_k"] = row["f32_ms"] / row["xnor+K_ms"]
            rows.append(row)
    return rows


def _cell(row: dict[str, float], name: str) -> str:
    return f"{row[name + '_ms']:7.2f} ({row[name + '_min_ms']:6.2f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu.kernel_info()}")
    print("median ms (min ms) over interleaved repeats; XNOR includes activation packing")
    header = f"{'batch':>5} {'C':>4} {'HxW':>6} | {'f32 conv2d':>16} | {'xnor':>16} {'x':>5} | {'xnor+K':>16} {'x':>5}"
    print(header)
    print("-" * len(header))
    for r in benchmark_conv(batches=tuple(args.batches), repeats=args.repeats):
        print(f"{r['batch']:>5} {r['channels']:>4} {r['size']:>3}x{r['size']:<2} | {_cell(r, 'f32')} | "
              f"{_cell(r, 'xnor')} {r['speedup']:5.1f} | {_cell(r, 'xnor+K')} {r['speedup_k']:5.1f}")


if __name__ == "__main__":
    main()
