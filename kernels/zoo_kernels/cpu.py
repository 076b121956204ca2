"""CPU kernels of the packed XNOR convolution: build, load and call ``cpu_popcount.cpp`` and ``cpu_pack.cpp``, with
a clean fallback.

The algorithm and memory access are described at the top of ``cpu_popcount.cpp``: an implicit GEMM over packed words,
``D[p, o] = sum popcount(A[p, k] ^ B[o, k])`` for output pixels ``p`` and filters ``o``, tiled over torch's intra-op
threads, the inner loop a micro-kernel of one ISA from the table in ``cpu_popcount_ukernels.h`` (:func:`variant_table`):
``avx512`` (``vpopcntd`` over 16 filters per vector, the rows read in place from the padded packed input,
``cpu_popcount_avx512.cpp``, the default where the
CPU has AVX-512 VPOPCNTDQ: the fastest at every shape measured), ``avx2_pairs`` and ``avx2`` (nibble-table lookups,
``vpshufb``, against weight panels, ``cpu_popcount_avx2.cpp``), ``scalar`` (64-bit ``popcnt``,
``cpu_popcount_scalar.cpp``); weights re-laid out once per weight tensor and cached; then the padding correction and
the fused epilogue
``out = alpha[o] * K[n, y, x] * (valid_taps * C - 2 * popcount) + bias[o]`` (float32, channels_last; optionally plus
a residual, then a ReLU). ``cpu_pack.cpp`` packs signs, optionally of ``x * scale[c] + shift[c]`` (an inference
BatchNorm fused into the packing pass) and with the channel mean of ``|x|``, and computes the input scale K.

Build: the first call compiles the extension with ``torch.utils.cpp_extension.load`` (ninja; ``-O3``, ``-fopenmp`` so
that ``at::parallel_for`` runs on ``torch.get_num_threads()`` threads; no ISA flags: each micro-kernel is compiled for
its ISA by function attributes and runs only where the CPU has it, detected at run time) into ``cpu-<hash>`` under
``$ZOO_KERNELS_CACHE``, else ``$XDG_CACHE_HOME/zoo_kernels``, else ``~/.cache/zoo_kernels``; the hash covers the
sources, the flags and the torch / Python versions, so later processes only load the library (well under a second).
The library registers private ops ``torch.ops.zoo_xnor_cpu.*``; the public ops are in :mod:`zoo_kernels.ops`.

Variants: :func:`variant_table` lists every compiled variant of the conv and whether it runs here,
:func:`available_variants` those that run, :func:`kernel_info` also the CPU features detected;
:func:`available_pack_variants` and :func:`pack_info` the same for the packing (``cpu_pack_ukernels.h``: one file per
ISA, avx512 / avx2 / scalar, all with the same results); ``ZOO_KERNELS_ISA=scalar|avx2|avx512`` (read at load) makes
every "auto" call, conv and packing, run that ISA (a name not in the table is a ValueError; one the CPU lacks, a
RuntimeError at each auto call naming the choices).

Fallback: if the build or load fails (no compiler, ...), or ``ZOO_KERNELS_DISABLE_CPP=1``, a warning is issued once,
:func:`cpu_kernel_available` returns False and the functions below compute the same results with the pure-PyTorch
paths (:func:`zoo_kernels.packing.pack_signs`, :func:`zoo_kernels.reference.xnor_conv2d_reference`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .input_scale import box_filter
from .kbit import pack_kbit_planes as _pack_kbit_planes_torch
from .packing import pack_signs as _pack_signs_torch
from .reference import xnor_conv2d_reference

__all__ = [
    "available_pack_variants",
    "available_variants",
    "variant_table",
    "cached_weights",
    "compiled_op",
    "cpu_kernel_available",
    "fingerprint",
    "input_scale_cpu",
    "xnor_conv2d_float_cpu",
    "kbit_conv2d_float_cpu",
    "kernel_info",
    "load_extension",
    "pack_info",
    "pack_kbit_planes_cpu",
    "pack_signs_cpu",
    "quantize_u8_cpu",
    "xnor_conv2d_cpu",
    "xnor_conv2d_float_signs_cpu",
    "xnor_conv2d_signs_cpu",
]

_SOURCES = [Path(__file__).with_name(name) for name in (
    "cpu_popcount.cpp", "cpu_popcount_scalar.cpp", "cpu_popcount_avx2.cpp", "cpu_popcount_avx512.cpp", "cpu_pack.cpp",
    "cpu_pack_scalar.cpp", "cpu_pack_avx2.cpp", "cpu_pack_avx512.cpp", "cpu_int8.cpp", "cpu_pool.cpp",
    "cpu_fingerprint.cpp")]
_HEADERS = [Path(__file__).with_name(name) for name in ("cpu_kernels.h", "cpu_ukernels.h", "cpu_popcount_ukernels.h",
                                                        "cpu_pack_ukernels.h")]
_PACK_VARIANTS = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 4}  # as cpu_pack.cpp numbers the packing's variants

_lock = threading.Lock()
_state: dict[str, object] = {"loaded": False, "ok": False, "error": None}
_ops: dict[str, object] = {}  # the loaded private ops (OpOverloads: cheaper to call than torch.ops lookups)


def _flags() -> list[str]:
    # No ISA flags: the micro-kernels and passes carry their ISA in function attributes and are chosen at run time,
    # so that one build runs on every CPU of the architecture.
    return ["-O3", "-fopenmp"]


def _cache_dir(tag: str) -> Path:
    root = os.environ.get("ZOO_KERNELS_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zoo_kernels"
    return base / f"cpu-{tag}"


def _build() -> None:
    """Compile (or reuse) and load the extension; registers ``torch.ops.zoo_xnor_cpu``."""
    from torch.utils import cpp_extension

    flags = _flags()
    key = "\n".join([*(s.read_text() for s in _SOURCES + _HEADERS), " ".join(flags), torch.__version__, sys.version,
                     platform.machine()])
    tag = hashlib.sha256(key.encode()).hexdigest()[:16]
    build_dir = _cache_dir(tag)
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=f"zoo_xnor_cpu_{tag}",
        sources=[str(s) for s in _SOURCES],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )


def _first_line(error: BaseException, limit: int = 300) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


def _forced_isa() -> str:
    """The ISA ``ZOO_KERNELS_ISA`` forces on "auto" calls ("" for none), checked against the table once the library is
    loaded (a ValueError for a name not in it); whether the CPU runs it is checked by the C++ driver at each auto call
    (a RuntimeError naming the choices)."""
    name = os.environ.get("ZOO_KERNELS_ISA", "")
    return "" if name == "auto" else name


def _set_forced_isa(name: str) -> None:
    isas = list(dict.fromkeys(row["isa"] for row in variant_table()))
    if name and name not in isas:
        raise ValueError(f"ZOO_KERNELS_ISA={name!r} is not one of {', '.join(isas)} (or auto / unset)")
    torch.ops.zoo_xnor_cpu.set_auto_isa(name)


def load_extension() -> bool:
    """Build/load the compiled kernels once per process; True on success, False (with one warning) otherwise; with
    ``ZOO_KERNELS_REQUIRE_CPP=1`` (as in CI) a failed build or load is a RuntimeError instead
    (``ZOO_KERNELS_DISABLE_CPP`` still turns the kernels off on purpose)."""
    if _state["loaded"]:
        if _state.get("isa_error") is not None:
            raise _state["isa_error"]
        return bool(_state["ok"])
    with _lock:
        if not _state["loaded"]:
            error: BaseException | None = None
            disabled = os.environ.get("ZOO_KERNELS_DISABLE_CPP", "") not in ("", "0")
            if disabled:
                error = RuntimeError("disabled by ZOO_KERNELS_DISABLE_CPP")
            else:
                try:
                    _build()
                    _ops["pack_signs"] = torch.ops.zoo_xnor_cpu.pack_signs.default
                    _ops["input_scale"] = torch.ops.zoo_xnor_cpu.input_scale.default
                    _ops["pack_kbit_planes"] = torch.ops.zoo_xnor_cpu.pack_kbit_planes.default
                    _ops["pack_info"] = torch.ops.zoo_xnor_cpu.pack_info.default
                    _ops["xnor_conv2d"] = torch.ops.zoo_xnor_cpu.xnor_conv2d.default
                    _ops["xnor_conv2d_float"] = torch.ops.zoo_xnor_cpu.xnor_conv2d_float.default
                    _ops["kbit_conv2d_float"] = torch.ops.zoo_xnor_cpu.kbit_conv2d_float.default
                    _ops["xnor_conv2d_float_signs"] = torch.ops.zoo_xnor_cpu.xnor_conv2d_float_signs.default
                    _ops["xnor_conv2d_signs"] = torch.ops.zoo_xnor_cpu.xnor_conv2d_signs.default
                    _ops["level_bytes"] = torch.ops.zoo_xnor_cpu.level_bytes.default
                    _ops["scale_epilogue"] = torch.ops.zoo_xnor_cpu.scale_epilogue.default
                    _ops["scale_level_bytes"] = torch.ops.zoo_xnor_cpu.scale_level_bytes.default
                    _ops["quantize_u8"] = torch.ops.zoo_xnor_cpu.quantize_u8.default
                    _ops["max_pool_relu"] = torch.ops.zoo_xnor_cpu.max_pool_relu.default
                    _ops["fingerprint"] = torch.ops.zoo_xnor_cpu.fingerprint.default
                except Exception as e:  # noqa: BLE001 - any build/load failure means: use the fallback
                    error = e
            _state.update(loaded=True, ok=error is None, error=error)
            if error is None:
                try:
                    # the table's ops return strings: run them as they are also where the first load happens
                    # under torch.export's or compile's tracing modes
                    from torch.utils._python_dispatch import _disable_current_modes

                    with _disable_current_modes():
                        _set_forced_isa(_forced_isa())
                except ValueError as e:  # raised by every later call too: no run ignores the setting
                    _state["isa_error"] = e
                    raise
            if error is not None and not disabled and os.environ.get("ZOO_KERNELS_REQUIRE_CPP", "") not in ("", "0"):
                raise RuntimeError(  # CI: a failed build is an error, not a suite of fallback runs and skips
                    "zoo_kernels: ZOO_KERNELS_REQUIRE_CPP is set and the compiled CPU kernels are unavailable: "
                    f"{type(error).__name__}: {error}"
                ) from error
            if error is not None:
                warnings.warn(
                    f"zoo_kernels: the compiled CPU XNOR kernel is unavailable ({type(error).__name__}: "
                    f"{_first_line(error)}); falling back to the pure-PyTorch reference (exact, much slower). "
                    "zoo_kernels.cpu.kernel_info() has the full error.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return bool(_state["ok"])


def cpu_kernel_available() -> bool:
    """Whether the compiled CPU kernel is in use (builds it on the first call)."""
    return load_extension()


def kernel_info() -> str:
    """One line on the kernel in use (the variants that run here, what "auto" picks, the CPU features detected:
    avx2, avx512bw, avx512vpopcntdq, avx512_vnni, amx_int8, amx_bf16 as +name or -name, and the thread count), or
    the fallback and its full error."""
    if load_extension():
        return torch.ops.zoo_xnor_cpu.kernel_info()
    return f"xnor_conv2d: pure-PyTorch reference fallback ({_state['error']})"


def variant_table() -> list[dict[str, object]]:
    """The popcount conv's compiled variants in the order "auto" prefers them (the C++ table, kPopcountVariants):
    ``{"name", "isa", "runs", "reason"}`` each, ``reason`` saying why it does not run here ("" where it does); empty
    on the fallback."""
    if not load_extension():
        return []
    rows = []
    for line in torch.ops.zoo_xnor_cpu.variant_table():
        name, isa, status = line.split("|", 2)
        rows.append({"name": name, "isa": isa, "runs": status == "runs", "reason": "" if status == "runs" else status})
    return rows


def pack_info() -> str:
    """One line on the compiled packing (:func:`pack_signs_cpu`, :func:`pack_kbit_planes_cpu`): the variants that run
    here and what "auto" runs, or the fallback."""
    if load_extension():
        return _ops["pack_info"]()
    return f"pack: pure-PyTorch fallback ({_first_line(_state['error'])})"


def available_variants() -> list[str]:
    """The compiled variants this build and CPU run, in the table's order (:func:`variant_table`); empty on the
    fallback, which has none (and ignores ``variant``)."""
    return list(torch.ops.zoo_xnor_cpu.variants()) if load_extension() else []


def available_pack_variants() -> list[str]:
    """The compiled packing variants this build and CPU run, fastest first (of "avx512", "avx2", "scalar"; "auto"
    runs the first unless ``ZOO_KERNELS_ISA`` says); empty on the fallback."""
    return list(torch.ops.zoo_xnor_cpu.pack_variants()) if load_extension() else []


def pack_signs_cpu(
    x: torch.Tensor,
    absmean: bool = False,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    variant: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sign packing ``(N, C, H, W)`` float -> ``(N, H, W, Cw)`` int32, and optionally ``mean_c |x|`` (N, 1, H, W).

    Same words as :func:`zoo_kernels.packing.pack_signs`, any memory layout of ``x``. With ``scale`` and ``shift``
    ((C,) float32, both or neither) the packed values are ``y = x * scale[c] + shift[c]`` (one rounding, ``fma``, as
    torch's CPU BatchNorm computes it) instead of ``x``. ``absmean`` (of ``|y|``) is float32, or None when not asked
    for. ``variant`` picks the compiled micro-kernels ("auto", or one of :func:`available_pack_variants`; a
    RuntimeError where the CPU lacks it); all give the same results, and the fallback ignores it.
    """
    if (scale is None) != (shift is None):
        raise ValueError("pack_signs_cpu: give both scale and shift, or neither")
    if load_extension():
        packed, am = _ops["pack_signs"](x, absmean, scale, shift, _pack_variant(variant))
        return packed, (am if absmean else None)
    if scale is not None:
        y = x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)
        x = y.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    packed = _pack_signs_torch(x)
    return packed, (x.float().abs().mean(dim=1, keepdim=True) if absmean else None)


def pack_kbit_planes_cpu(
    x: torch.Tensor,
    bits: int,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    variant: str = "auto",
) -> torch.Tensor:
    """The sign planes of XNOR-Net's k-bit quantizer, ``(N, C, H, W)`` float -> ``(bits, N, H, W, Cw)`` int32, as
    :func:`zoo_kernels.kbit.pack_kbit_planes` gives them, of ``y = x * scale[c] + shift[c]`` (``fma``) when given.
    float32 and float64 inputs in the compiled kernel (``variant`` as :func:`pack_signs_cpu`); other dtypes, and the
    fallback, in PyTorch."""
    if (scale is None) != (shift is None):
        raise ValueError("pack_kbit_planes_cpu: give both scale and shift, or neither")
    if x.dtype in (torch.float32, torch.float64) and load_extension():
        return _ops["pack_kbit_planes"](x, bits, scale, shift, _pack_variant(variant))
    if scale is not None:
        x = torch.addcmul(shift.view(1, -1, 1, 1).to(x.dtype), x, scale.view(1, -1, 1, 1).to(x.dtype))
    return _pack_kbit_planes_torch(x, bits)


def _pack_variant(name: str) -> int:
    if name not in _PACK_VARIANTS:
        raise ValueError(f"pack variant {name!r} is not one of {', '.join(_PACK_VARIANTS)}")
    return _PACK_VARIANTS[name]


def input_scale_cpu(
    absmean: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:
    """XNOR-Net's ``K = A * k``: ``A`` (N, 1, H, W) float32 convolved with a ``kh x kw`` box of ``1 / (kh * kw)``
    (zero padding counted as 0), (N, 1, Ho, Wo) float32."""
    if load_extension():
        return _ops["input_scale"](absmean, list(kernel_size), list(stride), list(padding), list(dilation))
    return box_filter(absmean, kernel_size, stride, padding, dilation)


def xnor_conv2d_cpu(
    x_packed: torch.Tensor,
    w_packed: torch.Tensor,
    alpha: torch.Tensor,
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    variant: str = "auto",
) -> torch.Tensor:
    """``out[n, o, y, x] = alpha[o] * scale[n, 0, y, x] * int[n, o, y, x] + bias[o]``, float32 (N, O, Ho, Wo) in
    channels_last memory.

    ``int`` is the exact XNOR-popcount conv of :func:`zoo_kernels.reference.xnor_conv2d_reference`; for a 5D
    ``x_packed`` (bits, N, H, W, Cw) of bit planes, ``int = sum_b 2^b int_b`` over the planes (so ``alpha / (2^bits -
    1)`` gives the conv of the k-bit input, see :mod:`zoo_kernels.kbit`). ``scale``
    (N, 1, Ho, Wo) and ``bias`` (O,) are optional (1 and 0 when None). ``variant`` picks the compiled inner loop
    ("auto" or a name of :func:`variant_table`: "avx512" with vpopcntd over 16 filters per vector, "avx2_pairs" with
    blocks of 2 pairs of adjacent pixels, "avx2" with blocks of 4 pixels, "scalar"; a RuntimeError where the CPU lacks
    it); the fallback ignores it. The C++ kernel checks shapes and dtypes again (RuntimeError);
    :mod:`zoo_kernels.ops` checks them first with clearer messages.
    """
    if load_extension():
        return _ops["xnor_conv2d"](x_packed, w_packed, alpha, scale, bias, channels, list(stride), list(padding),
                                   list(dilation), variant)
    planes = x_packed if x_packed.dim() == 5 else x_packed[None]
    acc = sum((2**b) * xnor_conv2d_reference(p, w_packed, channels, stride, padding, dilation)
              for b, p in enumerate(planes)).to(torch.float32)
    out = acc * alpha.float().view(1, -1, 1, 1)
    if scale is not None:
        out = out * scale.float().reshape(out.shape[0], 1, out.shape[2], out.shape[3])
    if bias is not None:
        out = out + bias.float().view(1, -1, 1, 1)
    return out.contiguous(memory_format=torch.channels_last)


def residual_relu(out: torch.Tensor, residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """The end of a ResNet block on a fresh conv output: ``out + residual`` (when given), then a ReLU (when asked),
    in place."""
    if residual is not None:
        out = out.add_(residual)
    return out.relu_() if relu else out


def xnor_conv2d_float_cpu(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    alpha: torch.Tensor,
    bias: torch.Tensor | None,
    norm_scale: torch.Tensor | None,
    norm_shift: torch.Tensor | None,
    channels: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    input_scale: bool,
    residual: torch.Tensor | None = None,
    relu: bool = False,
    variant: str = "auto",
) -> torch.Tensor:
    """:func:`pack_signs_cpu`, :func:`input_scale_cpu` (when ``input_scale``) and :func:`xnor_conv2d_cpu` in one call
    of the compiled kernel (one dispatch instead of three), whose epilogue then adds ``residual`` (the output's shape)
    and applies a ReLU when asked; the same steps in turn without it. ``variant`` as in :func:`xnor_conv2d_cpu`."""
    if load_extension():
        return _ops["xnor_conv2d_float"](x, w_packed, alpha, bias, norm_scale, norm_shift, channels, kernel_size,
                                         stride, padding, dilation, input_scale, residual, relu, variant)
    packed, absmean = pack_signs_cpu(x, input_scale, norm_scale, norm_shift)
    scale = input_scale_cpu(absmean, kernel_size, stride, padding, dilation) if input_scale else None
    return residual_relu(xnor_conv2d_cpu(packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation),
                         residual, relu)


def xnor_conv2d_float_signs_cpu(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    alpha: torch.Tensor,
    bias: torch.Tensor | None,
    norm_scale: torch.Tensor | None,
    norm_shift: torch.Tensor | None,
    channels: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    input_scale: bool,
    next_scale: torch.Tensor,
    next_shift: torch.Tensor,
    next_absmean: bool,
    variant: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first conv of a pair (a ResNet block's conv1 -> BatchNorm -> sign -> conv2): not the output ``v`` of
    :func:`xnor_conv2d_float_cpu` but the next conv's input, the packed signs of ``v * next_scale + next_shift``
    (``fma``; (O,) float32, contiguous) and, when ``next_absmean``, their ``mean_o |.|`` (N, 1, Ho, Wo): what
    :func:`pack_signs_cpu` gives on ``v``, bit for bit, without ``v`` ever written. The same
    steps in turn without the compiled kernels."""
    if load_extension():
        packed, am = _ops["xnor_conv2d_float_signs"](x, w_packed, alpha, bias, norm_scale, norm_shift, channels,
                                                     kernel_size, stride, padding, dilation, input_scale, next_scale,
                                                     next_shift, next_absmean, variant)
        return packed, (am if next_absmean else None)
    v = xnor_conv2d_float_cpu(x, w_packed, alpha, bias, norm_scale, norm_shift, channels, kernel_size, stride,
                              padding, dilation, input_scale)
    return pack_signs_cpu(v, next_absmean, next_scale, next_shift)


def xnor_conv2d_signs_cpu(
    x_packed: torch.Tensor,
    absmean: torch.Tensor | None,
    w_packed: torch.Tensor,
    alpha: torch.Tensor,
    bias: torch.Tensor | None,
    channels: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    residual: torch.Tensor | None = None,
    relu: bool = False,
    variant: str = "auto",
) -> torch.Tensor:
    """The second conv of a pair: :func:`xnor_conv2d_cpu` of packed signs, with ``K`` = :func:`input_scale_cpu` of
    ``absmean`` when it is given, then the ``residual`` / ReLU epilogue."""
    if load_extension():
        return _ops["xnor_conv2d_signs"](x_packed, absmean, w_packed, alpha, bias, channels, kernel_size, stride,
                                         padding, dilation, residual, relu, variant)
    scale = input_scale_cpu(absmean, kernel_size, stride, padding, dilation) if absmean is not None else None
    return residual_relu(xnor_conv2d_cpu(x_packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation),
                         residual, relu)


def kbit_conv2d_float_cpu(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    alpha: torch.Tensor,
    bias: torch.Tensor | None,
    norm_scale: torch.Tensor | None,
    norm_shift: torch.Tensor | None,
    channels: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    bits: int,
    input_scale: bool,
    residual: torch.Tensor | None = None,
    relu: bool = False,
    variant: str = "auto",
) -> torch.Tensor:
    """The conv of the k-bit quantized ``x`` (``bits`` sign planes, :mod:`zoo_kernels.kbit`) in one call of the
    compiled kernel: the planes, ``K`` when ``input_scale``, one conv over all planes (``alpha / (2^bits - 1)``), and
    the ``residual`` / ReLU epilogue; the same steps in turn without it. ``variant`` as in :func:`xnor_conv2d_cpu`."""
    if load_extension():
        return _ops["kbit_conv2d_float"](x, w_packed, alpha, bias, norm_scale, norm_shift, channels, kernel_size,
                                         stride, padding, dilation, bits, input_scale, residual, relu, variant)
    planes = pack_kbit_planes_cpu(x, bits, norm_scale, norm_shift)
    scale = None
    if input_scale:
        absmean = pack_signs_cpu(x, True, norm_scale, norm_shift)[1]
        scale = input_scale_cpu(absmean, kernel_size, stride, padding, dilation)
    out = xnor_conv2d_cpu(planes, w_packed, alpha / (2**bits - 1), scale, bias, channels, stride, padding, dilation)
    return residual_relu(out, residual, relu)


def cached_weights() -> int:
    """How many weight tensors have their re-laid-out panels in the compiled kernel's cache (0 without it)."""
    return torch.ops.zoo_xnor_cpu.cached_weights() if load_extension() else 0


def level_bytes_cpu(
    x: torch.Tensor, bits: int, absmean: bool, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The int8 route's input bytes ``q = 2 L`` (uint8 (N, C, H, W), channels_last) of ``y = x * scale[c] +
    shift[c]`` (``fma``; ``y = x`` without them), ``L`` the sign level ``[y >= 0]`` for one bit, else XNOR-Net's
    k-bit level (:func:`zoo_kernels.kbit.kbit_levels`), and ``mean_c |y|`` (N, 1, H, W) float32 when ``absmean``.
    float32 input; compiled kernel only (the int8 route needs it)."""
    if not load_extension():
        raise RuntimeError("level_bytes_cpu needs the compiled CPU kernels: " + kernel_info())
    q, am = _ops["level_bytes"](x, bits, absmean, scale, shift)
    return q, (am if absmean else None)


def scale_epilogue_cpu(
    out: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    relu: bool,
) -> torch.Tensor:
    """In place on a float32 channels_last conv output: ``out = out * scale[n, 0, y, x] + bias[o]`` (``fma``), plus
    ``residual`` when given, then a ReLU when asked (the int8 route's epilogue, with XNOR-Net's ``K`` as ``scale``)."""
    if not load_extension():
        raise RuntimeError("scale_epilogue_cpu needs the compiled CPU kernels: " + kernel_info())
    return _ops["scale_epilogue"](out, scale, bias, residual, relu)


def scale_level_bytes_cpu(
    out: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    norm_scale: torch.Tensor,
    norm_shift: torch.Tensor,
    bits: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The int8 route's epilogue into the next binary conv's input: ``v = out * scale[n, 0, y, x] + bias[o]``
    (``fma``, as :func:`scale_epilogue_cpu`), then the level bytes and ``mean_o |y|`` of ``y = v * norm_scale[o] +
    norm_shift[o]`` (as :func:`level_bytes_cpu`), in one pass that never writes ``v``; bit for bit the two steps'
    results."""
    if not load_extension():
        raise RuntimeError("scale_level_bytes_cpu needs the compiled CPU kernels: " + kernel_info())
    return _ops["scale_level_bytes"](out, scale, bias, norm_scale, norm_shift, bits)


def quantize_u8_cpu(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """uint8 levels ``clamp(round(x / scale) + zero_point, 0, 255)`` (in float32; round half to even; NaN gives
    ``zero_point``)
    of a float32 (N, C, H, W) ``x``, channels_last, in one pass (the compiled kernel), else (and while compiling or
    exporting) the same through torch."""
    if not torch.compiler.is_compiling() and load_extension():
        return _ops["quantize_u8"](x, scale, zero_point)
    level = torch.round(x.float() / scale) + zero_point
    level = torch.where(torch.isnan(level), float(zero_point), level.clamp(0, 255))
    return level.to(torch.uint8).contiguous(memory_format=torch.channels_last)


def max_pool_relu_cpu(x: torch.Tensor, out: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """``out[:] = relu(max_pool2d(x, kernel, stride, padding))`` as float32 (``out``: float32 channels_last of the
    pooled shape), in one pass over ``x`` (float32 or bfloat16); the same through torch without the compiled
    kernels."""
    if load_extension():
        return _ops["max_pool_relu"](x, out, kernel, stride, padding)
    return out.copy_(torch.nn.functional.max_pool2d(x, kernel, stride, padding).relu_())


def compiled_op(name: str) -> Callable[..., object] | None:
    """The compiled op ``torch.ops.zoo_xnor_cpu.<name>`` (its OpOverload: the cheapest way to call it), or None
    without the compiled kernels."""
    return _ops[name] if load_extension() else None


def fingerprint(*tensors: torch.Tensor) -> int:
    """A 64-bit fingerprint of the tensors' contents, which the weight caches key on: any change of one value is seen,
    also a write through ``.data`` that the version counter misses (``cpu_fingerprint.cpp`` says which edits could
    collide). One pass over the bytes, compiled, for CPU tensors; the same property through torch ops otherwise
    (another value, slower: a device sync on a GPU)."""
    if all(t.is_cpu for t in tensors) and load_extension():
        return _ops["fingerprint"](list(tensors))
    h = len(tensors)
    for t in tensors:
        raw = t.detach().contiguous().view(-1).view(torch.uint8)
        words = torch.nn.functional.pad(raw, (0, -raw.numel() % 8)).view(torch.int64)
        lanes = torch.arange(words.numel(), 0, -1, dtype=torch.int64, device=words.device)
        h = hash((h, raw.numel(), *torch.stack([words.sum(), (words * lanes).sum()]).tolist()))
    return h
