"""The CPU's features, detected once: which instruction sets the kernels and routes may use.

Read from torch's own cpuinfo (``torch._C._cpu._get_cpu_capability()``, the same detection oneDNN's dispatch
relies on), so that a route chosen here never asks for an instruction the library would refuse. The CPU classes the
zoo is tuned for:

- ``amx``: AMX-INT8 and AMX-BF16 tiles (Intel Xeon Sapphire Rapids and later), also AVX-512 VPOPCNTDQ and VNNI;
- ``avx512_vpopcntdq``: AVX-512 with VPOPCNTDQ, no AMX (AMD Zen 4, Intel Ice Lake);
- ``avx2``: AVX2 only (AMD Zen 3, Intel Haswell to Comet Lake);
- ``generic``: anything else (another architecture, or an x86 CPU without AVX2).
"""

from __future__ import annotations

import functools
import platform

import torch

__all__ = ["cpu_class", "cpu_features", "has_native_bf16", "has_feature"]

# The features the zoo's kernels and routes ask about, by their names in torch's cpuinfo.
FEATURES = ("avx2", "avx512_f", "avx512_bw", "avx512_vl", "avx512_vpopcntdq", "avx512_vnni", "avx_vnni",
            "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@functools.cache
def cpu_features() -> dict[str, object]:
    """``{"cpu_name", "architecture", <feature>: bool for each of FEATURES}``; all False off x86-64."""
    try:
        info = dict(torch._C._cpu._get_cpu_capability())
    except (AttributeError, RuntimeError):  # an older torch, or a build without cpuinfo
        info = {}
    out: dict[str, object] = {
        "cpu_name": str(info.get("cpu_name", platform.processor() or "unknown")),
        "architecture": str(info.get("architecture", platform.machine())),
    }
    out.update({name: bool(info.get(name, False)) for name in FEATURES})
    return out


@torch.compiler.assume_constant_result  # a fact of the machine: torch.compile reads it once, not its cache
def has_feature(name: str) -> bool:
    """Whether the CPU has ``name`` (one of :data:`FEATURES`)."""
    if name not in FEATURES:
        raise ValueError(f"unknown CPU feature {name!r}; known: {', '.join(FEATURES)}")
    return bool(cpu_features()[name])


def has_native_bf16() -> bool:
    """Whether bfloat16 arithmetic runs in hardware (AVX512_BF16 dot products or AMX-BF16 tiles), so that a float
    part of a network is faster in bfloat16 than in float32; elsewhere oneDNN emulates bfloat16."""
    return has_feature("avx512_bf16") or has_feature("amx_bf16")


def cpu_class() -> str:
    """``amx``, ``avx512_vpopcntdq``, ``avx2`` or ``generic`` (see the module docstring)."""
    if has_feature("amx_int8") and has_feature("amx_tile"):
        return "amx"
    if has_feature("avx512_vpopcntdq") and has_feature("avx512_bw"):
        return "avx512_vpopcntdq"
    if has_feature("avx2"):
        return "avx2"
    return "generic"
