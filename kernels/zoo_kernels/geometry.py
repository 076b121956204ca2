"""A convolution's geometry checked at the ops' boundary: integer arguments in ranges that keep every index and
buffer of the kernels inside int64 and within reason.

Limits (the compiled CPU kernels check the same ones, ``check_conv_geometry`` in ``cpu_kernels.h``)::

    stride, dilation, kernel size   1 .. MAX_GEOMETRY        (2^16)
    padding                         0 .. MAX_GEOMETRY
    planes * N * (H + 2 ph) * (W + 2 pw) * Cw    <= MAX_ELEMENTS   (the zero-padded packed input, all bit planes)
    N * O * Ho * Wo, O * kh * kw * Cw            <= MAX_ELEMENTS   (the output, the weights)

(empty dimensions counted as 1, so that an empty batch does not hide an absurd image).

With ``MAX_ELEMENTS = 2^32`` the largest byte count any kernel derives from these (16 bytes per padded word) is
``2^36``, far from int64's ``2^63``: a stride of ``2^32`` or a padding of ``2^31`` is refused here instead of
overflowing an index or asking for an absurd allocation. An integer is a Python ``int`` or a numpy integer, not a
``bool``; anything else is a ``TypeError``, an out-of-range value a ``ValueError``, each naming the argument and
its value.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

__all__ = ["MAX_ELEMENTS", "MAX_GEOMETRY", "check_conv_sizes", "check_int", "conv_output_size", "conv_pair",
           "is_int"]

MAX_GEOMETRY = 2**16
MAX_ELEMENTS = 2**32

_LOW = {"stride": 1, "dilation": 1, "kernel_size": 1, "padding": 0}


def is_int(value: object) -> bool:
    """A Python or numpy integer, not a bool."""
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def check_int(value: object, name: str, low: int, high: int, what: str) -> int:
    """``value`` as an ``int`` if it is an integer in ``[low, high]``; else a TypeError or ValueError."""
    if not is_int(value):
        raise TypeError(f"{what}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if not low <= value <= high:
        raise ValueError(f"{what}: {name} = {value} is outside [{low}, {high}]")
    return int(value)


def conv_pair(value: object, name: str, what: str) -> list[int]:
    """``stride`` / ``padding`` / ``dilation`` / ``kernel_size`` (``name``) given as an int or a pair of ints, as
    the pair of ints, each in its range: ``[1, MAX_GEOMETRY]``, ``[0, MAX_GEOMETRY]`` for padding."""
    low = _LOW[name]
    if type(value) is int and low <= value <= MAX_GEOMETRY:  # the common cases first: this runs on every call
        return [value, value]
    if type(value) in (list, tuple) and len(value) == 2:
        a, b = value
        if type(a) is int and type(b) is int and low <= a <= MAX_GEOMETRY and low <= b <= MAX_GEOMETRY:
            return [a, b]
    if is_int(value):
        return [check_int(value, name, low, MAX_GEOMETRY, what)] * 2
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{what}: {name} must be an int or a pair of ints, got {value!r} ({type(value).__name__})")
    if len(value) != 2:
        raise ValueError(f"{what}: {name} must be an int or a pair of ints, got {len(value)} values: {value!r}")
    return [check_int(v, f"{name}[{i}]", low, MAX_GEOMETRY, what) for i, v in enumerate(value)]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """``floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1``, as for ``F.conv2d``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_conv_sizes(
    what: str,
    planes: int,
    n: int,
    h: int,
    w: int,
    words: int,
    o: int,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int]:
    """The output size ``(Ho, Wo)`` of a conv of ``planes`` x (N, H, W, ``words``) packed inputs with ``o`` filters
    of ``kernel``, the pairs already checked by :func:`conv_pair`; a ValueError if it is not positive or a buffer
    exceeds :data:`MAX_ELEMENTS`."""
    ho = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    if ho <= 0 or wo <= 0:
        raise ValueError(f"{what}: input {h}x{w} is too small for kernel {kernel[0]}x{kernel[1]} (stride "
                         f"{tuple(stride)}, padding {tuple(padding)}, dilation {tuple(dilation)}): output {ho}x{wo}")
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    n1, o1, words1 = max(n, 1), max(o, 1), max(words, 1)
    sizes = (max(planes, 1) * n1 * hp * wp * words1, n1 * o1 * ho * wo,  # hp, wp >= 1 since ho, wo >= 1
             o1 * kernel[0] * kernel[1] * words1)
    if max(sizes) > MAX_ELEMENTS:
        buffers = (("the padded input (planes, N, H + 2 ph, W + 2 pw, words)", [planes, n, hp, wp, words]),
                   ("the output (N, O, Ho, Wo)", [n, o, ho, wo]),
                   ("the weights (O, kh, kw, words)", [o, *kernel, words]))
        label, dims = next(b for b, size in zip(buffers, sizes, strict=True) if size > MAX_ELEMENTS)
        raise ValueError(f"{what}: {label} {dims} has more than {MAX_ELEMENTS} elements")
    return ho, wo
