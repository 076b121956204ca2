"""Cases of the op-boundary fuzz tests, run in the fuzz worker: each builds its inputs from a JSON spec, calls
``zoo_kernels.ops`` (or a compiled variant), and checks the result against references computed here, raising
AssertionError with the first difference.

References: the integer conv is ``F.conv2d`` in float64 of the ±1 (or k-bit) inputs, exact for these sizes, and
``zoo_kernels.reference.xnor_conv2d_reference``; the float outputs ``alpha * K * int + bias (+ residual, ReLU)``
are computed in float64; the packed words are built bit by bit in numpy from ``y >= 0``. Inputs are multiples of
1/4 in [-3, 3] (about one in 25 an exact zero, half of those -0.0), BatchNorm scales in {±1/4, ±1/2, ±1, ±2} and
shifts multiples of 1/8: every dtype drawn holds them, and ``x * scale + shift`` and the k-bit levels are exact in
each, so a sign or a level never depends on rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from zoo_kernels import cpu, ops, routes
from zoo_kernels.packing import pack_weight_signs
from zoo_kernels.reference import xnor_conv2d_reference

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECIALS = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-40, -1e-40, 1e30, -1e30]


def _grid(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    x = torch.randint(-12, 13, shape, generator=g).double() / 4
    x[(x == 0) & (torch.rand(shape, generator=g) < 0.5)] = -0.0
    return x


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` in another memory layout; ``batch_broadcast`` also changes its values (every image is the first)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "channel_stride":  # every other channel of a tensor twice as deep
        return torch.stack([x, torch.full_like(x, 7.0)], 2).flatten(1, 2)[:, ::2]
    if layout == "transposed":  # H and W strides swapped
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "offset_window":  # a window of a larger tensor, with a storage offset
        n, c, h, w = x.shape
        big = torch.full((n, c + 1, h + 2, w + 3), 5.0, dtype=x.dtype)
        big[:, 1:, 1 : h + 1, 2 : w + 2] = x
        return big[:, 1:, 1 : h + 1, 2 : w + 2]
    if layout == "batch_broadcast":  # stride 0 over the batch
        return x[:1].expand(x.shape)
    raise ValueError(f"unknown layout {layout!r}")


def _passed(pair: list[int], form: str) -> Any:
    """A geometry pair as the caller passes it."""
    if form == "int":
        return pair[0]
    if form == "numpy":
        return (np.int64(pair[0]), np.int32(pair[1]))
    return tuple(pair) if form == "tuple" else list(pair)


def _sign(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0).double()  # -0.0 >= 0: +1


def _kbit(y: torch.Tensor, bits: int) -> torch.Tensor:
    """XNOR-Net's k-bit quantizer in float64: ``q = (2 L - n) / n``, ``L = floor(n (clip(y) + 1) / 2 + 1/2)``."""
    n = 2**bits - 1
    level = torch.floor(n * (y.clamp(-1.0, 1.0) + 1.0) / 2.0 + 0.5)
    return (2 * level - n) / n


def _first_difference(got: torch.Tensor, ref: torch.Tensor, bad: torch.Tensor) -> str:
    index = tuple(int(i) for i in bad.nonzero()[0])
    return (f"{int(bad.sum())} of {bad.numel()} values differ; the first at {index}: got {got[index].item()!r}, "
            f"expected {ref[index].item()!r}")


def float_conv(spec: dict[str, Any]) -> dict[str, Any]:
    """``ops.xnor_conv2d`` / ``ops.kbit_conv2d`` against ``alpha * K * conv2d(a, sign(w)) + bias (+ residual, ReLU)``
    in float64, ``a = sign(y)`` or ``q_k(y)``, ``y = x`` or ``x * norm_scale + norm_shift``."""
    g = torch.Generator().manual_seed(spec["seed"])
    n, c, h, w, o = spec["n"], spec["c"], spec["h"], spec["w"], spec["o"]
    kh, kw = spec["kernel_size"]
    st, pd, dl = spec["stride"], spec["padding"], spec["dilation"]
    x = _layout(_grid((n, c, h, w), g).to(DTYPES[spec["dtype"]]), spec["layout"])
    weight = torch.randn(o, c, kh, kw, generator=g)
    weight[torch.rand(weight.shape, generator=g) < 0.05] = 0.0
    alpha = (torch.rand(o, generator=g) + 0.05).to(DTYPES[spec["alpha_dtype"]])
    bias = torch.randn(o, generator=g) if spec["bias"] else None
    scale = shift = None
    y = x.double()
    if spec["norm"]:
        scale = torch.tensor([-2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0])[torch.randint(0, 8, (c,), generator=g)]
        shift = torch.randint(-8, 9, (c,), generator=g).float() / 8
        y = y * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)
    a = _sign(y) if spec["op"] == "xnor" else _kbit(y, spec["bits"])
    integer = F.conv2d(a, _sign(weight), None, st, pd, dl)
    k = torch.ones_like(integer[:, :1])
    if spec["input_scale"]:
        box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64)
        k = F.conv2d(y.abs().mean(dim=1, keepdim=True), box, None, st, pd, dl)
    ref = integer * alpha.float().double().view(1, -1, 1, 1) * k
    magnitude = ref.abs()
    if bias is not None:
        ref, magnitude = ref + bias.double().view(1, -1, 1, 1), magnitude + bias.abs().double().view(1, -1, 1, 1)
    residual = None
    if spec["residual"]:
        residual = torch.randn(ref.shape, generator=g)
        if spec["layout"] == "channels_last":
            residual = residual.contiguous(memory_format=torch.channels_last)
        ref, magnitude = ref + residual.double(), magnitude + residual.abs().double()
    if spec["relu"]:
        ref = ref.clamp_min(0)
    args = (x, pack_weight_signs(weight), alpha, np.int64(c) if spec["channels_form"] == "numpy" else c,
            _passed(spec["kernel_size"], spec["forms"][0]), _passed(st, spec["forms"][1]),
            _passed(pd, spec["forms"][2]), _passed(dl, spec["forms"][3]))
    kwargs = {"input_scale": spec["input_scale"], "bias": bias, "norm_scale": scale, "norm_shift": shift,
              "residual": residual, "relu": spec["relu"]}
    with routes.force_route(spec["route"]):
        if spec["op"] == "xnor":
            out = ops.xnor_conv2d(*args, **kwargs)
        else:
            out = ops.kbit_conv2d(*args, bits=spec["bits"], **kwargs)
    if out.dtype != torch.float32 or out.shape != ref.shape:
        raise AssertionError(f"output {out.dtype} {tuple(out.shape)}, expected torch.float32 {tuple(ref.shape)}")
    bad = (out.double() - ref).abs() > 1e-5 * (ref.abs() + magnitude.amax(dim=(1, 2, 3), keepdim=True) + 1)
    if bad.any():
        raise AssertionError(_first_difference(out, ref, bad))
    return {"outputs": out.numel()}


def _signs_of_levels(y: torch.Tensor, bits: int) -> list[torch.Tensor]:
    """The ±1 planes ``s_b = 2 L_b - 1`` of the k-bit level ``L`` of ``y`` (NaN: level 0), float64."""
    n = 2**bits - 1
    level = torch.nan_to_num(torch.floor(n * (y.clamp(-1.0, 1.0) + 1.0) / 2.0 + 0.5), nan=0.0).long()
    return [((level >> b) & 1).double() * 2 - 1 for b in range(bits)]


def packed_conv(spec: dict[str, Any]) -> dict[str, Any]:
    """The integer conv of packed inputs, exactly: the compiled variant ``spec["variant"]`` (an index into
    ``cpu.available_variants()`` and "auto") and ``ops.xnor_conv2d_packed`` with ``alpha = 1``, no scale, no bias,
    against ``F.conv2d`` of the ±1 planes in float64, ``sum_b 2^b conv(s_b, sign(w))`` for ``bits`` planes; and,
    if ``spec["check_reference"]``, ``xnor_conv2d_reference`` (the pure-PyTorch fallback) against it too."""
    g = torch.Generator().manual_seed(spec["seed"])
    n, c, h, w, o, bits = spec["n"], spec["c"], spec["h"], spec["w"], spec["o"], spec["bits"]
    kh, kw = spec["kernel_size"]
    st, pd, dl = spec["stride"], spec["padding"], spec["dilation"]
    x = _layout(_grid((n, c, h, w), g).to(DTYPES[spec["dtype"]]), spec["layout"])
    weight = torch.randn(o, c, kh, kw, generator=g)
    wp = pack_weight_signs(weight)
    planes = ops.pack_kbit_planes(x, bits) if spec["planes"] else ops.pack_signs(x)[None]
    signs = _signs_of_levels(x.double(), bits) if spec["planes"] else [_sign(x.double())]
    reference = sum(2**b * F.conv2d(s, _sign(weight), None, st, pd, dl) for b, s in enumerate(signs)).long()
    if spec["check_reference"]:
        integer = sum(2**b * xnor_conv2d_reference(p, wp, c, st, pd, dl) for b, p in enumerate(planes))
        if not torch.equal(integer, reference):
            raise AssertionError("xnor_conv2d_reference: " + _first_difference(integer, reference,
                                                                              integer != reference))
    variants = ["auto", *cpu.available_variants()]
    variant = variants[spec["variant"] % len(variants)]
    x_packed = planes if spec["planes"] else planes[0]
    ones = torch.ones(o)
    results = {f"compiled {variant}": cpu.xnor_conv2d_cpu(x_packed, wp, ones, None, None, c, st, pd, dl, variant)}
    if not spec["planes"]:
        results["ops.xnor_conv2d_packed"] = ops.xnor_conv2d_packed(x_packed, wp, ones, None, None, c, st, pd, dl)
    for name, out in results.items():
        if out.dtype != torch.float32 or out.shape != reference.shape:
            raise AssertionError(f"{name}: output {out.dtype} {tuple(out.shape)}, expected {tuple(reference.shape)}")
        if not torch.equal(out.double(), reference.double()):
            raise AssertionError(f"{name}: " + _first_difference(out, reference, out.double() != reference.double()))
    return {"variant": variant, "outputs": reference.numel()}


def _packed_words(bits: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) bools -> (N, H, W, ceil(C / 32)) int32, bit c % 32 of word c // 32 = channel c."""
    n, c, h, w = bits.shape
    words = -(-c // 32)
    padded = np.zeros((n, h, w, words * 32), dtype=np.uint64)
    padded[..., :c] = bits.transpose(0, 2, 3, 1)
    weights = np.uint64(1) << np.arange(32, dtype=np.uint64)
    summed = (padded.reshape(n, h, w, words, 32) * weights).sum(axis=-1, dtype=np.uint64)
    return torch.from_numpy(summed.astype(np.uint32).view(np.int32).copy())


def pack(spec: dict[str, Any]) -> dict[str, Any]:
    """``ops.pack_signs``, ``ops.pack_signs_absmean`` and ``ops.pack_kbit_planes`` against words built bit by bit
    from ``y >= 0`` (NaN: 0) and the k-bit levels, and ``mean_c |y|`` in float64; inputs include NaN, infinities,
    ±0, subnormal and large values (grid values only where a BatchNorm is fused, which keeps ``y`` exact)."""
    g = torch.Generator().manual_seed(spec["seed"])
    n, c, h, w = spec["n"], spec["c"], spec["h"], spec["w"]
    x = _grid((n, c, h, w), g)
    special = torch.rand(x.shape, generator=g) < spec["special_fraction"]
    values = torch.tensor(SPECIALS if not spec["norm"] else SPECIALS[:5], dtype=torch.float64)
    x[special] = values[torch.randint(0, len(values), (int(special.sum()),), generator=g)]
    x = _layout(x.to(DTYPES[spec["dtype"]]), spec["layout"])
    y = x.double()
    scale = shift = None
    if spec["norm"]:
        scale = torch.tensor([-2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0])[torch.randint(0, 8, (c,), generator=g)]
        shift = torch.randint(-8, 9, (c,), generator=g).float() / 8
        y = y * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)
    expected = _packed_words((y >= 0).numpy())
    words = ops.pack_signs(x, scale, shift)
    words2, absmean = ops.pack_signs_absmean(x, scale, shift)
    for name, got in (("pack_signs", words), ("pack_signs_absmean", words2)):
        if got.dtype != torch.int32 or got.shape != expected.shape or not torch.equal(got, expected):
            raise AssertionError(f"{name}: {got.dtype} {tuple(got.shape)}, expected {tuple(expected.shape)}; "
                                 + (_first_difference(got, expected, got != expected)
                                    if got.shape == expected.shape else ""))
    mean = y.abs().mean(dim=1, keepdim=True)
    same = torch.isclose(absmean.double(), mean, rtol=1e-6, atol=1e-30, equal_nan=True)
    if absmean.dtype != torch.float32 or absmean.shape != mean.shape or not same.all():
        raise AssertionError("pack_signs_absmean's mean |y|: " + _first_difference(absmean, mean, ~same))
    bits = spec["bits"]
    planes = ops.pack_kbit_planes(x, bits, scale, shift)
    expected_planes = torch.stack([_packed_words((s > 0).numpy()) for s in _signs_of_levels(y, bits)])
    if planes.shape != expected_planes.shape or not torch.equal(planes, expected_planes):
        raise AssertionError(f"pack_kbit_planes ({bits} bits): {tuple(planes.shape)}, expected "
                             f"{tuple(expected_planes.shape)}; "
                             + (_first_difference(planes, expected_planes, planes != expected_planes)
                                if planes.shape == expected_planes.shape else ""))
    return {"words": words.numel()}


def build_value(spec: dict[str, Any]) -> Any:
    """The Python value a JSON spec stands for: ``{"kind": "int" | "float" | "bool" | "none" | "str" | "bytes" |
    "numpy" | "tensor" | "tuple" | "list" | "dict", ...}``."""
    kind = spec["kind"]
    if kind in ("int", "float", "bool", "str"):
        return {"int": int, "float": float, "bool": bool, "str": str}[kind](spec["value"])
    if kind == "none":
        return None
    if kind == "bytes":
        return spec["value"].encode("latin-1")
    if kind == "numpy":
        return getattr(np, spec["dtype"])(spec["value"])
    if kind == "tensor":
        return torch.tensor(spec["value"])
    if kind in ("tuple", "list"):
        items = [build_value(item) for item in spec["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {"value": build_value(spec["value"])}
    raise ValueError(f"unknown value kind {kind!r}")


def hostile_argument(op: str, argument: str, value: dict[str, Any]) -> dict[str, Any]:
    """Call ``op`` with ``argument`` set to the value ``value`` stands for and every other argument valid (a 1 x 32
    x 5 x 5 input, 4 filters of 1x1). The caller expects an error naming the argument; returning means none came."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, 5, 5, generator=g)
    wp, alpha = pack_weight_signs(torch.randn(4, 32, 1, 1, generator=g)), torch.ones(4)
    xp = ops.pack_signs(x)
    geometry: dict[str, Any] = {"kernel_size": 1, "stride": 1, "padding": 0, "dilation": 1, "channels": 32, "bits": 2}
    raw: dict[str, Any] = {"kernel_size": [1, 1], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1],
                           "channels": 32}
    built = build_value(value)
    geometry[argument], raw[argument] = built, built
    k, s, p, d, ch = (geometry[a] for a in ("kernel_size", "stride", "padding", "dilation", "channels"))
    if op == "xnor_conv2d":
        ops.xnor_conv2d(x, wp, alpha, ch, k, s, p, d, input_scale=True)
    elif op == "kbit_conv2d":
        ops.kbit_conv2d(x, wp, alpha, ch, k, s, p, d, bits=geometry["bits"], input_scale=True)
    elif op == "kbit_conv2d_float64":  # the unfused path: planes packed by the op, one conv per plane
        ops.kbit_conv2d(x.double(), wp, alpha, ch, k, s, p, d, bits=geometry["bits"], input_scale=True)
    elif op == "xnor_conv2d_packed":
        ops.xnor_conv2d_packed(xp, wp, alpha, None, None, ch, s, p, d)
    elif op == "xnor_input_scale":
        ops.xnor_input_scale(x.abs().mean(dim=1, keepdim=True), k, s, p, d)
    elif op == "pack_kbit_planes":
        ops.pack_kbit_planes(x, geometry["bits"])
    elif op == "dispatched":
        torch.ops.zoo_xnor.xnor_conv2d(xp, wp, alpha, None, None, raw["channels"], raw["stride"], raw["padding"],
                                       raw["dilation"])
    elif op == "dispatched_fake":
        with FakeTensorMode() as mode:
            torch.ops.zoo_xnor.xnor_conv2d(mode.from_tensor(xp), mode.from_tensor(wp), mode.from_tensor(alpha), None,
                                           None, raw["channels"], raw["stride"], raw["padding"], raw["dilation"])
    elif op == "compiled_conv":
        torch.ops.zoo_xnor_cpu.xnor_conv2d(xp, wp, alpha, None, None, raw["channels"], raw["stride"], raw["padding"],
                                           raw["dilation"], "auto")
    elif op == "compiled_float_conv":
        torch.ops.zoo_xnor_cpu.xnor_conv2d_float(x, wp, alpha, None, None, None, raw["channels"], raw["kernel_size"],
                                                 raw["stride"], raw["padding"], raw["dilation"], True, None, False,
                                                 "auto")
    elif op == "compiled_input_scale":
        torch.ops.zoo_xnor_cpu.input_scale(x.abs().mean(dim=1, keepdim=True), raw["kernel_size"], raw["stride"],
                                           raw["padding"], raw["dilation"])
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"error": None}


def oversized(spec: dict[str, Any]) -> dict[str, Any]:
    """A conv whose arguments are each in range but whose output is empty or a buffer over the element limit, on
    a small input: ``op`` is "xnor_conv2d", "xnor_conv2d_packed" or "compiled_conv". Returning means no error came."""
    g = torch.Generator().manual_seed(0)
    n, c, h, w, o = spec["n"], spec["c"], spec["h"], spec["w"], spec["o"]
    kh, kw = spec["kernel_size"]
    x = torch.randn(n, c, h, w, generator=g)
    # one zero word seen at every index (stride 0): a huge kernel or filter count costs no memory
    wp = torch.zeros(1, 1, 1, 1, dtype=torch.int32).expand(o, kh, kw, -(-c // 32))
    alpha = torch.ones(1).expand(o)
    st, pd, dl = spec["stride"], spec["padding"], spec["dilation"]
    if spec["op"] == "xnor_conv2d":
        ops.xnor_conv2d(x, wp, alpha, c, (kh, kw), st, pd, dl, input_scale=True)
    elif spec["op"] == "xnor_conv2d_packed":
        ops.xnor_conv2d_packed(ops.pack_signs(x), wp, alpha, None, None, c, st, pd, dl)
    else:
        torch.ops.zoo_xnor_cpu.xnor_conv2d(ops.pack_signs(x), wp, alpha, None, None, c, st, pd, dl, "auto")
    return {"error": None}
