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
import collections
import copy
import datetime
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_model
from torch import nn
from zoo_kernels import cpu as cpu_kernels
from zoo_kernels import routes
from zoo_kernels.bench import benchmark_conv, conv_shapes, conv_table, float_variants, time_interleaved
from zoo_kernels.cpu_features import cpu_class, cpu_features

from . import int8_stem
from .hub.checkpoint import WEIGHTS_NAME
from .hub.model import pack_model
from .hub.publish import cpu_description
from .models import create_model, is_model, list_models
from .packing import PackedResNet, pack
from .schemes import get_scheme, list_schemes

__all__ = ["baseline_name", "bench_models", "build_pair", "format_tables", "main", "run", "split_name"]

DEFAULT_MODEL = "xnor_resnet18"
DEFAULT_BATCHES = {"cpu": (1, 16), "cuda": (1, 64)}
CPU_CLASSES = ("amx", "avx512_vpopcntdq", "avx2")  # the classes the zoo is tuned for (zoo_kernels.cpu_features)
_COMPILE_WARMUP = 5  # untimed calls of a compiled model: its first ones compile and tune


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


def float_models(float_model: nn.Module, device: torch.device) -> dict[str, nn.Module]:
    """The float baseline as a user would run it on ``device``: one copy per :func:`float_variants` entry (dtype and
    memory format), in eval mode."""
    out = {}
    for name, (dtype, fmt) in float_variants(device).items():
        out[name] = copy.deepcopy(float_model).to(device, dtype, memory_format=fmt).eval()
    return out


def pt2e_int8_model(float_model: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``float_model`` quantized to int8 as torchao's PT2E x86 route does it (``torch.export``, X86InductorQuantizer's
    default config: per-channel int8 weights, uint8 activations; calibrated on ``x``; ``convert_pt2e``), compiled by
    inductor with freezing on, so that its convs run on oneDNN's int8 kernels (AMX / VNNI / AVX2); None when torchao
    is not installed (``pip install 'xnor-zoo[bench]'``). The first call (compilation) happens here."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        return None
    import torch._inductor.config as inductor_config

    with torch.no_grad():
        exported = torch.export.export(copy.deepcopy(float_model).eval(), (x,)).module()
        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        prepared(x)  # calibration
        converted = convert_pt2e(prepared)
        with inductor_config.patch(freezing=True):
            compiled = torch.compile(converted)
            for _ in range(_COMPILE_WARMUP):
                compiled(x)
    return compiled


def _with_int8_stem(packed: nn.Module) -> nn.Module | None:
    """A copy of ``packed`` whose ResNet stem runs in int8 (``PackedResNet.stem_dtype``, :mod:`zoo.int8_stem`), or
    None where it has no such stem or torch has no oneDNN int8 conv."""
    if not int8_stem.available() or not any(isinstance(m, PackedResNet) for m in packed.modules()):
        return None
    copy_ = copy.deepcopy(packed)
    for m in copy_.modules():
        if isinstance(m, PackedResNet):
            m.stem_dtype = torch.int8
    return copy_


@torch.inference_mode()
def _time_models(
    floats: dict[str, nn.Module], packed: nn.Module, batch: int, input_size: tuple[int, ...], device: torch.device,
    repeats: int, warmup: int, compile_best: bool = False,
) -> dict[str, Any]:
    """Median ms of each float variant, of the packed model, and (``compile_best``) of ``torch.compile`` of the
    fastest float variant; ``best_float``, ``float_ms`` (its time) and ``speedup`` = float_ms / packed_ms."""
    x = torch.randn(batch, *input_size, device=device)
    inputs = {name: x.to(float_variants(device)[name][0], memory_format=float_variants(device)[name][1])
              for name in floats}  # converted outside the timing: the float models get their input as they want it
    fns = {name: (lambda m=m, xi=inputs[name]: m(xi)) for name, m in floats.items()}
    fns["packed"] = lambda: packed(x)
    stem8 = _with_int8_stem(packed) if device.type == "cpu" else None
    if stem8 is not None:  # the option, timed beside the default
        fns["packed_int8_stem"] = lambda: stem8(x)
    times = time_interleaved(fns, repeats, warmup, device)
    row: dict[str, Any] = {}
    for name, ts in times.items():
        row[f"{name}_ms"], row[f"{name}_min_ms"] = _median_ms(ts), min(ts) * 1e3
    best = min(floats, key=lambda n: row[f"{n}_ms"])
    if compile_best:  # the fastest eager float, compiled (inductor); its compilation is not timed
        compiled = torch.compile(floats[best])
        for _ in range(_COMPILE_WARMUP):  # compilation, then the first calls' own one-time work
            compiled(inputs[best])
        times = time_interleaved({"compiled": lambda: compiled(inputs[best]), "packed": lambda: packed(x)}, repeats,
                                 warmup, device)
        row["compiled_ms"], row["compiled_min_ms"] = _median_ms(times["compiled"]), min(times["compiled"]) * 1e3
        row["compiled_of"] = best
        if row["compiled_ms"] < row[f"{best}_ms"]:
            best = "compiled"
        int8 = pt2e_int8_model(floats["f32"], x) if device.type == "cpu" else None
        if int8 is not None:  # a baseline of its own, not a float: int8 weights and activations
            times = time_interleaved({"int8": lambda: int8(x), "packed": lambda: packed(x)}, repeats, warmup, device)
            row["int8_pt2e_ms"], row["int8_pt2e_min_ms"] = _median_ms(times["int8"]), min(times["int8"]) * 1e3
            row["speedup_int8_pt2e"] = row["int8_pt2e_ms"] / row["packed_ms"]
    row["best_float"], row["float_ms"] = best, row[f"{best}_ms"]
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
        meta["cpu_class"] = cpu_class()
        meta["cpu_features"] = cpu_features()
        meta["kernel"] = cpu_kernels.kernel_info()
        meta["xnor_conv_calls"] = "prebound"  # the conv rows' xnor / xnor_k / a2: as a packed model calls them
    return meta


def _route_counts(chosen: list[str]) -> str:
    """``"12 popcount:avx512, 7 int8"``: how many binary conv calls ran each candidate, by route then name."""
    counts = collections.Counter(chosen)
    order = sorted(counts, key=lambda name: (routes.ROUTES.index(routes.route_of(name))
                                             if routes.route_of(name) in routes.ROUTES else len(routes.ROUTES), name))
    return ", ".join(f"{counts[name]} {name}" for name in order) or "-"


def _layer_routes(packed: nn.Module, batch: int, input_size: tuple[int, ...], device: torch.device) -> list[dict]:
    """``[{key, route}]``: the route of each binary conv call of one forward of ``packed`` at ``batch``, in the order
    they run (the key names the layer's shape, see :func:`zoo_kernels.routes.conv_key`)."""
    with torch.inference_mode(), routes.record() as seen:
        packed(torch.randn(batch, *input_size, device=device))
    return [{"key": key, "route": route} for key, route in seen]


@torch.inference_mode()
def profile_model(packed: nn.Module, batch: int, input_size: tuple[int, ...], device: torch.device,
                  rows: int = 15) -> str:
    """torch.profiler's table of where a packed model's forward spends its time (self CPU time, three calls)."""
    x = torch.randn(batch, *input_size, device=device)
    packed(x)
    with torch.profiler.profile() as prof:
        for _ in range(3):
            packed(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run(
    device: str = "cpu",
    batches: tuple[int, ...] | None = None,
    repeats: int = 11,
    warmup: int = 2,
    input_size: int = 224,
    channels: list[int] | None = None,
    models: str | None = None,
    sizes: bool = True,
    compile_best: bool = False,
    profile: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON document.

    ``{"meta": {device, hardware, torch, threads, repeats, date, cpu_class, cpu_features, kernel},
    "conv": [rows of zoo_kernels.bench.benchmark_conv],
    "end_to_end": [{model, baseline, batch, input_size, <float variant>_ms, packed_ms, [packed_int8_stem_ms: the
    packed model with the int8 stem option, PackedResNet only], [compiled_ms, compiled_of],
    best_float, float_ms, speedup, <name>_min_ms, routes: [{layer, key, route}]}, ...],
    "sizes": [{model, baseline, float_bytes, packed_bytes, ratio}, ...], "profile": {model/batch: table}}``.
    Speedups and the ratio are best float / packed (of the medians); ``channels`` picks conv rows (default: all four
    shapes); ``compile_best`` adds ``torch.compile`` of the fastest eager float per row.
    """
    dev = torch.device(device)
    batches = tuple(batches or DEFAULT_BATCHES[dev.type])
    shapes = [(c, s) for c, s in conv_shapes(input_size) if channels is None or c in channels]
    routes.clear()  # measure the route choices afresh (and keep them for later processes)
    doc: dict[str, Any] = {"meta": _meta(dev, repeats), "conv": [], "end_to_end": [], "sizes": [], "profile": {}}
    for row in benchmark_conv(shapes, batches, repeats, warmup, dev):
        doc["conv"].append(row)
    for name in bench_models(models):
        float_model, binary, label = build_pair(name)
        if sizes:
            b = _file_sizes(float_model, binary)
            doc["sizes"].append({"model": name, "baseline": label, **b, "ratio": b["float_bytes"] / b["packed_bytes"]})
        packed = pack(binary).to(dev)
        floats = float_models(float_model, dev)
        size = (binary.pretrained_cfg["input_size"][0], input_size, input_size)
        for batch in batches:
            row = {"model": name, "baseline": label, "batch": batch, "input_size": list(size)}
            row.update(_time_models(floats, packed, batch, size, dev, repeats, warmup, compile_best))
            if dev.type == "cpu":
                row["routes"] = _layer_routes(packed, batch, size, dev)
            doc["end_to_end"].append(row)
            if profile:
                doc["profile"][f"{name} batch {batch}"] = profile_model(packed, batch, size, dev)
    return doc


def _ratio(r: dict[str, Any]) -> str:
    return f"{r['speedup']:5.1f}"


def _int8_ratio(r: dict[str, Any]) -> str:
    """int8 PT2E model / packed, where it was measured."""
    return f"{r['speedup_int8_pt2e']:.2f}" if "speedup_int8_pt2e" in r else "-"


def _ms(row: dict[str, Any], name: str) -> str:
    return f"{row[f'{name}_ms']:.2f}" if f"{name}_ms" in row else "-"


def format_tables(doc: dict[str, Any]) -> str:
    """The document of :func:`run` as text tables."""
    meta = doc["meta"]
    lines = [f"{meta['hardware']}, torch {meta['torch']}, {meta['threads']} threads, median of {meta['repeats']}"
             + (f"; CPU class {meta['cpu_class']}" if "cpu_class" in meta else "")]
    if "kernel" in meta:
        lines.append(meta["kernel"])
    if doc["conv"]:
        lines += ["", "conv: median ms; XNOR includes quantizing and packing the float activations (xnor, xnor_k, a2: "
                  "as a packed model calls them, prebound; _popcount / _int8: the public op, route forced); x = best "
                  "float / XNOR (int8: best float / oneDNN int8 conv)", conv_table(doc["conv"])]
    width = max([len(r["model"]) for r in doc["end_to_end"] + doc["sizes"]] + [5])
    if doc["end_to_end"]:
        variants = [n for n in ("f32", "f32_cl", "bf16", "bf16_cl", "compiled", "int8_pt2e")
                    if any(f"{n}_ms" in r for r in doc["end_to_end"])]
        lines += ["", "end to end: median ms of the float baseline as each variant, the packed model (and with the "
                  "int8 stem option), x = best float / packed", f"{'model':<{width}} {'baseline':<16} {'batch':>5} "
                  f"{'input':>11} | " + " ".join(f"{n:>9}" for n in variants)
                  + f" | {'packed':>9} {'int8 stem':>9} | {'best float':>10} {'x':>5} | {'x int8':>6} | routes"]
        for r in doc["end_to_end"]:
            cells = " ".join(f"{r[f'{n}_ms']:9.2f}" if f"{n}_ms" in r else f"{'-':>9}" for n in variants)
            chosen = [x["route"] for x in r.get("routes", [])]
            counts = _route_counts(chosen)
            lines.append(f"{r['model']:<{width}} {r['baseline']:<16} {r['batch']:>5} "
                         f"{'x'.join(map(str, r['input_size'])):>11} | {cells} | {r['packed_ms']:9.2f} "
                         f"{_ms(r, 'packed_int8_stem'):>9} | "
                         f"{r['best_float']:>10} {_ratio(r)} | {_int8_ratio(r):>6} | {counts}")
    if doc["sizes"]:
        lines += ["", f"{'model':<{width}} {'float safetensors':>18} {'packed':>12} {'ratio':>7}"]
        for r in doc["sizes"]:
            lines.append(f"{r['model']:<{width}} {r['float_bytes'] / 1e6:15.2f} MB {r['packed_bytes'] / 1e6:9.2f} MB "
                         f"{r['ratio']:7.1f}")
    for title, table in doc.get("profile", {}).items():
        lines += ["", f"profile of packed {title}:", table]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown_report(docs: list[dict[str, Any]]) -> str:
    """docs/benchmarks.md from ``zoo bench --json`` documents: per document (one CPU each, named with its class,
    features, torch version and date), the conv table and the end-to-end table, in milliseconds and ratios to the
    best float."""
    lines = ["# Benchmarks", "", "Generated by `zoo bench --report` from the `zoo bench --json` files in `docs/bench/`;"
             " every figure below was measured on the CPU named above its table, with `zoo bench` (same process, "
             "same threads, variants interleaved, median of the repeats). x = the best float's time over the XNOR "
             "conv's or the packed model's; x int8 = the int8 PT2E resnet18's time over the packed model's."]
    measured = {doc["meta"].get("cpu_class") for doc in docs}
    missing = [c for c in CPU_CLASSES if c not in measured]
    if missing:
        lines += ["", "Not measured (no `zoo bench --json` file of that CPU class in `docs/bench/`): "
                  + ", ".join(f"`{c}`" for c in missing) + "."]
    for doc in docs:
        meta = doc["meta"]
        features = ", ".join(k for k, v in meta.get("cpu_features", {}).items() if v is True)
        lines += ["", f"## {meta['hardware']} ({meta.get('cpu_class', meta['device'])})", "",
                  f"{meta['threads']} threads, torch {meta['torch']}, median of {meta['repeats']}, {meta['date']}."
                  + (f" CPU features: {features}." if features else "")]
        if doc["conv"]:
            names = [n for n in ("f32", "f32_cl", "bf16", "bf16_cl", "int8", "xnor_k_popcount", "xnor_k_int8", "xnor_k",
                                 "a2") if all(f"{n}_ms" in r for r in doc["conv"])]
            rows = [[str(r["batch"]), f"{r['channels']}x{r['size']}x{r['size']}",
                     *(f"{r[f'{n}_ms']:.3f}" for n in names), r["best_float"], f"{r['speedup_k']:.2f}",
                     r["route_xnor_k"], f"{r['speedup_a2']:.2f}"] for r in doc["conv"]]
            calls = (" and run as a packed model calls them, prebound; the _popcount / _int8 columns call the public "
                     "op with the route forced" if meta.get("xnor_conv_calls") == "prebound" else "")
            lines += ["", "ResNet-18's 3x3 convs, ms (XNOR with K and 2-bit inputs include quantizing the float "
                      f"activations{calls}):", ""]
            lines += _md_table(["batch", "C x H x W", *names, "best float", "x (xnor+K)", "route", "x (2-bit)"], rows)
        if doc["end_to_end"]:
            names = [n for n in ("f32", "f32_cl", "bf16", "bf16_cl", "compiled", "int8_pt2e")
                     if any(f"{n}_ms" in r for r in doc["end_to_end"])]
            rows = []
            for r in doc["end_to_end"]:
                chosen = [c["route"] for c in r.get("routes", [])]
                rows.append([r["model"], r["baseline"], str(r["batch"]), "x".join(map(str, r["input_size"])),
                             *(f"{r[f'{n}_ms']:.2f}" if f"{n}_ms" in r else "-" for n in names),
                             f"{r['packed_ms']:.2f}", _ms(r, "packed_int8_stem"), r["best_float"],
                             f"{r['speedup']:.2f}", _int8_ratio(r),
                             _route_counts(chosen)])
            lines += ["", "End to end, ms:", ""]
            lines += _md_table(["model", "baseline", "batch", "input", *names, "packed", "packed, int8 stem",
                                "best float", "x", "x int8", "binary conv routes"], rows)
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--compile", dest="compile_best", action="store_true",
                        help="also time torch.compile of the fastest float and, with torchao installed, the int8 "
                             "PT2E model (end to end; compilation not timed)")
    parser.add_argument("--profile", action="store_true", help="print where the packed models' time goes")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: batch 1, input 64, 3 repeats, 1 warm-up, two conv shapes, no sizes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON",
                        help="measure nothing: print docs/benchmarks.md made from these --json files")
    args = parser.parse_args(argv)
    if args.report:
        print(markdown_report([json.loads(p.read_text(encoding="utf-8")) for p in args.report]), end="")
        return
    if args.quick:
        args.batches, args.repeats, args.warmup, args.input_size = [1], 3, 1, 64
        args.channels, args.sizes = args.channels if args.channels is not None else [64, 512], False
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: CUDA is not available on this machine (torch.cuda.is_available() is False)")
        from zoo_kernels.ops import has_kernel

        if not has_kernel("xnor_conv2d", "cuda"):
            parser.error("--device cuda: no CUDA kernel is registered for zoo_xnor::xnor_conv2d (is triton installed?)")
    if args.threads is not None or args.device == "cpu":
        torch.set_num_threads(args.threads or 2)
    doc = run(args.device, args.batches, args.repeats, args.warmup, args.input_size, args.channels, args.models,
              args.sizes, args.compile_best, args.profile)
    print(format_tables(doc))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
