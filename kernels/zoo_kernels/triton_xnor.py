"""Triton XNOR-popcount convolution: the GPU kernel of ``zoo_xnor::xnor_conv2d`` (and, interpreted, a CPU check).

What it computes
----------------
With ``a = x_packed`` (N, H, W, Cw) and ``w = w_packed`` (O, kh, kw, Cw) int32 words in the format of
:mod:`zoo_kernels.packing` (bit ``j`` of word ``k`` = channel ``32k + j`` >= 0, padding bits 0)::

    int[n, o, y, x] = sum over the taps (ky, kx) with (iy, ix) inside the image of
                          C - 2 * popcount(a[n, iy, ix, :] ^ w[o, ky, kx, :])
    out[n, o, y, x] = alpha[o] * scale[n, 0, y, x] * int[n, o, y, x] + bias[o]          (float32, NCHW)

    iy = y * sh - ph + ky * dh,     ix = x * sw - pw + kx * dw

exactly as :func:`zoo_kernels.reference.xnor_conv2d_reference` (``int = conv2d(sign(x), sign(w))`` with zero
padding); ``scale`` and ``bias`` are optional (1 and 0).

Algorithm: an implicit GEMM
---------------------------
The GEMM's dimensions are the ``M = N * Ho * Wo`` output pixels ``p = (n * Ho + y) * Wo + x``, the ``O`` filters and
the reduction over ``K = kh * kw * Cw`` words; the im2col matrix is never materialised. A program owns a tile of
``BLOCK_M`` pixels x ``BLOCK_N`` filters of ``int`` in registers, held as (filters, pixels): Triton spreads a warp's
lanes over the last dimension, so each thread keeps one or two pixels' addresses and validity rather than one per
tile row (on sm_90 this took the tiles from 255 registers with spills to 130-240 without). It walks one flat loop
over (tap, block of ``BLOCK_K`` words): each step gathers the ``BLOCK_K x BLOCK_M`` activation words of its pixels at
that tap (NHWC: one pixel's words are contiguous) and the ``BLOCK_N x BLOCK_K`` weight words of the tap, then adds
that step's contribution to ``int``. One flat loop rather than nested (ky, kx, word) loops lets Triton
software-pipeline the loads across taps, which matters because ``Cw`` is small (2 words for 64 channels). The output
store is coalesced: consecutive pixels are consecutive floats of an NCHW row.

Two routes compute a step's contribution; both give the exact integer:

* ``popcount``: ``xor = w[:, :, None] ^ a[None, :, :]`` (BLOCK_N, BLOCK_K, BLOCK_M), ``D = sum_k popcount(xor)``, and
  the step adds ``c_step - 2 * D`` where ``c_step`` = the real channels among its ``32 * BLOCK_K`` bit positions.
  Padding bits and the masked words past ``Cw`` are 0 in both operands, so they never count in ``D``.
* ``dot``: both tiles are unpacked to int8 (bit ``j`` of word ``k`` goes to row / column ``32k + j``, value
  ``2 * bit - 1``) and multiplied with ``tl.dot`` (int8 x int8 -> int32: tensor cores, wgmma on Hopper). The
  activation tile is 0, not -1, where the channel ``32k + j >= C`` (padding bits, masked words) or the tap is off the
  image, so the product is exactly the sum of ``sign(x) * sign(w)`` over the real channels of the valid taps; no
  correction is needed.

Padding correction: a tap whose input position lies on the zero padding contributes 0 (``tl.where`` on the step's
contribution in the popcount route; zero activations in the dot route). Reading the padding as packed 0 words would
count it as C activations of -1, which is wrong: ``F.conv2d`` pads with zeros, not with -1.

Popcount: on NVIDIA GPUs the hardware ``popc.b32`` through ``tl.inline_asm_elementwise``; elsewhere (Triton's
interpreter, where inline asm and libdevice raise, and AMD GPUs) a pure-``tl`` SWAR popcount on uint32, whose
logical shifts do not smear the sign bit of a negative int32 word into the count.

Launch: on the GPU ``triton.autotune`` picks the route and tile sizes per problem size (:data:`AUTOTUNE_CONFIGS`);
a caller can restrict it to one route or force one :class:`TritonXnorConfig`. Under Triton's interpreter
(``TRITON_INTERPRET=1`` when this module is imported: Triton reads it when ``@triton.jit`` decorates the kernel) the
kernel runs on CPU tensors, one program at a time in numpy -- slow, meant for tests -- with the few large tiles of
:func:`interpreter_config` unless a config is given.

Checks: ``tests/kernels/test_triton_xnor.py`` (interpreter on CPU, or the GPU when present) and
``python -m zoo_kernels.check_cuda`` (the compiled kernel on a CUDA GPU, both routes and autotuned).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
import triton.testing

from .ops import _check_conv_args

__all__ = [
    "AUTOTUNE_CONFIGS",
    "INTERPRETED",
    "ROUTES",
    "TritonXnorConfig",
    "candidate_configs",
    "interpreter_config",
    "xnor_conv2d_triton",
]

ROUTES = ("popcount", "dot")


@triton.jit
def _popcount32(v, POPC_ASM: tl.constexpr):
    """Set bits of each int32 word, as int32."""
    if POPC_ASM:
        count = tl.inline_asm_elementwise(
            asm="popc.b32 $0, $1;", constraints="=r,r", args=[v], dtype=tl.int32, is_pure=True, pack=1
        )
    else:
        # SWAR on uint32 (logical shifts): bit counts of 2-bit, 4-bit, 8-bit fields, then the 4 bytes summed. No
        # field overflows, so the interpreter's int64 overflow check (sanitize_overflow) is skipped: it doubles the
        # time of this function there.
        u = v.to(tl.uint32, bitcast=True)
        u = tl.sub(u, (u >> 1) & 0x55555555, sanitize_overflow=False)
        u = tl.add(u & 0x33333333, (u >> 2) & 0x33333333, sanitize_overflow=False)
        u = tl.add(u, u >> 4, sanitize_overflow=False) & 0x0F0F0F0F
        u = tl.add(u, u >> 8, sanitize_overflow=False)
        u = tl.add(u, u >> 16, sanitize_overflow=False)
        count = (u & 0x3F).to(tl.int32)
    return count


# Sizes and large strides vary with the image and batch size: not specialising on them (divisibility by 16) spares a
# recompilation per layer shape. The unit strides (sx_c, sw_c, ss_w, so_w == 1) stay specialised: contiguous loads.
_UNSPECIALIZED = (
    "M", "H", "W", "Ho", "Wo", "sx_n", "sx_h", "sx_w", "sw_o", "sw_h", "sw_w", "ss_n", "ss_h", "so_n", "so_o", "so_h",
)


@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _xnor_conv2d_kernel(
    # pointers
    x_ptr, w_ptr, alpha_ptr, scale_ptr, bias_ptr, out_ptr,
    # sizes: M = N * Ho * Wo output pixels, O filters, C channels in Cw words, input H x W, kernel KH x KW
    M, O, C, Cw, H, W, Ho, Wo, KH, KW,  # noqa: E741 - the GEMM's names
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides, in elements: x_packed (N, H, W, Cw), w_packed (O, KH, KW, Cw), scale (N, 1, Ho, Wo), out (N, O, Ho, Wo)
    sx_n, sx_h, sx_w, sx_c,
    sw_o, sw_h, sw_w, sw_c,
    ss_n, ss_h, ss_w,
    so_n, so_o, so_h, so_w,
    # meta-parameters
    HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr,  # route: int8 tl.dot (True) or xor + popcount (False)
    POPC_ASM: tl.constexpr,  # hardware popc.b32 (NVIDIA) or the pure-tl SWAR popcount
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,  # pixels, filters, words per step
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < O

    ox = offs_m % Wo
    oy = (offs_m // Wo) % Ho
    img = (offs_m // Wo) // Ho
    iy0 = oy * stride_h - pad_h
    ix0 = ox * stride_w - pad_w
    x_pix = x_ptr + img.to(tl.int64) * sx_n  # (BLOCK_M,) int64 offsets: large batches stay in range
    w_fil = w_ptr + offs_n.to(tl.int64) * sw_o
    bit = tl.arange(0, 32)  # bit j of a word (dot route)

    # (filters, pixels) tiles: a warp's lanes go along the pixels, see the module docstring
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
    k_steps = tl.cdiv(Cw, BLOCK_K)
    for step in range(0, KH * KW * k_steps):
        tap = step // k_steps
        k0 = (step % k_steps) * BLOCK_K
        ky = tap // KW
        kx = tap % KW
        iy = iy0 + ky * dil_h
        ix = ix0 + kx * dil_w
        valid = m_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)  # the tap is inside the image
        k = k0 + offs_k
        k_ok = k < Cw
        a = tl.load(
            (x_pix + iy * sx_h + ix * sx_w)[None, :] + k[:, None] * sx_c,
            mask=k_ok[:, None] & valid[None, :], other=0,
        )  # (BLOCK_K, BLOCK_M)
        b = tl.load(
            (w_fil + ky * sw_h + kx * sw_w)[:, None] + k[None, :] * sw_c,
            mask=n_ok[:, None] & k_ok[None, :], other=0,
        )  # (BLOCK_N, BLOCK_K)
        if USE_DOT:
            # row / column 32k + j of the unpacked tiles is bit j of word k (channel 32 (k0 + k) + j)
            real = (32 * k[:, None] + bit[None, :]) < C  # (BLOCK_K, 32): a real channel, not a padding bit
            b_bits = (b[:, :, None] >> bit[None, None, :]) & 1
            a_bits = (a[:, None, :] >> bit[None, :, None]) & 1
            a_sign = tl.where(real[:, :, None] & valid[None, None, :], 2 * a_bits - 1, 0)
            b8 = tl.reshape(2 * b_bits - 1, (BLOCK_N, BLOCK_K * 32)).to(tl.int8)
            a8 = tl.reshape(a_sign, (BLOCK_K * 32, BLOCK_M)).to(tl.int8)
            acc = tl.dot(b8, a8, acc, out_dtype=tl.int32)
        else:
            d = tl.sum(_popcount32(b[:, :, None] ^ a[None, :, :], POPC_ASM), axis=1)  # (BLOCK_N, BLOCK_M)
            c_step = tl.minimum(C - 32 * k0, 32 * BLOCK_K)  # real channels among this step's bits
            acc += tl.where(valid[None, :], c_step - 2 * d, 0)

    # fused epilogue: out = alpha[o] * scale[n, 0, y, x] * int + bias[o]
    res = acc.to(tl.float32) * tl.load(alpha_ptr + offs_n, mask=n_ok, other=0.0)[:, None]
    if HAS_SCALE:
        scale = tl.load(scale_ptr + img.to(tl.int64) * ss_n + oy * ss_h + ox * ss_w, mask=m_ok, other=0.0)
        res = res * scale[None, :]
    if HAS_BIAS:
        res = res + tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[:, None]
    out_pix = img.to(tl.int64) * so_n + oy * so_h + ox * so_w
    out_ptrs = out_ptr + offs_n.to(tl.int64)[:, None] * so_o + out_pix[None, :]
    tl.store(out_ptrs, res, mask=n_ok[:, None] & m_ok[None, :])


# Under the interpreter @triton.jit returns an InterpretedFunction rather than a JITFunction.
INTERPRETED = not isinstance(_xnor_conv2d_kernel, triton.runtime.JITFunction)


@dataclass(frozen=True)
class TritonXnorConfig:
    """One launch configuration: the route (``"popcount"`` or ``"dot"``), the tile of ``block_m`` pixels x
    ``block_n`` filters, ``block_k`` words (``32 * block_k`` channels) per reduction step, and the GPU's
    ``num_warps`` / ``num_stages`` (ignored by the interpreter)."""

    route: str = "popcount"
    block_m: int = 64
    block_n: int = 64
    block_k: int = 2
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"TritonXnorConfig: route must be one of {ROUTES}, got {self.route!r}")
        for name in ("block_m", "block_n", "block_k", "num_warps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0 or v & (v - 1):
                raise ValueError(f"TritonXnorConfig: {name} must be a positive power of two, got {v!r}")
        if self.route == "dot" and min(self.block_m, self.block_n) < 16:
            raise ValueError(f"TritonXnorConfig: tl.dot needs block_m and block_n >= 16, got {self}")
        if self.num_stages < 1:
            raise ValueError(f"TritonXnorConfig: num_stages must be >= 1, got {self.num_stages}")

    def meta(self) -> dict[str, object]:
        """The kernel's tiling meta-parameters."""
        return {"USE_DOT": self.route == "dot", "BLOCK_M": self.block_m, "BLOCK_N": self.block_n,
                "BLOCK_K": self.block_k}

    def to_triton(self) -> triton.Config:
        return triton.Config(self.meta(), num_warps=self.num_warps, num_stages=self.num_stages)


# Candidates for the autotuner on the GPU: popcount tiles keep BLOCK_N * BLOCK_K * BLOCK_M xor words in registers,
# so they are smaller; dot tiles reduce 32 * BLOCK_K int8 channels per tl.dot. None spills registers on sm_90
# (ptxas -v of the ahead-of-time compiled kernel).
AUTOTUNE_CONFIGS: tuple[TritonXnorConfig, ...] = (
    TritonXnorConfig("popcount", 64, 64, 1, 4, 2),
    TritonXnorConfig("popcount", 64, 64, 2, 4, 2),
    TritonXnorConfig("popcount", 128, 64, 1, 8, 2),
    TritonXnorConfig("popcount", 64, 32, 4, 4, 2),
    TritonXnorConfig("dot", 64, 64, 2, 4, 3),
    TritonXnorConfig("dot", 128, 64, 2, 4, 3),
    TritonXnorConfig("dot", 256, 64, 2, 8, 3),
    TritonXnorConfig("dot", 128, 128, 2, 8, 3),
    TritonXnorConfig("dot", 128, 64, 4, 8, 3),
)


def _useful(block_k: int, cw: int) -> bool:
    """Whether ``block_k`` words per step suit ``Cw`` words: not beyond ``Cw`` rounded up to a power of two (more
    would be masked, wasted work)."""
    return block_k <= triton.next_power_of_2(cw)


def candidate_configs(cw: int, route: str | None = None) -> list[TritonXnorConfig]:
    """The :data:`AUTOTUNE_CONFIGS` (of ``route``, if given) that the autotuner times for ``Cw`` words: the useful
    ones, or all of them if none is."""
    configs = [c for c in AUTOTUNE_CONFIGS if route is None or c.route == route]
    return [c for c in configs if _useful(c.block_k, cw)] or configs


def _prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
    """The autotuner's early pruning, as in :func:`candidate_configs`."""
    return [c for c in configs if _useful(c.kwargs["BLOCK_K"], named_args["Cw"])] or configs


# One autotuner over both routes, and one per route (they share the compiled kernels of _xnor_conv2d_kernel). Each
# candidate is timed for 25 ms rather than Triton's default 100 ms: enough for kernels of microseconds, and the first
# call of each layer shape (which autotunes) returns sooner.
_AUTOTUNED = {
    route: triton.autotune(
        configs=[c.to_triton() for c in AUTOTUNE_CONFIGS if route is None or c.route == route],
        key=["M", "O", "Cw", "KH", "KW", "stride_h", "stride_w"],
        prune_configs_by={"early_config_prune": _prune},
        do_bench=functools.partial(triton.testing.do_bench, warmup=5, rep=25),
    )(_xnor_conv2d_kernel)
    for route in (None, *ROUTES)
}

_MAX_BLOCK_NUMEL = 1 << 20  # Triton's limit on the elements of one block tensor


def interpreter_config(m: int, o: int, cw: int, route: str = "popcount") -> TritonXnorConfig:
    """Tiles for Triton's interpreter, where every loop step of every program costs milliseconds of Python whatever
    its size: the fewest programs and steps that keep each block tensor (the (BLOCK_N, BLOCK_K, BLOCK_M) xor words,
    or the unpacked (32 * BLOCK_K, BLOCK_M) activation tile) within Triton's limit of 2**20 elements."""
    block_k = min(triton.next_power_of_2(cw), 16)
    block_n = max(16, min(triton.next_power_of_2(o), 256))
    per_row = block_k * (32 if route == "dot" else block_n)
    block_m = max(16, min(triton.next_power_of_2(m), _MAX_BLOCK_NUMEL // per_row))
    return TritonXnorConfig(route, block_m, block_n, block_k)


def xnor_conv2d_triton(
    x_packed: torch.Tensor,
    w_packed: torch.Tensor,
    alpha: torch.Tensor,
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    channels: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    *,
    route: str | None = None,
    config: TritonXnorConfig | None = None,
) -> torch.Tensor:
    """``out[n, o, y, x] = alpha[o] * scale[n, 0, y, x] * int[n, o, y, x] + bias[o]``, float32 (N, O, Ho, Wo).

    The arguments are those of ``zoo_xnor::xnor_conv2d`` (see :mod:`zoo_kernels.ops`); ``int`` is exactly
    :func:`zoo_kernels.reference.xnor_conv2d_reference`. Tensors may have any strides.

    Launch: ``config`` forces a route and tile. Otherwise the GPU autotunes over :data:`AUTOTUNE_CONFIGS` (those of
    ``route`` only, when given: ``"popcount"`` or ``"dot"``) and the interpreter uses :func:`interpreter_config`
    (``route`` or ``"popcount"``). CUDA tensors run compiled; CPU tensors need the interpreter (``TRITON_INTERPRET=1``
    set before this module is imported).
    """
    ho, wo = _check_conv_args(x_packed, w_packed, alpha, scale, bias, channels, stride, padding, dilation)
    if route is not None and route not in ROUTES:
        raise ValueError(f"xnor_conv2d_triton: route must be one of {ROUTES} or None, got {route!r}")
    if config is not None:
        if not isinstance(config, TritonXnorConfig):
            raise TypeError(f"xnor_conv2d_triton: config must be a TritonXnorConfig, got {type(config).__name__}")
        if route is not None and config.route != route:
            raise ValueError(f"xnor_conv2d_triton: route {route!r} contradicts config.route {config.route!r}")
    device = x_packed.device
    if device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"xnor_conv2d_triton: tensors on {device} need Triton's interpreter, but this module was imported with "
            "the kernel compiled for the GPU; set TRITON_INTERPRET=1 before importing zoo_kernels.triton_xnor"
        )
    n, h, w, cw = x_packed.shape
    o, kh, kw, _ = w_packed.shape
    out = torch.empty((n, o, ho, wo), dtype=torch.float32, device=device)
    m = n * ho * wo
    if m == 0 or o == 0:
        return out
    alpha = alpha.contiguous()  # the kernel reads alpha and bias with stride 1
    bias = None if bias is None else bias.contiguous()
    # The pointer arguments must be real tensors; alpha stands in for an absent scale / bias (never read).
    scale_arg = alpha if scale is None else scale
    bias_arg = alpha if bias is None else bias
    ss = (0, 0, 0) if scale is None else (scale.stride(0), scale.stride(2), scale.stride(3))
    args = (
        x_packed, w_packed, alpha, scale_arg, bias_arg, out,
        m, o, channels, cw, h, w, ho, wo, kh, kw,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        *x_packed.stride(), *w_packed.stride(), *ss, *out.stride(),
    )
    flags = {
        "HAS_SCALE": scale is not None,
        "HAS_BIAS": bias is not None,
        # popc.b32 is PTX: NVIDIA only, and never under the interpreter
        "POPC_ASM": not INTERPRETED and torch.version.hip is None,
    }
    if config is None and INTERPRETED:
        config = interpreter_config(m, o, cw, route or "popcount")
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        if config is None:
            grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(o, meta["BLOCK_N"]))  # noqa: E731
            _AUTOTUNED[route][grid](*args, **flags)
        else:
            grid = (triton.cdiv(m, config.block_m), triton.cdiv(o, config.block_n))
            _xnor_conv2d_kernel[grid](*args, **flags, **config.meta(), num_warps=config.num_warps,
                                      num_stages=config.num_stages)
    return out
