"""The safetensors format read without the safetensors library: the loader fuzz tests' oracle of what a file holds.

A file is ``N`` (8 bytes, little-endian unsigned), ``N`` bytes of a UTF-8 JSON object starting with ``{`` (it may
end in spaces), then the data. The object maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin,
end]}`` (offsets into the data), and an optional ``"__metadata__"`` to an object of strings. Every tensor's bytes
are ``prod(shape) * itemsize`` long, little-endian and in C order, and together the tensors cover the data exactly,
without gaps or overlaps. :func:`parse` checks exactly that and returns the tensors' bytes; :func:`value_problems`
lists the tensors whose values the zoo's loader must refuse (:mod:`zoo.hub.tensor_checks`): non-finite floats, a
negative ``alpha`` or ``running_var``, padding bits set past the channel count in the last word of
``weight_bits``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
            "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


class FormatError(ValueError):
    """Not a safetensors file."""


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    data: bytes


def _no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise FormatError("a key appears twice")
    return dict(pairs)


def parse(raw: bytes) -> tuple[dict[str, str] | None, dict[str, Tensor]]:
    """The ``__metadata__`` (None if absent) and the tensors of a safetensors file; :class:`FormatError` if it is
    not one."""
    if len(raw) < 8:
        raise FormatError("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise FormatError(f"header length {n} past the end of the file")
    try:
        text = raw[8 : 8 + n].decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_repeats)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"header not UTF-8 JSON: {e}") from None
    if not text.startswith("{") or not isinstance(header, dict):
        raise FormatError("header not a JSON object starting with '{'")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise FormatError("__metadata__ not an object of strings")
    data = raw[8 + n :]
    spans, tensors = [], {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{name!r}: not a tensor entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise FormatError(f"{name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise FormatError(f"{name!r}: bad shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int and o >= 0 for o in offsets)
                or offsets[0] > offsets[1]):
            raise FormatError(f"{name!r}: bad data_offsets {offsets!r}")
        if offsets[1] - offsets[0] != math.prod(shape) * ITEMSIZE[dtype]:
            raise FormatError(f"{name!r}: data_offsets {offsets} do not hold shape {shape} of {dtype}")
        spans.append((offsets[0], offsets[1]))
        tensors[name] = Tensor(dtype, tuple(shape), data[offsets[0] : offsets[1]])
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise FormatError(f"data has a gap or an overlap at byte {begin}")
        end = stop
    if end != len(data):
        raise FormatError(f"the tensors cover {end} of the {len(data)} data bytes")
    return metadata, tensors


def value_problems(tensors: dict[str, Tensor], channels: dict[str, int]) -> list[str]:
    """The names of the tensors whose values the zoo must refuse; ``channels`` gives the input channel count of
    each ``weight_bits`` tensor."""
    bad = []
    for name, t in tensors.items():
        if t.dtype == "F32":
            values = np.frombuffer(t.data, dtype="<f4")
            negative = (name.endswith(".alpha") or name.endswith(".running_var")) and bool((values < 0).any())
            if not np.isfinite(values).all() or negative:
                bad.append(name)
        elif name in channels:
            used = channels[name] % 32
            last = np.frombuffer(t.data, dtype="<u4").reshape(t.shape)[..., -1]
            if used and bool((last >> np.uint32(used)).any()):
                bad.append(name)
    return bad
