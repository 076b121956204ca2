"""``zoo bench``: packed XNOR inference against float -- conv kernels, whole models, checkpoint sizes.

    zoo bench                                   # CPU, 2 threads, batches 1 and 16, input 224x224
    zoo bench --models 'xnor_*' --json bench.json
    zoo bench --device cuda                     # GPU: bfloat16 baselines, the CUDA XNOR kernel, batches 1 and 64

Three tables (and, with ``--json PATH``, one JSON file; its keys are listed in :func:`run`):

- conv: ResNet-18's 3x3 convolutions (56x56x64, 28x28x128, 14x14x256, 7x7x512 at 224x224): the float conv
  (``F.conv2d``: float32 on CPU, bfloat16 on GPU) against the packed XNOR conv, activation packing included, with
  and without XNOR-Net's input scale K (:mod:`zoo_kernels.bench`).
- end to end: each zoo model ``<scheme>_<arch>`` packed (``zoo.create_model`` then ``zoo.pack``) against its float
  baseline ``fp_<arch>`` (for ``resnet18`` that is timm's ``resnet18``; on GPU in bfloat16). Always
  ``xnor_resnet18``, plus the models matching ``--models``.
- sizes: the float baseline's ``model.safetensors`` against the packed checkpoint written by
  ``zoo.pack_model(model).save_pretrained`` (both into a temporary folder), and their ratio.

Timing: one process, ``torch.get_num_threads()`` threads (``--threads``, default 2 on CPU), warm-up calls excluded,
the variants of a row timed in interleaved rounds, median of ``--repeats`` (CUDA synchronized around each call).
Weights are random: the kernels' speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_model
from torch import nn
from zoo_kernels import cpu as cpu_kernels
from zoo_kernels.bench import benchmark_conv, conv_shapes, conv_table, float_dtype, time_interleaved

from .hub.checkpoint import WEIGHTS_NAME
from .hub.model import pack_model
from .hub.publish import cpu_description
from .models import create_model, is_model, list_models
from .packing import pack
from .schemes import get_scheme, list_schemes

__all__ = ["baseline_name", "bench_models", "build_pair", "format_tables", "main", "run", "split_name"]

DEFAULT_MODEL = "xnor_resnet18"
DEFAULT_BATCHES = {"cpu": (1, 16), "cuda": (1, 64)}


def split_name(name: str) -> tuple[str, str]:
    """``"xnor_nobeta_resnet18"`` -> ``("xnor_nobeta", "resnet18")``: the longest registered scheme prefix."""
    schemes = [s for s in list_schemes() if name.startswith(s + "_")]
    if not schemes:
        raise ValueError(f"{name!r} does not start with a registered scheme ({', '.join(list_schemes())})")
    scheme = max(schemes, key=len)
    return scheme, name[len(scheme) + 1:]


def baseline_name(name: str) -> str:
    """The zoo's float model of ``name``'s architecture: ``fp_<arch>``."""
    return "fp_" + split_name(name)[1]


def _baseline_label(float_model: nn.Module, arch: str) -> str:
    """``arch`` where the float baseline is timm's model of that name (``resnet18``), else ``fp_<arch>``."""
    backbone = float_model.pretrained_cfg.get("backbone")
    return arch if backbone == arch and timm.is_model(arch) else "fp_" + arch


def bench_models(pattern: str | None) -> list[str]:
    """``xnor_resnet18`` and the zoo models matching ``pattern`` that have a packed form and a float baseline."""
    names = [DEFAULT_MODEL] + (list_models(pattern) if pattern else [])
    out = []
    for name in names:
        if name in out or get_scheme(split_name(name)[0]).is_float or not is_model(baseline_name(name)):
            continue
        out.append(name)
    return out


def build_pair(name: str) -> tuple[nn.Module, nn.Module, str]:
    """``(float baseline, trainable binary model)`` of zoo model ``name``, float32 on CPU in eval mode, and the
    baseline's label."""
    float_model = create_model(baseline_name(name)).eval()
    return float_model, create_model(name).eval(), _baseline_label(float_model, split_name(name)[1])


def _median_ms(ts: list[float]) -> float:
    return statistics.median(ts) * 1e3


@torch.inference_mode()
def _time_models(
    float_model: nn.Module, packed: nn.Module, batch: int, input_size: tuple[int, ...], device: torch.device,
    repeats: int, warmup: int,
) -> dict[str, float]:
    x = torch.randn(batch, *input_size, device=device)
    x_float = x.to(float_dtype(device))
    times = time_interleaved({"float": lambda: float_model(x_float), "packed": lambda: packed(x)}, repeats, warmup,
                             device)
    row = {"float_ms": _median_ms(times["float"]), "packed_ms": _median_ms(times["packed"]),
           "float_min_ms": min(times["float"]) * 1e3, "packed_min_ms": min(times["packed"]) * 1e3}
    row["speedup"] = row["float_ms"] / row["packed_ms"]
    return row


def _file_sizes(float_model: nn.Module, binary: nn.Module) -> dict[str, int]:
    """Bytes of the float model's ``model.safetensors`` and of the packed checkpoint's, written to a temp folder."""
    with tempfile.TemporaryDirectory() as tmp:
        float_file, packed_dir = Path(tmp) / WEIGHTS_NAME, Path(tmp) / "packed"
        save_model(float_model, str(float_file))
        pack_model(binary).save_pretrained(packed_dir)
        return {"float_bytes": float_file.stat().st_size, "packed_bytes": (packed_dir / WEIGHTS_NAME).stat().st_size}


def _meta(device: torch.device, repeats: int) -> dict[str, Any]:
    hardware = cpu_description() if device.type == "cpu" else f"{torch.cuda.get_device_name(device)}"
    meta = {
        "device": device.type,
        "hardware": hardware,
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cpu":
        meta["kernel"] = cpu_kernels.kernel_info()
    return meta


def run(
    device: str = "cpu",
    batches: tuple[int, ...] | None = None,
    repeats: int = 11,
    warmup: int = 2,
    input_size: int = 224,
    channels: list[int] | None = None,
    models: str | None = None,
    sizes: bool = True,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON document.

    ``{"meta": {device, hardware, torch, threads, repeats, date, ...},
    "conv": [{channels, size, batch, float_ms, xnor_ms, xnor_k_ms, a2_ms, speedup, speedup_k, speedup_a2,
    <name>_min_ms}, ...],
    "end_to_end": [{model, baseline, batch, input_size, float_ms, packed_ms, speedup, <name>_min_ms}, ...],
    "sizes": [{model, baseline, float_bytes, packed_bytes, ratio}, ...]}``. Speedups and the ratio are
    float / packed (of the medians); ``channels`` picks conv rows (default: all four shapes).
    """
    dev = torch.device(device)
    batches = tuple(batches or DEFAULT_BATCHES[dev.type])
    shapes = [(c, s) for c, s in conv_shapes(input_size) if channels is None or c in channels]
    doc: dict[str, Any] = {"meta": _meta(dev, repeats), "conv": [], "end_to_end": [], "sizes": []}
    for row in benchmark_conv(shapes, batches, repeats, warmup, dev):
        doc["conv"].append(row)
    for name in bench_models(models):
        float_model, binary, label = build_pair(name)
        if sizes:
            b = _file_sizes(float_model, binary)
            doc["sizes"].append({"model": name, "baseline": label, **b, "ratio": b["float_bytes"] / b["packed_bytes"]})
        packed = pack(binary).to(dev)
        float_model = float_model.to(dev, float_dtype(dev))
        size = (binary.pretrained_cfg["input_size"][0], input_size, input_size)
        for batch in batches:
            row = {"model": name, "baseline": label, "batch": batch, "input_size": list(size)}
            doc["end_to_end"].append({**row, **_time_models(float_model, packed, batch, size, dev, repeats, warmup)})
    return doc


def _label(baseline: str, device: torch.device) -> str:
    dtype = "float" if device.type == "cpu" else "bf16"
    return f"{dtype} {baseline}" + ("" if baseline.startswith("fp_") else " (timm)")


def format_tables(doc: dict[str, Any]) -> str:
    """The document of :func:`run` as text tables."""
    meta, device = doc["meta"], torch.device(doc["meta"]["device"])
    lines = [f"{meta['hardware']}, torch {meta['torch']}, {meta['threads']} threads, median of {meta['repeats']}"
             + (f"; {meta['kernel']}" if "kernel" in meta else "")]
    if doc["conv"]:
        lines += ["", "conv: median ms (min ms); XNOR includes activation packing",
                  conv_table(doc["conv"], "f32 conv2d" if device.type == "cpu" else "bf16 conv2d")]
    width = max([len(r["model"]) for r in doc["end_to_end"] + doc["sizes"]] + [5])
    if doc["end_to_end"]:
        base = max(len(_label(r["baseline"], device)) for r in doc["end_to_end"])
        lines += ["", f"{'model':<{width}} {'baseline':<{base}} {'batch':>5} {'input':>11} | {'float ms':>9} "
                  f"{'packed ms':>9} {'x':>5}"]
        for r in doc["end_to_end"]:
            lines.append(f"{r['model']:<{width}} {_label(r['baseline'], device):<{base}} {r['batch']:>5} "
                         f"{'x'.join(map(str, r['input_size'])):>11} | {r['float_ms']:9.2f} {r['packed_ms']:9.2f} "
                         f"{r['speedup']:5.1f}")
    if doc["sizes"]:
        lines += ["", f"{'model':<{width}} {'float safetensors':>18} {'packed':>12} {'ratio':>7}"]
        for r in doc["sizes"]:
            lines.append(f"{r['model']:<{width}} {r['float_bytes'] / 1e6:15.2f} MB {r['packed_bytes'] / 1e6:9.2f} MB "
                         f"{r['ratio']:7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zoo bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: 2 on CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 16 on CPU, 1 64 on GPU")
    parser.add_argument("--repeats", type=int, default=11, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each variant first")
    parser.add_argument("--input-size", type=int, default=224, help="square input side (conv shapes scale with it)")
    parser.add_argument("--channels", type=int, nargs="*", default=None,
                        help="conv rows of these channel counts only (64 128 256 512); none: no conv rows")
    parser.add_argument("--models", default=None, help="add end-to-end rows for zoo models matching this pattern")
    parser.add_argument("--no-sizes", dest="sizes", action="store_false", help="skip the checkpoint sizes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: CUDA is not available on this machine (torch.cuda.is_available() is False)")
        from zoo_kernels.ops import has_kernel

        if not has_kernel("xnor_conv2d", "cuda"):
            parser.error("--device cuda: no CUDA kernel is registered for zoo_xnor::xnor_conv2d (is triton installed?)")
    if args.threads is not None or args.device == "cpu":
        torch.set_num_threads(args.threads or 2)
    doc = run(args.device, args.batches, args.repeats, args.warmup, args.input_size, args.channels, args.models,
              args.sizes)
    print(format_tables(doc))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
