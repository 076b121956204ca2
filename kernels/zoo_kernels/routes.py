"""Route choice by measurement: which kernel runs a binary conv of a given shape on this CPU.

A binary conv has more than one exact implementation on a CPU: the XNOR-popcount kernel (:mod:`zoo_kernels.cpu`, in
each ISA variant of its table that the CPU runs) and the int8 matrix-engine route (:mod:`zoo_kernels.int8_route`,
oneDNN's u8 x s8 conv: AMX tiles, VNNI or AVX2). Which is faster depends on the CPU (AMX makes the int8 engine three
times the popcount kernel's peak; on an AVX2-only CPU the popcount kernel wins by far), on the layer's shape and on
the batch. So, as cuDNN's benchmark mode and Triton's autotuner do, the first call of each (layer shape, batch bucket)
times every candidate on the real input (one warm-up call each, then the best of a few timed calls, interleaved) and
keeps the fastest (a candidate beats one listed before it only by more than 10%, so that noise between near-equal
variants does not flip the choice); later calls of that key run it directly. The candidates are named
``popcount:<variant>`` (the SIMD variants that run here, :func:`popcount_variants`) and ``int8``; :func:`route_of`
gives the route of a name.

Choices are kept per process and saved to a JSON file per CPU model and torch version (``routes-<hash>.json``
under ``$ZOO_KERNELS_ROUTE_CACHE``, else the kernel build cache, see :mod:`zoo_kernels.cpu`), so a later process
loads them instead of timing again. ``ZOO_KERNELS_ROUTE=popcount|int8`` forces a route wherever it is available
(deterministic runs, A/B measurements; popcount then runs the variant "auto" picks, the first of the table that
suits the shape); :func:`force_route` does the same for a ``with`` block. :func:`route_table`
lists the choices made (what ``kernel_info()`` and ``zoo bench`` report per layer).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .cpu_features import cpu_features

__all__ = ["ROUTES", "batch_bucket", "binary_conv2d_cpu", "choose", "clear", "conv_key", "force_route", "forced_route",
           "known", "note", "popcount_variants", "record", "route_of", "route_table", "run", "state"]

ROUTES = ("popcount", "int8")
_TIMED_CALLS = 5  # per candidate, after one warm-up call; the best of them counts
_MARGIN = 0.10  # a candidate must beat the one listed before it by this fraction to be chosen over it

_lock = threading.Lock()
_choices: dict[str, dict[str, object]] = {}  # key -> {"route", "ms": {route: best ms}}
_loaded: dict[str, bool] = {"done": False}
_forced: list[str] = []  # force_route's stack
_recorders: list[list[tuple[str, str]]] = []  # record()'s lists
_generation = [0]  # bumped whenever the choices change: made, loaded or cleared


def batch_bucket(n: int) -> int:
    """The batch sizes that share a choice: 0, 1, then powers of two (2-3 -> 2, 4-7 -> 4, ...)."""
    return 0 if n <= 0 else 1 << (int(n).bit_length() - 1)


def forced_route() -> str | None:
    """The route that ``force_route`` or ``ZOO_KERNELS_ROUTE`` imposes, or None (measure); a ValueError for a name
    that is not a route."""
    name = _forced[-1] if _forced else os.environ.get("ZOO_KERNELS_ROUTE", "")
    if name in ("", "auto"):
        return None
    if name not in ROUTES:
        raise ValueError(f"ZOO_KERNELS_ROUTE={name!r} is not one of {', '.join(ROUTES)} (or auto / unset)")
    return name


@contextlib.contextmanager
def force_route(name: str | None) -> Iterator[None]:
    """Within the block, binary convs take route ``name`` where it is available (None or "auto": measure)."""
    if name not in (None, "auto", *ROUTES):
        raise ValueError(f"force_route: {name!r} is not one of {', '.join(ROUTES)} (or None / auto)")
    _forced.append(name or "auto")
    try:
        yield
    finally:
        _forced.pop()


def _cache_file() -> Path:
    from .cpu import _cache_dir  # the kernels' build cache: one place for what the zoo keeps on disk

    info = cpu_features()
    tag = hashlib.sha256(f"{info['cpu_name']}|{sorted(info.items())}|{torch.__version__}".encode()).hexdigest()[:16]
    root = os.environ.get("ZOO_KERNELS_ROUTE_CACHE")
    base = Path(root) if root else _cache_dir("routes").parent
    return base / f"routes-{tag}.json"


def _load() -> None:
    if _loaded["done"]:
        return
    _loaded["done"] = True
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict) and value.get("route") in ROUTES:
                _choices.setdefault(key, value)
        _generation[0] += 1


def _save() -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_choices, indent=0, sort_keys=True))
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one
    except OSError:
        pass  # a read-only cache costs only a re-measurement in the next process


def _time(candidates: dict[str, Callable[[], torch.Tensor]]) -> dict[str, float]:
    for fn in candidates.values():
        fn()
    best = {name: float("inf") for name in candidates}
    for _ in range(_TIMED_CALLS):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: t * 1e3 for name, t in best.items()}


def route_of(name: str) -> str:
    """The route of a candidate's name: ``popcount:avx512`` -> ``popcount``."""
    return name.split(":", 1)[0]


@functools.cache
def popcount_variants() -> tuple[str, ...]:
    """The popcount variants timed as candidates: those of the table that run here and are not scalar (every CPU
    with a SIMD variant runs that one several times faster), or scalar alone; where ``ZOO_KERNELS_ISA`` forces an
    ISA, only "auto" (that ISA's pick). Fixed for the process (the forced ISA is read when the kernels load)."""
    from . import cpu

    if cpu._forced_isa():
        return ("auto",)
    simd = tuple(v for v in cpu.available_variants() if v != "scalar")
    return simd or ("auto",)


def choose(key: str, candidates: dict[str, Callable[[], torch.Tensor]]) -> str:
    """The candidate for ``key`` among ``candidates`` (name -> a call running it on the real input): the forced
    route's (its "auto" candidate where it has several), else remembered, else measured now and remembered."""
    forced = forced_route()
    if forced is not None:
        of_route = [name for name in candidates if route_of(name) == forced]
        if of_route:
            return f"{forced}:auto" if f"{forced}:auto" in of_route else of_route[0]
    if len(candidates) == 1:
        return next(iter(candidates))
    with _lock:
        _load()
        known = _choices.get(key)
    if known is not None and known["route"] in candidates:
        return str(known["route"])
    ms = _time(candidates)
    route = _fastest(ms)
    with _lock:
        _choices[key] = {"route": route, "ms": {k: round(v, 4) for k, v in ms.items()}}
        _generation[0] += 1
        _save()
    return route


def _fastest(ms: dict[str, float]) -> str:
    """The candidate chosen from the timings: the first listed (the table's order: the variant "auto" prefers, then
    the other SIMD variants, then int8) unless a later one is faster by more than ``_MARGIN``, so that timing noise
    between near-equal candidates does not flip the choice from run to run."""
    best = next(iter(ms))
    for name, t in ms.items():
        if t < ms[best] * (1 - _MARGIN):
            best = name
    return best


def known(key: str) -> str | None:
    """The candidate :func:`choose` would give for ``key`` without measuring anything: the forced route's ("int8",
    or "popcount:auto"), else the one remembered, else None (the next call of the key measures)."""
    forced = forced_route()
    if forced is not None:
        return "int8" if forced == "int8" else f"{forced}:auto"
    with _lock:
        _load()
        entry = _choices.get(key)
    return None if entry is None else str(entry["route"])


def note(key: str, candidate: str) -> None:
    """Record a conv call that ran ``candidate`` outside :func:`run` (a fused pair of convs, see
    :class:`zoo.packing.PackedBasicBlock`) for :func:`record`."""
    for seen in _recorders:
        seen.append((key, candidate))


def run(key: str, candidates: dict[str, Callable[[], torch.Tensor]]) -> torch.Tensor:
    """The output of the candidate :func:`choose` picks for ``key``."""
    route = choose(key, candidates)
    for seen in _recorders:
        seen.append((key, route))
    return candidates[route]()


@contextlib.contextmanager
def record() -> Iterator[list[tuple[str, str]]]:
    """Within the block, the list it gives collects ``(key, candidate)`` of every routed conv call, in order
    (``popcount:<variant>`` or ``int8``)."""
    seen: list[tuple[str, str]] = []
    _recorders.append(seen)
    try:
        yield seen
    finally:
        _recorders.remove(seen)


def route_table() -> dict[str, dict[str, object]]:
    """The choices made or loaded so far: ``{key: {"route": name, "ms": {route: best ms when measured}}}``."""
    with _lock:
        _load()
        return {k: dict(v) for k, v in _choices.items()}


def clear() -> None:
    """Forget the choices of this process and do not read the file: the next call of each key measures again (and
    the file is rewritten with the new choices). ``zoo bench`` starts so, to report and keep fresh choices."""
    with _lock:
        _choices.clear()
        _loaded["done"] = True
        _generation[0] += 1


def state() -> tuple[int, str | None] | None:
    """A token of what a route lookup depends on: it changes whenever a choice is made, loaded or cleared and
    whenever a route is forced or released; None while a :func:`record` block is open (its calls must each be
    recorded). A caller that keeps what :func:`known` gave (a prebound call, :func:`zoo_kernels.ops.prebound_conv2d`)
    may use it while this token stays equal to the one taken with it."""
    if _recorders:
        return None
    return _generation[0], forced_route()


def conv_key(op: str, x: torch.Tensor | tuple[int, ...], w_packed: torch.Tensor, stride, padding, dilation, bits: int,
             input_scale: bool, residual: bool) -> str:
    """The choice's key: the layer's shape (``x`` the input, or its shape) and options and the batch's bucket (see
    :func:`batch_bucket`)."""
    n, c, h, w = x if isinstance(x, tuple) else x.shape
    o, kh, kw, _ = w_packed.shape
    geometry = "x".join(map(str, (*stride, *padding, *dilation)))
    return (f"{op}|b{bits}|n{batch_bucket(n)}|c{c}|{h}x{w}|o{o}|k{kh}x{kw}|{geometry}|K{int(input_scale)}"
            f"|r{int(residual)}")


def binary_conv2d_cpu(
    popcount: Callable[[str], torch.Tensor],
    x: torch.Tensor,
    w_packed: torch.Tensor,
    alpha: torch.Tensor,
    channels: int,
    kernel_size,
    stride,
    padding,
    dilation,
    bits: int,
    input_scale: bool,
    bias: torch.Tensor | None,
    norm_scale: torch.Tensor | None,
    norm_shift: torch.Tensor | None,
    residual: torch.Tensor | None,
    relu: bool,
) -> torch.Tensor:
    """A float32 CPU binary conv on the candidate chosen for its key: ``popcount(variant)`` (the call of the compiled
    popcount kernel in that variant, for each of :func:`popcount_variants`, and "auto" where a route is forced) or the
    int8 route with the same arguments (where oneDNN's int8 conv is available)."""
    from . import int8_route

    key = conv_key("conv", x, w_packed, stride, padding, dilation, bits, input_scale, residual is not None)

    def int8_offered() -> bool:
        return (x.dtype == torch.float32 and x.shape[0] > 0 and int8_route.int8_route_available()
                and int8_route.int8_conv_exact_for(x.shape[2:], kernel_size, stride, padding, dilation))

    def int8() -> torch.Tensor:
        return int8_route.int8_conv2d(x, w_packed, alpha, channels, stride, padding, dilation, bits,
                                      tuple(kernel_size) if input_scale else None, bias, norm_scale, norm_shift,
                                      residual, relu)

    # the common case, a key already chosen (or a forced route): run it without building the candidates
    name = known(key)
    if name is not None:
        route, _, variant = name.partition(":")
        if (route == "popcount" and variant in ("auto", *popcount_variants())) or (route == "int8" and int8_offered()):
            note(key, name)
            return int8() if route == "int8" else popcount(variant)
    candidates: dict[str, Callable[[], torch.Tensor]] = {"popcount:auto": lambda: popcount("auto")}
    if forced_route() is None:
        candidates = {f"popcount:{v}": functools.partial(popcount, v) for v in popcount_variants()}
    if not int8_offered():
        return run(key, candidates)
    return run(key, {**candidates, "int8": int8})
