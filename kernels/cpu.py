"""CPU kernels of the packed XNOR convolution: build, load and call ``cpu_popcount.cpp``, with a clean fallback.

The algorithm and memory access are described at the top of ``cpu_popcount.cpp``: an implicit GEMM over 64-bit
packed words, ``D[p, o] = sum_k popcount(A[p, k] ^ B[o, k])`` for output pixels ``p`` and filters ``o``, tiled
over torch's intra-op threads, AVX2 ``vpshufb`` popcount (scalar ``popcnt`` without AVX2), the padding correction
and the fused epilogue ``out = alpha[o] * K[n, y, x] * (valid_taps * C - 2 * popcount) + bias[o]`` (float32).

Build: the first call compiles the extension with ``torch.utils.cpp_extension.load`` (``-O3``, ``-fopenmp`` so that
``at::parallel_for`` runs on ``torch.get_num_threads()`` threads, ``-mavx2 -mpopcnt`` when torch reports an AVX2
CPU) into ``$ZOO_KERNELS_CACHE`` or ``~/.cache/zoo_kernels/cpu-<hash>``, the hash covering the source, the flags and
the torch / Python versions; later processes only load the library. The library registers private ops
``torch.ops.zoo_xnor_cpu.*``; the public ops are in :mod:`zoo_kernels.ops`.

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
from collections.abc import Sequence
from pathlib import Path

import torch

from .packing import pack_signs as _pack_signs_torch
from .reference import xnor_conv2d_reference

__all__ = [
    "cpu_kernel_available",
    "kernel_info",
    "load_extension",
    "pack_signs_cpu",
    "xnor_conv2d_cpu",
]

_SOURCE = Path(__file__).with_name("cpu_popcount.cpp")
_VARIANTS = {"auto": 0, "scalar": 1, "avx2": 2}

_lock = threading.Lock()
_state: dict[str, object] = {"loaded": False, "ok": False, "error": None}


def _flags() -> list[str]:
    flags = ["-O3", "-fopenmp"]
    if platform.machine().lower() in ("x86_64", "amd64") and torch.backends.cpu.get_cpu_capability() in (
        "AVX2",
        "AVX512",
    ):
        flags += ["-mavx2", "-mpopcnt", "-mfma"]
    return flags


def _cache_dir(tag: str) -> Path:
    root = os.environ.get("ZOO_KERNELS_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zoo_kernels"
    return base / f"cpu-{tag}"


def _build() -> None:
    """Compile (or reuse) and load the extension; registers ``torch.ops.zoo_xnor_cpu``."""
    from torch.utils import cpp_extension

    flags = _flags()
    key = "\n".join([_SOURCE.read_text(), " ".join(flags), torch.__version__, sys.version, platform.machine()])
    tag = hashlib.sha256(key.encode()).hexdigest()[:16]
    build_dir = _cache_dir(tag)
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=f"zoo_xnor_cpu_{tag}",
        sources=[str(_SOURCE)],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )


def load_extension() -> bool:
    """Build/load the compiled kernels once per process; True on success, False (with one warning) otherwise."""
    if _state["loaded"]:
        return bool(_state["ok"])
    with _lock:
        if not _state["loaded"]:
            if os.environ.get("ZOO_KERNELS_DISABLE_CPP", "") not in ("", "0"):
                error: BaseException | None = RuntimeError("disabled by ZOO_KERNELS_DISABLE_CPP")
            else:
                try:
                    _build()
                    error = None
                except Exception as e:  # noqa: BLE001 - any build/load failure means: use the fallback
                    error = e
            _state.update(loaded=True, ok=error is None, error=error)
            if error is not None:
                warnings.warn(
                    f"zoo_kernels: the compiled CPU XNOR kernel is unavailable ({type(error).__name__}: "
                    f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''}); "
                    "falling back to the pure-PyTorch reference (exact, much slower).",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return bool(_state["ok"])


def cpu_kernel_available() -> bool:
    """Whether the compiled CPU kernel is in use (builds it on the first call)."""
    return load_extension()


def kernel_info() -> str:
    """One line on the kernel in use (compiled variant and thread count, or the fallback)."""
    if load_extension():
        return torch.ops.zoo_xnor_cpu.kernel_info()
    return f"xnor_conv2d: pure-PyTorch reference fallback ({_state['error']})"


def pack_signs_cpu(x: torch.Tensor, absmean: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sign packing ``(N, C, H, W)`` float -> ``(N, H, W, Cw)`` int32, and optionally ``mean_c |x|`` (N, 1, H, W).

    Same words as :func:`zoo_kernels.packing.pack_signs`. ``absmean`` is float32 (accumulated in float32 per
    32 channels, then float64), or None when not asked for.
    """
    if load_extension():
        packed, am = torch.ops.zoo_xnor_cpu.pack_signs(x, absmean)
        return packed, (am if absmean else None)
    packed = _pack_signs_torch(x)
    return packed, (x.float().abs().mean(dim=1, keepdim=True) if absmean else None)


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
    """``out[n, o, y, x] = alpha[o] * scale[n, 0, y, x] * int[n, o, y, x] + bias[o]``, float32 (N, O, Ho, Wo).

    ``int`` is the exact XNOR-popcount conv of :func:`zoo_kernels.reference.xnor_conv2d_reference`; ``scale``
    (N, 1, Ho, Wo) and ``bias`` (O,) are optional (1 and 0 when None). ``variant`` picks the compiled inner loop
    ("auto", "scalar", "avx2"); it is ignored by the fallback. Shapes are checked by the caller
    (:mod:`zoo_kernels.ops`) and again in C++.
    """
    if load_extension():
        return torch.ops.zoo_xnor_cpu.xnor_conv2d(
            x_packed, w_packed, alpha, scale, bias, channels, list(stride), list(padding), list(dilation),
            _VARIANTS[variant],
        )
    acc = xnor_conv2d_reference(x_packed, w_packed, channels, stride, padding, dilation).to(torch.float32)
    out = acc * alpha.float().view(1, -1, 1, 1)
    if scale is not None:
        out = out * scale.float().reshape(out.shape[0], 1, out.shape[2], out.shape[3])
    if bias is not None:
        out = out + bias.float().view(1, -1, 1, 1)
    return out
