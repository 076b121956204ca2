"""Reading ``config.json``: the zoo's own strict reader, run before anything else parses or trusts the file.

The file must be a regular file (a symbolic link is followed, but not to a device or a FIFO) of at most
:data:`MAX_CONFIG_BYTES`, UTF-8, one JSON object (no NaN / Infinity, no number beyond float range such as ``1e400``,
which would read as an infinity, no repeated keys) nested at most :data:`MAX_DEPTH` deep, and every field the zoo
reads must have its type and range. Any violation is one :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm

from ..models import is_model, list_models
from ..schemes import BinarizeConfig, list_schemes

__all__ = ["CheckpointError", "FORMAT_VERSION", "MAX_CONFIG_BYTES", "MAX_DEPTH", "read_config", "check_config",
           "config_bytes"]

FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_CLASSES = 10**6
MAX_CHANS = 64
MAX_SIDE = 1 << 16


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupted or does not match the architecture it names."""


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _integer(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, not {_kind(v)} {v!r}"
        return None if lo <= v <= hi else f"must be in [{lo}, {hi}], not {v}"

    return check


def _number(lo: float = -math.inf, hi: float = math.inf) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be a number, not {_kind(v)} {v!r}"
        return None if lo <= v <= hi else f"must be in [{lo:g}, {hi:g}], not {v!r}"

    return check


def _of_type(*types: type) -> Callable[[Any], str | None]:
    names = " or ".join("a string" if t is str else "true/false" if t is bool else "an object" for t in types)

    def check(v: Any) -> str | None:
        return None if isinstance(v, types) else f"must be {names}, not {_kind(v)} {v!r}"

    return check


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else check(v)


def _list_of(check: Callable[[Any], str | None], lengths: tuple[int, ...] | None = None):
    def check_list(v: Any) -> str | None:
        if not isinstance(v, list):
            return f"must be a list, not {_kind(v)} {v!r}"
        if lengths is not None and len(v) not in lengths:
            return f"must have {' or '.join(map(str, lengths))} entries, not {len(v)}"
        for i, item in enumerate(v):
            problem = check(item)
            if problem:
                return f"entry {i} {problem}"
        return None

    return check_list


_STR, _BOOL = _of_type(str), _of_type(bool)
_FRACTION = _optional(_number(0.0, 1.0))
_SECONDS = _optional(_number(0.0))
_SIZE = _list_of(_integer(1, MAX_SIDE), (3,))
_SCHEME_FIELDS = {
    "name": _STR,
    "kernel_quantizer": _optional(_STR),
    "input_quantizer": _optional(_STR),
    "input_bits": _optional(_integer(1, 32)),
    "input_scale": _BOOL,
    "binary_gradient": _BOOL,
    "block_relu": _BOOL,
    "norm_affine": _BOOL,
    "version": _integer(1, 1),
}
_LATENCY_FIELDS = {
    "packed_ms": _SECONDS, "float_ms": _SECONDS, "speedup": _SECONDS, "batch": _optional(_integer(1, 1 << 20)),
    "input_size": _optional(_list_of(_integer(1, MAX_SIDE))), "threads": _optional(_integer(1, 1 << 16)),
    "repeats": _optional(_integer(1, 1 << 30)), "float": _optional(_BOOL), "hardware": _optional(_STR),
    "torch": _optional(_STR), "baseline": _optional(_STR), "measured_with": _optional(_STR),
}
# The blocks the cards read: every field, where present, with its type and range.
_BLOCKS = {
    "sizes": {"packed_bytes": _optional(_integer(0, 1 << 62)), "float_bytes": _optional(_integer(0, 1 << 62))},
    "training": {
        "top1": _FRACTION, "top5": _FRACTION, "fit_seconds": _SECONDS, "seed": _optional(_integer(-(1 << 63), 1 << 64)),
        "dataset": _optional(_STR), "dataset_name": _optional(_STR), "split": _optional(_STR),
        "hardware": _optional(_STR), "recipe": _optional(_STR),
    },
    "reported": {
        "top1": _FRACTION, "top5": _FRACTION, "dataset": _optional(_STR), "split": _optional(_STR),
        "source": _optional(_STR),
    },
    "cpu_latency": _LATENCY_FIELDS,
    "bench_latency": _LATENCY_FIELDS,
    "evaluation": {
        "command": _optional(_STR), "checkpoint": _optional(_STR), "epoch": _optional(_integer(0, 1 << 62)),
        "global_step": _optional(_integer(0, 1 << 62)), "hardware": _optional(_STR), "run_record": _optional(_BOOL),
    },
    "reproduction": {
        "top1": _FRACTION, "top5": _FRACTION, "delta_points": _optional(_number(-100.0, 100.0)),
        "tolerance_points": _optional(_number(0.0, 100.0)), "within_tolerance": _BOOL,
        "fit_seconds": _SECONDS, "hardware": _optional(_STR),
    },
}
_FIELDS = {
    "num_classes": _integer(1, MAX_CLASSES),
    "in_chans": _integer(1, MAX_CHANS),
    "small_input": _BOOL,
    "float_downsample": _BOOL,
    "input_size": _SIZE,
    "mean": _list_of(_number(-1e6, 1e6)),
    "std": _list_of(_number(1e-12, 1e6)),
    "first_conv": _optional(_STR),
    "classifier": _optional(_STR),
    "paper": _optional(_of_type(str, list)),
    "name": _STR,
    "repo_id": _optional(_STR),
}
_REQUIRED = ("format_version", "architecture", "scheme", "num_classes", "in_chans")


def _read_bytes(path: Path) -> bytes:
    """At most ``MAX_CONFIG_BYTES`` of a regular file, without blocking on a FIFO or reading a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a folder" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
        raise CheckpointError(f"{path}: not a regular file ({what})")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes (1 MiB), not a checkpoint config")
    return data


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite(token: str) -> float:
    """A JSON number with a fraction or exponent as a float; past float range (``1e400``) it would be an infinity."""
    value = float(token)
    if not math.isfinite(value):
        shown = token if len(token) <= 40 else f"{token[:40]}..."
        raise ValueError(f"number {shown} is beyond float range")
    return value


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {repeated!r} appears twice")
    return out


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [c for v in level if isinstance(v, (dict, list)) for c in (v.values() if isinstance(v, dict) else v)]
        if depth > MAX_DEPTH:
            break
    return depth


def _parse(path: Path, data: bytes) -> dict[str, Any]:
    if not data.strip():
        raise CheckpointError(f"{path}: empty file, not a checkpoint config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 (byte {data[e.start]:#04x} at offset {e.start})") from None
    try:
        config = json.loads(text, parse_float=_finite, parse_constant=_no_constant, object_pairs_hook=_no_repeats)
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, not a JSON {_kind(config)}")
    if _depth(config) > MAX_DEPTH:
        raise CheckpointError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)")
    return config


def _check_fields(path: Path | str, where: str, value: dict[str, Any], fields: dict[str, Callable]) -> None:
    for key, check in fields.items():
        if key in value:
            problem = check(value[key])
            if problem:
                raise CheckpointError(f"{path}: {where}{key} {problem}")


def _check_converted(path: Path | str, arch: str, converted: Any) -> None:
    """``converted``: a timm model that ``binarize_`` converted, ``{"library": "timm", "keep": [layer names]}``."""
    if not isinstance(converted, dict):
        raise CheckpointError(f"{path}: converted must be an object, not {_kind(converted)}")
    if converted.get("library") != "timm":
        raise CheckpointError(f"{path}: converted.library must be 'timm', not {converted.get('library')!r}")
    keep = converted.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise CheckpointError(f"{path}: converted.keep must be a list of layer names")
    unknown = sorted(set(converted) - {"library", "keep"})
    if unknown:
        raise CheckpointError(f"{path}: converted has unknown keys {unknown}")
    if is_model(arch) or not timm.is_model(arch):
        raise CheckpointError(f"{path}: converted architecture {arch!r} is not a timm model (timm.list_models())")


def check_config(config: dict[str, Any], path: Path | str = "config.json") -> dict[str, Any]:
    """Check the fields of a parsed config (see the module docstring); return it."""
    for key in _REQUIRED:
        if key not in config:
            raise CheckpointError(f"{path}: missing key {key!r}")
    version = config["format_version"]
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown format_version {version!r} (this zoo reads version {FORMAT_VERSION})")
    arch = config["architecture"]
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: architecture must be a string, not {_kind(arch)} {arch!r}")
    converted = config.get("converted")
    if converted is not None:
        _check_converted(path, arch, converted)
    elif not is_model(arch):
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; known: {', '.join(list_models())}")
    scheme = config["scheme"]
    if not isinstance(scheme, dict):
        raise CheckpointError(f"{path}: scheme must be an object, not {_kind(scheme)} {scheme!r}")
    try:
        BinarizeConfig.from_dict(scheme)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad scheme: {e}") from None
    _check_fields(path, "scheme.", scheme, _SCHEME_FIELDS)
    if scheme["name"] not in list_schemes():
        known = ", ".join(list_schemes())
        raise CheckpointError(f"{path}: bad scheme: unknown name {scheme['name']!r}; known: {known}")
    _check_fields(path, "", config, _FIELDS)
    for block, fields in _BLOCKS.items():
        if block in config:
            if not isinstance(config[block], dict):
                raise CheckpointError(f"{path}: {block} must be an object, not {_kind(config[block])}")
            _check_fields(path, f"{block}.", config[block], fields)
    return config


def config_bytes(config: dict[str, Any]) -> bytes:
    """The bytes of ``config.json`` holding ``config``."""
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_config(path: Path) -> dict[str, Any]:
    """Read and check ``config.json`` (see the module docstring)."""
    path = Path(path)
    return check_config(_parse(path, _read_bytes(path)), path)
