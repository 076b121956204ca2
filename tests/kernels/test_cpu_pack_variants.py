"""Every compiled variant of the CPU activation packing (zoo_kernels.cpu; the table of cpu_pack_ukernels.h: avx512,
avx2, scalar) gives exactly the words of the pure-PyTorch references (zoo_kernels.packing.pack_signs,
zoo_kernels.kbit.pack_kbit_planes), the fused affine as one fma, and the channel mean of |y| within float32 summation
error of float64 and identical across variants, on odd shapes, layouts, dtypes and special values; variants the CPU
lacks skip with the kernel's reason; the ZOO_KERNELS_ISA override and the variant report.
"""

import functools
import os
import subprocess
import sys

import pytest
import torch
import zoo_kernels
from zoo_kernels import cpu
from zoo_kernels.cpu_features import has_feature
from zoo_kernels.kbit import pack_kbit_planes
from zoo_kernels.packing import pack_signs

AVAILABLE = cpu.cpu_kernel_available()
ALL_VARIANTS = ["avx512", "avx2", "scalar"]  # the table's order: auto runs the first the CPU has
ISAS = {"scalar": 1, "avx2": 2, "avx512": 4}  # ZOO_KERNELS_ISA names and the packing's numbers for them
CHANNELS = [1, 31, 32, 33, 65, 513]
SHAPES = [(0, 7, 5), (1, 1, 1), (1, 7, 5), (3, 1, 1), (3, 7, 5), (1, 8, 8), (1, 9, 9)]  # (batch, H, W); NCHW blocks
# of 64 pixels: one partial, one full (8 x 8), a full one and a partial one (9 x 9), ranges over images (batch 3)
# Summation error of the absmean's float32 partial sums (at most 33 terms at C = 513: 32 roundings of 2^-24 each, then
# the double sum and the final rounding to float32), relative to the float64 mean of the same |y|.
ABSMEAN_RTOL = 2.5e-6


def runs(variant: str) -> str:
    """The variant, or a skip with the reason the compiled kernel gives for not running it."""
    if not AVAILABLE:
        pytest.skip("the C++ extension could not be built here")
    if variant not in cpu.available_pack_variants():
        with pytest.raises(RuntimeError) as error:
            cpu.pack_signs_cpu(torch.zeros(1, 1, 1, 1), variant=variant)
        pytest.skip(str(error.value).splitlines()[0])  # e.g. "pack_signs: variant avx512: the CPU lacks avx512bw"
    return variant


def with_specials(x: torch.Tensor) -> torch.Tensor:
    """x with NaN, +-0 and +-inf spread over channels and pixels (sign(+-0) = +1, NaN packs as 0 / level 0)."""
    flat = x.view(-1)
    for start, value in ((0, float("nan")), (3, 0.0), (5, -0.0), (7, float("inf")), (11, float("-inf"))):
        flat[start::13] = value
    return x


def layouts(x: torch.Tensor):
    """x in NCHW, channels_last and two non-contiguous memory layouts (strided width, strided channels_last
    channels), the same values."""
    n, c, h, w = x.shape
    yield "nchw", x
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(n, c, h, 2 * w, dtype=x.dtype)
    wide[..., ::2] = x
    yield "strided", wide[..., ::2]
    deep = torch.zeros(n, 2 * c, h, w, dtype=x.dtype).contiguous(memory_format=torch.channels_last)
    deep[:, ::2] = x
    yield "strided_channels_last", deep[:, ::2]


def grid_affine(gen: torch.Generator, shape, dtype):
    """Inputs on a grid on which y = x * scale + shift is exact in float32 and float64 (multiples of 2^-14 below
    2^7: 21 bits), so the unfused torch product is the fma's value: many exact zeros (+0 and -0) and level
    boundaries, and the specials (inf * 0 is NaN in both)."""
    c = shape[1]
    x = with_specials(torch.randint(-2048, 2049, shape, generator=gen).to(dtype) / 256)
    scale = torch.randint(-256, 257, (c,), generator=gen).float() / 64
    shift = torch.randint(-256, 257, (c,), generator=gen).float() / 64
    shift[::4] = -0.0
    y = x * scale.to(dtype).view(1, -1, 1, 1) + shift.to(dtype).view(1, -1, 1, 1)
    return x, scale, shift, y


def check_absmean(absmean, y, against):
    """absmean (N, 1, H, W) float32: the float64 mean of |y| within float32 summation error, and equal to `against`
    (another variant's), NaN included."""
    assert absmean.dtype == torch.float32 and absmean.shape == (y.shape[0], 1, *y.shape[2:])
    torch.testing.assert_close(absmean.double(), y.double().abs().mean(dim=1, keepdim=True), rtol=ABSMEAN_RTOL,
                               atol=0, equal_nan=True)
    torch.testing.assert_close(absmean, against, rtol=0, atol=0, equal_nan=True)


@functools.cache
def cases(channels: int) -> list:
    """The inputs of the shape tests, shared by the variants' tests (the references are the slow part): per shape and
    dtype, (shape, dtype, affine, the layouts of the input, (scale, shift) or (None, None), the values y to pack)."""
    gen = torch.Generator().manual_seed(channels)
    out = []
    for n, h, w in SHAPES:
        for dtype in (torch.float32, torch.float64):
            plain = with_specials(torch.randn(n, channels, h, w, generator=gen, dtype=dtype) * 1.2)
            x, scale, shift, y = grid_affine(gen, (n, channels, h, w), dtype)
            out.append(((n, channels, h, w), dtype, False, list(layouts(plain)), (None, None), plain))
            out.append(((n, channels, h, w), dtype, True, list(layouts(x)), (scale, shift), y))
    return out


@functools.cache
def expected_signs(channels: int) -> list:
    return [pack_signs(y) for *_, y in cases(channels)]


@functools.cache
def expected_planes(channels: int) -> list:
    return [[pack_kbit_planes(y, bits) for bits in (1, 2, 3, 4)] for *_, y in cases(channels)]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("channels", CHANNELS)
def test_signs_exact_on_odd_shapes(variant, channels):
    runs(variant)
    for (shape, dtype, affine, data, args, y), expected in zip(cases(channels), expected_signs(channels), strict=True):
        for name, x in data:
            where = (variant, shape, dtype, affine, name)
            packed, absmean = cpu.pack_signs_cpu(x, True, *args, variant=variant)
            assert packed.shape == expected.shape and torch.equal(packed, expected), where
            check_absmean(absmean, y, cpu.pack_signs_cpu(x, True, *args, variant="scalar")[1])
            alone, none = cpu.pack_signs_cpu(x, False, *args, variant=variant)  # the kernels without the sums
            assert none is None and torch.equal(alone, expected), where


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("channels", CHANNELS)
def test_kbit_planes_exact_on_odd_shapes(variant, channels):
    runs(variant)
    for (shape, dtype, affine, data, args, _), expected in zip(cases(channels), expected_planes(channels), strict=True):
        for bits, planes in zip((1, 2, 3, 4), expected, strict=True):
            for name, x in data:
                got = cpu.pack_kbit_planes_cpu(x, bits, *args, variant=variant)
                assert got.shape == planes.shape and torch.equal(got, planes), (variant, shape, dtype, bits, affine,
                                                                                name)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_affine_is_one_fma(variant):
    """shift = -fl(x * scale): the fma's y = x * scale - fl(x * scale) is the product's rounding error (its sign:
    whether fl rounded up), where a product rounded before the addition gives +0 (bit 1) everywhere."""
    runs(variant)
    gen = torch.Generator().manual_seed(7)
    for layout in ("nchw", "channels_last"):
        for c in (33, 65):
            x = torch.rand(3, c, 9, 9, generator=gen) + 0.5
            scale = torch.rand(c, generator=gen) + 0.5
            x[0, ::3, 0, 1] = 1.0  # x * scale exact: y = +0 (bit 1)
            shift = -(x[0, :, 0, 1] * scale)  # per channel -fl(x * scale) of the pixel (0, 1) of image 0
            y = x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)  # exact here
            data = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
            packed, absmean = cpu.pack_signs_cpu(data, True, scale, shift, variant=variant)
            assert torch.equal(packed, pack_signs(y))
            rounded = y[0, :, 0, 1]
            assert (rounded < 0).any() and (rounded > 0).any()  # both roundings occur, so both signs are checked
            torch.testing.assert_close(absmean.double(), y.float().double().abs().mean(dim=1, keepdim=True),
                                       rtol=ABSMEAN_RTOL, atol=0)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_half_and_bfloat16_widen_exactly(variant):
    runs(variant)
    x = with_specials(torch.randn(3, 65, 7, 5))
    for dtype in (torch.float16, torch.bfloat16):
        for name, data in layouts(x.to(dtype)):
            packed, absmean = cpu.pack_signs_cpu(data, True, variant=variant)
            assert torch.equal(packed, pack_signs(data.float())), (variant, dtype, name)
            check_absmean(absmean, data.float(), cpu.pack_signs_cpu(data.float(), True, variant="scalar")[1])


def test_bad_variants_are_errors():
    if not AVAILABLE:
        pytest.skip("the C++ extension could not be built here")
    x = torch.randn(1, 3, 2, 2)
    with pytest.raises(ValueError, match="pack variant 'avx1024' is not one of auto, scalar, avx2, avx512"):
        cpu.pack_signs_cpu(x, variant="avx1024")
    with pytest.raises(RuntimeError, match=r"pack_kbit_planes: variant must be 0 \(auto\), 1 \(scalar\), 2 \(avx2\)"):
        torch.ops.zoo_xnor_cpu.pack_kbit_planes(x, 2, None, None, 3)


def test_variants_follow_the_features():
    if not AVAILABLE:
        assert cpu.available_pack_variants() == [] and "fallback" in cpu.pack_info()
        return
    variants = cpu.available_pack_variants()
    assert variants == [v for v in ALL_VARIANTS if v in variants] and variants[-1] == "scalar"
    # the kernel's detection (__builtin_cpu_supports) against torch's cpuinfo (zoo_kernels.cpu_features)
    assert ("avx512" in variants) == all(has_feature(f) for f in ("avx512_f", "avx512_bw", "avx512_vl"))
    assert ("avx2" in variants) <= has_feature("avx2")
    info = cpu.pack_info()
    assert info.startswith("pack: variants " + " ".join(variants) + ", auto: ")
    assert zoo_kernels.kernel_info()["pack"] == info
    if cpu._forced_isa() == 0:
        assert info.endswith(f"auto: {variants[0]}")


@pytest.mark.parametrize("isa", list(ISAS))
def test_forced_isa_reaches_the_packing(isa):
    """set_auto_isa (as cpu.py sets it from ZOO_KERNELS_ISA at load) makes the auto calls run that ISA, or fail with the
    reason and the choices where the CPU lacks it."""
    if not AVAILABLE:
        pytest.skip("the C++ extension could not be built here")
    x = with_specials(torch.randn(2, 33, 9, 9)).contiguous(memory_format=torch.channels_last)
    try:
        torch.ops.zoo_xnor_cpu.set_auto_isa(isa)
        if isa in cpu.available_pack_variants():
            assert cpu.pack_info().endswith(f"auto: ZOO_KERNELS_ISA={isa}")
            assert torch.equal(cpu.pack_signs_cpu(x)[0], pack_signs(x))
            assert torch.equal(cpu.pack_kbit_planes_cpu(x, 2), pack_kbit_planes(x, 2))
        else:
            with pytest.raises(RuntimeError, match=f"pack_signs: ZOO_KERNELS_ISA={isa}, but the CPU lacks .*; "
                                                   "choices here: .*scalar"):
                cpu.pack_signs_cpu(x)
    finally:
        torch.ops.zoo_xnor_cpu.set_auto_isa(cpu._forced_isa())


def test_isa_environment_variable_reaches_the_packing():
    if not AVAILABLE:
        pytest.skip("the C++ extension could not be built here")
    code = ("import torch; from zoo_kernels import cpu; from zoo_kernels.packing import pack_signs; "
            "x = torch.randn(2, 65, 7, 5); assert torch.equal(cpu.pack_signs_cpu(x)[0], pack_signs(x)); "
            "print(cpu.pack_info())")
    result = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, ZOO_KERNELS_ISA="scalar"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "auto: ZOO_KERNELS_ISA=scalar" in result.stdout
