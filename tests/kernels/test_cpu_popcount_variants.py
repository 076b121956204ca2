"""Every variant of the CPU popcount conv's table (zoo_kernels.cpu.variant_table: scalar, AVX2 pixel and pair blocks,
AVX-512 VPOPCNTDQ) is exact against the integer reference on odd shapes, and its epilogue gives the scalar one's
floats bit for bit; variants the CPU lacks skip with the kernel's reason; the ZOO_KERNELS_ISA override and the
feature report.
"""

import itertools
import os
import subprocess
import sys

import pytest
import torch
from zoo_kernels import cpu
from zoo_kernels.cpu_features import has_feature
from zoo_kernels.packing import pack_signs, pack_weight_signs
from zoo_kernels.reference import xnor_conv2d_reference

AVAILABLE = cpu.cpu_kernel_available()
TABLE = cpu.variant_table()  # every compiled variant, in the order auto prefers them
ALL_VARIANTS = [row["name"] for row in TABLE]
ISAS = list(dict.fromkeys(row["isa"] for row in TABLE))  # the names ZOO_KERNELS_ISA takes


def runs(variant: str) -> str:
    """The variant, or a skip with the reason the compiled kernel gives for not running it."""
    if not AVAILABLE:
        pytest.skip("the C++ extension could not be built here")
    if variant not in cpu.available_variants():
        row = next(r for r in TABLE if r["name"] == variant or r["isa"] == variant)
        assert not row["runs"] and row["reason"].startswith("the CPU lacks ")
        xp, wp = pack_signs(torch.randn(1, 1, 1, 1)), pack_weight_signs(torch.randn(1, 1, 1, 1))
        with pytest.raises(RuntimeError) as error:
            cpu.xnor_conv2d_cpu(xp, wp, torch.ones(1), None, None, 1, (1, 1), (0, 0), (1, 1), variant)
        pytest.skip(str(error.value).splitlines()[0])  # e.g. "... variant avx512: the CPU lacks avx512vpopcntdq"
    return variant


def integer_conv(x, w, stride, padding, variant, planes=None):
    """The kernel's output with alpha = 1, no K, no bias: the integer sums (exact in float32 here), as int64."""
    xp = pack_signs(x) if planes is None else planes
    out = cpu.xnor_conv2d_cpu(xp, pack_weight_signs(w), torch.ones(w.shape[0]), None, None, w.shape[1],
                              (stride, stride), (padding, padding), (1, 1), variant)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, out.round())
    return out.to(torch.int64)


def reference(x, w, stride, padding):
    return xnor_conv2d_reference(pack_signs(x), pack_weight_signs(w), w.shape[1], stride, padding, 1).to(torch.int64)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("channels", [1, 31, 33, 65, 513])
def test_exact_on_odd_shapes(variant, channels):
    runs(variant)
    gen = torch.Generator().manual_seed(channels)
    # (kernel, stride, padding, batch, size, filters): 1x1 / 3x3 / 5x5, stride 2, padding 0-2, batch 0 and 1, 1x1
    # images (every tap but the centre on the padding), filters not a multiple of 8 and more than one 32-filter block,
    # pixel counts not a multiple of the register block's rows
    shapes = [(1, 7, 9), (1, 1, 1), (0, 5, 3), (1, 11, 70)]  # (batch, size, filters)
    for (k, s, p), (n, size, o) in itertools.product(itertools.product((1, 3, 5), (1, 2), (0, 1, 2)), shapes):
        if 2 * p + size < k:  # no output
            continue
        x = torch.randn(n, channels, size, size, generator=gen)
        x[x.abs() < 0.05] = 0.0  # sign(0) = +1
        w = torch.randn(o, channels, k, k, generator=gen)
        got, expected = integer_conv(x, w, s, p, variant), reference(x, w, s, p)
        assert got.shape == expected.shape and torch.equal(got, expected), (variant, channels, k, s, p, n, size, o)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("filters", [1, 7, 8, 9, 31, 32, 33, 100, 128, 130, 257])
def test_exact_for_every_filter_tail(variant, filters):
    # the AVX-512 kernel's vectors of 8 filters (masked stores), blocks of 32 and the driver's panels of 128, over
    # 3 x 5 x 4 = 60 rows per image (10 register blocks of 6) and 2 x 5 x 4 + 1 rows
    runs(variant)
    for n, c in ((3, 70), (1, 7)):
        x, w = torch.randn(n, c, 5, 4), torch.randn(filters, c, 3, 3)
        assert torch.equal(integer_conv(x, w, 1, 1, variant), reference(x, w, 1, 1)), (variant, filters, n, c)
    x, w = torch.randn(1, 7, 9, 1), torch.randn(filters, 7, 1, 1)  # 9 rows: 6 + 3
    assert torch.equal(integer_conv(x, w, 1, 0, variant), reference(x, w, 1, 0))


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("bits", [2, 4])
def test_exact_over_kbit_planes(variant, bits):
    # 5D x_packed: int = sum_b 2^b int_b (Horner sums over the planes' micro-kernel calls)
    runs(variant)
    for c, o, k, s, p, size in [(33, 9, 3, 1, 1, 7), (65, 40, 3, 2, 2, 9), (513, 17, 1, 1, 0, 5), (1, 3, 5, 1, 2, 3)]:
        x, w = torch.randn(bits, 2, c, size, size), torch.randn(o, c, k, k)
        planes = torch.stack([pack_signs(plane) for plane in x])
        expected = sum((2**b) * reference(x[b], w, s, p) for b in range(bits))
        assert torch.equal(integer_conv(None, w, s, p, variant, planes), expected), (variant, bits, c, o, k, s, p)


def test_variants_follow_the_features():
    if not AVAILABLE:
        assert cpu.available_variants() == [] and "fallback" in cpu.kernel_info()
        return
    info, variants = cpu.kernel_info(), cpu.available_variants()
    for feature in ("avx2", "avx512bw", "avx512vpopcntdq", "avx512_vnni", "amx_int8", "amx_bf16"):
        assert f"+{feature}" in info or f"-{feature}" in info, feature
    assert variants[-1] == "scalar" and variants == [r["name"] for r in TABLE if r["runs"]]
    assert ALL_VARIANTS[-1] == "scalar" and ("x86_64" not in os.uname().machine
                                            or set(ALL_VARIANTS) == {"scalar", "avx2", "avx2_pairs", "avx512"})
    assert ("avx512" in variants) == ("+avx512bw" in info and "+avx512vpopcntdq" in info)
    assert "variants " + " ".join(variants) in info
    # the kernel's detection (__builtin_cpu_supports) against torch's cpuinfo (zoo_kernels.cpu_features)
    for ours, torchs in [("avx2", "avx2"), ("avx512bw", "avx512_bw"), ("avx512vpopcntdq", "avx512_vpopcntdq"),
                         ("avx512_vnni", "avx512_vnni"), ("amx_int8", "amx_int8"), ("amx_bf16", "amx_bf16")]:
        assert (f"+{ours}" in info) == has_feature(torchs), ours


@pytest.mark.parametrize("isa", ISAS)
def test_forced_isa_through_the_epilogue(isa):
    """ZOO_KERNELS_ISA's effect (set_auto_isa, as cpu.py sets it at load) on the calls without a variant: the float
    input conv with BatchNorm affine, K, bias, residual and ReLU gives the floats of the scalar kernel's steps."""
    runs(isa)
    gen = torch.Generator().manual_seed(3)
    for c, o, k, s, p, size, n in [(33, 9, 3, 1, 1, 7, 2), (65, 70, 3, 2, 1, 9, 1), (513, 16, 1, 1, 0, 4, 1),
                                   (31, 5, 5, 1, 2, 1, 1)]:
        x, w = torch.randn(n, c, size, size, generator=gen), torch.randn(o, c, k, k, generator=gen)
        wp, alpha, bias = pack_weight_signs(w), torch.rand(o, generator=gen) + 0.5, torch.randn(o, generator=gen)
        affine = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
        packed, absmean = cpu.pack_signs_cpu(x, True, *affine)
        scale = cpu.input_scale_cpu(absmean, (k, k), (s, s), (p, p), (1, 1))
        expected = cpu.xnor_conv2d_cpu(packed, wp, alpha, scale, bias, c, (s, s), (p, p), (1, 1), "scalar")
        residual = torch.randn(expected.shape, generator=gen)
        expected = (expected + residual).relu()
        try:
            torch.ops.zoo_xnor_cpu.set_auto_isa(isa)
            got = cpu.xnor_conv2d_float_cpu(x, wp, alpha, bias, *affine, c, (k, k), (s, s), (p, p), (1, 1), True,
                                            residual, True)
            planes = cpu.kbit_conv2d_float_cpu(x, wp, alpha, bias, *affine, c, (k, k), (s, s), (p, p), (1, 1), 2,
                                               False, None, False)
        finally:
            torch.ops.zoo_xnor_cpu.set_auto_isa(cpu._forced_isa())  # as loaded
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        two_bit = cpu.pack_kbit_planes_cpu(x, 2, *affine)
        torch.testing.assert_close(planes, cpu.xnor_conv2d_cpu(two_bit, wp, alpha / 3, None, bias, c, (s, s), (p, p),
                                                               (1, 1), "scalar"), rtol=0, atol=0)


def _subprocess(isa: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ZOO_KERNELS_ISA=isa)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


_CONV = """
import torch
from zoo_kernels import cpu
from zoo_kernels.packing import pack_signs, pack_weight_signs
from zoo_kernels.reference import xnor_conv2d_reference
x, w = torch.randn(2, 70, 9, 7), torch.randn(40, 70, 3, 3)
out = cpu.xnor_conv2d_cpu(pack_signs(x), pack_weight_signs(w), torch.ones(40), None, None, 70, (1, 1), (1, 1), (1, 1))
assert torch.equal(out.double(), xnor_conv2d_reference(pack_signs(x), pack_weight_signs(w), 70, 1, 1, 1).double())
print(cpu.kernel_info())
"""


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_explicit_variant_through_the_epilogue(variant):
    """Each variant named in the float-input call (as the route choice times them): the same floats as scalar, with
    the BatchNorm affine, K, bias, residual and ReLU, 1 and 2 bits."""
    runs(variant)
    gen = torch.Generator().manual_seed(5)
    for c, o, k, s, p, size, n in [(33, 9, 3, 1, 1, 7, 2), (65, 70, 3, 2, 1, 9, 1), (64, 128, 3, 1, 1, 6, 3)]:
        x, w = torch.randn(n, c, size, size, generator=gen), torch.randn(o, c, k, k, generator=gen)
        wp, alpha, bias = pack_weight_signs(w), torch.rand(o, generator=gen) + 0.5, torch.randn(o, generator=gen)
        affine = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
        args = (x, wp, alpha, bias, *affine, c, (k, k), (s, s), (p, p), (1, 1))
        residual = torch.randn(n, o, (size + 2 * p - k) // s + 1, (size + 2 * p - k) // s + 1, generator=gen)
        for call, extra in ((cpu.xnor_conv2d_float_cpu, (True,)), (cpu.kbit_conv2d_float_cpu, (2, True))):
            expected = call(*args, *extra, residual, True, "scalar")
            torch.testing.assert_close(call(*args, *extra, residual, True, variant), expected, rtol=0, atol=0)


@pytest.mark.parametrize("isa", ISAS)
def test_isa_environment_variable(isa):
    if not AVAILABLE:
        pytest.skip("the C++ extension could not be built here")
    result = _subprocess(isa, _CONV)
    if isa in cpu.available_variants():
        assert result.returncode == 0, result.stderr
        assert f"auto: ZOO_KERNELS_ISA={isa}" in result.stdout
    else:  # an auto call on a CPU without it: the error names the ISA, the reason and the choices
        assert result.returncode != 0
        assert f"ZOO_KERNELS_ISA={isa}, but the CPU lacks " in result.stderr and "choices here: " in result.stderr
        assert "scalar" in result.stderr.split("choices here: ", 1)[1]


def test_unknown_isa_is_an_error():
    result = _subprocess("avx1024", "from zoo_kernels import cpu; cpu.cpu_kernel_available()")
    assert result.returncode != 0
    assert "ZOO_KERNELS_ISA='avx1024' is not one of " + ", ".join(ISAS) in result.stderr


# (batch, channels, filters, size, kernel, stride, padding): odd channel and filter counts, one panel of 128 filters
# and several (129, 256, 300: a pixel block's rows filled panel by panel), a stride-2 conv1, batch 0, a 1x1 image
_PAIR_SHAPES = [(2, 64, 64, 9, 3, 1, 1), (1, 33, 40, 7, 3, 2, 1), (3, 5, 128, 6, 1, 1, 0), (1, 64, 96, 5, 3, 1, 2),
                (0, 8, 8, 5, 3, 1, 1), (1, 1, 1, 1, 1, 1, 0), (2, 16, 129, 5, 3, 1, 1), (1, 32, 256, 7, 3, 2, 1),
                (1, 8, 300, 1, 1, 1, 0)]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("shape", _PAIR_SHAPES)
@pytest.mark.parametrize("k1, k2", [(True, True), (False, True), (True, False)])
def test_a_pair_through_packed_signs_is_the_two_convs_bit_for_bit(variant, shape, k1, k2):
    # conv1 -> BatchNorm -> sign -> conv2 with conv1 writing conv2's packed signs and mean |.| (never its float
    # output): the same signs, means and final floats as conv1's float output packed by pack_signs, then conv2
    runs(variant)
    n, c, o, size, k, s, p = shape
    gen = torch.Generator().manual_seed(c * 131 + o)
    x = torch.randn(n, c, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    w1, w2 = pack_weight_signs(torch.randn(o, c, k, k, generator=gen)), pack_weight_signs(torch.randn(o, o, 3, 3,
                                                                                                      generator=gen))
    a1, b1 = torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen)
    alpha1, bias1, alpha2, bias2 = (torch.rand(o, generator=gen), torch.randn(o, generator=gen),
                                    torch.rand(o, generator=gen), torch.randn(o, generator=gen))
    a2, b2 = torch.randn(o, generator=gen), 0.1 * torch.randn(o, generator=gen)
    conv1 = ((k, k), (s, s), (p, p), (1, 1))
    conv2 = ((3, 3), (1, 1), (1, 1), (1, 1))
    v = cpu.xnor_conv2d_float_cpu(x, w1, alpha1, bias1, a1, b1, c, *conv1, k1, variant=variant)
    residual = torch.randn(v.shape, generator=gen).contiguous(memory_format=torch.channels_last)
    want = cpu.xnor_conv2d_float_cpu(v, w2, alpha2, bias2, a2, b2, o, *conv2, k2, residual, True, variant)
    want_signs, want_mean = cpu.pack_signs_cpu(v, k2, a2, b2)
    signs, mean = cpu.xnor_conv2d_float_signs_cpu(x, w1, alpha1, bias1, a1, b1, c, *conv1, k1, a2, b2, k2, variant)
    out = cpu.xnor_conv2d_signs_cpu(signs, mean, w2, alpha2, bias2, o, *conv2, residual, True, variant)
    assert torch.equal(signs, want_signs)
    assert (mean is None) == (not k2) and (mean is None or torch.equal(mean, want_mean))
    assert torch.equal(out, want)
