"""XNOR-popcount inference kernels (installed as ``zoo_kernels``).

:func:`kernel_info` says what runs on this machine: the CPU class and features, the compiled popcount kernel's and
packing's variants, whether the int8 matrix-engine route is there, and the route chosen for each binary conv shape so
far.
"""

from __future__ import annotations

__all__ = ["kernel_info"]


def kernel_info() -> dict[str, object]:
    """``{"cpu_class", "cpu_features" (the ones present), "popcount" (the compiled kernel's own line, or the
    fallback and its error), "pack" (the packing's variants here and what "auto" runs), "int8_route" (available or
    not), "forced_route" (ZOO_KERNELS_ROUTE, or None: measured), "routes" ({conv key: {"route", "ms"}})}``."""
    from . import cpu, int8_route, routes
    from .cpu_features import cpu_class, cpu_features

    return {
        "cpu_class": cpu_class(),
        "cpu_features": [name for name, present in cpu_features().items() if present is True],
        "popcount": cpu.kernel_info(),
        "pack": cpu.pack_info(),
        "int8_route": "oneDNN u8 x s8 conv (qconv2d_pointwise)" if int8_route.int8_route_available()
        else "unavailable (torch without oneDNN's int8 ops, or no compiled kernels)",
        "forced_route": routes.forced_route(),
        "routes": routes.route_table(),
    }
