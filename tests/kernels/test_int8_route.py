"""zoo_kernels.int8_route: the XNOR conv (and the conv of k-bit inputs) on oneDNN's int8 conv, exact against the
integer reference; its level bytes against the PyTorch definitions; its epilogue against a float64 computation."""

import pytest
import torch
import torch.nn.functional as F
from zoo_kernels import cpu, int8_route, ops, routes
from zoo_kernels.kbit import kbit_levels
from zoo_kernels.packing import pack_signs, pack_weight_signs, unpack_signs, weight_scale
from zoo_kernels.reference import xnor_conv2d_reference

pytestmark = pytest.mark.skipif(not int8_route.int8_route_available(),
                                reason="torch has no oneDNN int8 conv here, or the C++ kernels did not build")


def _inputs(shape):
    x = torch.randn(shape)
    flat = x.view(-1)
    flat[: min(6, flat.numel())] = torch.tensor([-1.0, 1.0, 0.0, -0.0, 5.0, -5.0])[: min(6, flat.numel())]
    return x


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("affine", [False, True])
def test_level_bytes_are_twice_the_levels(bits, layout, affine):
    x = _inputs((3, 37, 5, 4))
    x[1, 3, 2, 1] = float("nan")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    scale = shift = None
    y = x
    if affine:
        scale, shift = torch.rand(37) + 0.5, torch.randn(37)
        y = (x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)).float()
    q, absmean = cpu.level_bytes_cpu(x, bits, True, scale, shift)
    assert q.dtype == torch.uint8 and q.is_contiguous(memory_format=torch.channels_last)
    levels = (y >= 0).int() if bits == 1 else kbit_levels(y, bits)
    assert torch.equal(q.int(), 2 * levels)
    assert int(q[1, 3, 2, 1]) == 0  # NaN: level 0
    ref = y.double().abs().mean(dim=1, keepdim=True)
    torch.testing.assert_close(absmean.double(), ref, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_level_bytes_check_their_arguments():
    with pytest.raises(RuntimeError, match="float32"):
        cpu.level_bytes_cpu(torch.zeros(1, 2, 3, 3, dtype=torch.float64), 1, False)
    with pytest.raises(RuntimeError, match="1 to 7 bits"):
        cpu.level_bytes_cpu(torch.zeros(1, 2, 3, 3), 8, False)
    with pytest.raises(RuntimeError, match="scale and shift"):
        cpu.level_bytes_cpu(torch.zeros(1, 2, 3, 3), 1, False, torch.ones(3), torch.zeros(3))


# (batch, C, O, size, kernel, stride, padding): the odd shapes of the popcount kernels' tests
SHAPES = [
    (1, 1, 3, 5, 3, 1, 1),
    (2, 31, 7, 6, 3, 2, 1),
    (1, 33, 16, 7, 5, 1, 2),
    (2, 65, 9, 5, 1, 1, 0),
    (1, 513, 5, 3, 3, 1, 1),
    (1, 40, 8, 1, 1, 1, 0),
    (1, 40, 8, 1, 3, 1, 1),
    (0, 33, 4, 6, 3, 1, 1),
    (2, 20, 12, 9, 3, 2, 0),
    (1, 24, 6, 8, 3, 1, 2),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}o{}s{}k{}st{}p{}".format(*s))
def test_int8_conv_is_the_exact_xnor_sum(shape):
    n, c, o, size, k, s, p = shape
    x = torch.randn(n, c, size, size).contiguous(memory_format=torch.channels_last)
    w = torch.randn(o, c, k, k)
    w_packed = pack_weight_signs(w)
    out = int8_route.int8_conv2d(x, w_packed, torch.ones(o), c, (s, s), (p, p), (1, 1))
    ref = xnor_conv2d_reference(pack_signs(x), w_packed, c, (s, s), (p, p), (1, 1))
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, ref.float())  # integers below 2^24: float32 holds them exactly


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("shape", SHAPES[:5], ids=lambda s: "n{}c{}o{}s{}k{}st{}p{}".format(*s))
def test_int8_conv_of_kbit_inputs_is_exact(shape, bits):
    n, c, o, size, k, s, p = shape
    x = torch.randn(n, c, size, size) * 0.8
    w = torch.randn(o, c, k, k)
    levels = (1 << bits) - 1
    out = int8_route.int8_conv2d(x, pack_weight_signs(w), torch.ones(o), c, (s, s), (p, p), (1, 1), bits=bits)
    q = (2 * kbit_levels(x, bits) - levels).double()  # n * q_k(x), integers
    ref = F.conv2d(q, torch.where(w >= 0, 1.0, -1.0).double(), None, s, p)
    assert torch.equal(torch.round(out.double() * levels), ref)  # out = int / n, the int exact


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("input_scale", [False, True])
def test_int8_conv_epilogue(input_scale, residual, relu):
    """alpha, K, bias, residual and ReLU against a float64 computation from the signs."""
    c, o = 45, 24
    x = torch.randn(2, c, 7, 6)
    w = torch.randn(o, c, 3, 3)
    alpha, bias = weight_scale(w), torch.randn(o)
    scale, shift = torch.rand(c) + 0.5, torch.randn(c) * 0.3
    y = x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)
    res = torch.randn(2, o, 4, 3)
    signs = torch.where(y >= 0, 1.0, -1.0).double()
    ref = F.conv2d(signs, unpack_signs(pack_weight_signs(w), c, torch.float64), None, 2, 1)
    ref = ref * alpha.double().view(1, -1, 1, 1)
    if input_scale:
        box = torch.full((1, 1, 3, 3), 1 / 9, dtype=torch.float64)
        ref = ref * F.conv2d(y.abs().mean(dim=1, keepdim=True), box, None, 2, 1)
    ref = ref + bias.double().view(1, -1, 1, 1)
    if residual:
        ref = ref + res.double()
    if relu:
        ref = ref.relu()
    out = int8_route.int8_conv2d(x, pack_weight_signs(w), alpha, c, (2, 2), (1, 1), (1, 1),
                                 input_scale=(3, 3) if input_scale else None, bias=bias, norm_scale=scale,
                                 norm_shift=shift, residual=res if residual else None, relu=relu)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("input_scale", [False, True])
@pytest.mark.parametrize("bits", [1, 2])
def test_int8_linear_matches_the_popcount_linear(input_scale, bits):
    x, w, bias = torch.randn(5, 100), torch.randn(17, 100), torch.randn(17)
    w_packed, alpha = pack_weight_signs(w[:, :, None, None]), weight_scale(w[:, :, None, None])
    conv = ops.xnor_conv2d if bits == 1 else lambda *a, **k: ops.kbit_conv2d(*a, bits=bits, **k)
    with routes.force_route("popcount"):
        ref = conv(x[:, :, None, None], w_packed, alpha, 100, 1, input_scale=input_scale, bias=bias)
    with routes.force_route("int8"):
        out = conv(x[:, :, None, None], w_packed, alpha, 100, 1, input_scale=input_scale, bias=bias)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert out.shape == (5, 17, 1, 1)


def test_int8_weights_are_cached_and_follow_in_place_changes():
    c, o = 32, 8
    x = torch.randn(1, c, 5, 5)
    w_packed, alpha = pack_weight_signs(torch.randn(o, c, 3, 3)), torch.ones(o)
    before = int8_route.cached_int8_weights()
    first = int8_route.int8_conv2d(x, w_packed, alpha, c, (1, 1), (1, 1), (1, 1))
    assert int8_route.cached_int8_weights() == before + 1
    assert torch.equal(int8_route.int8_conv2d(x, w_packed, alpha, c, (1, 1), (1, 1), (1, 1)), first)
    assert int8_route.cached_int8_weights() == before + 1  # the same layout, reused
    with torch.no_grad():
        w_packed.bitwise_not_()  # every sign flips, in place (padding bits: none, C = 32)
    assert torch.equal(int8_route.int8_conv2d(x, w_packed, alpha, c, (1, 1), (1, 1), (1, 1)), -first)
    w_packed.data.bitwise_not_()  # through .data: no version counter sees it, the fingerprint does
    assert torch.equal(int8_route.int8_conv2d(x, w_packed, alpha, c, (1, 1), (1, 1), (1, 1)), first)
    fresh = pack_weight_signs(torch.randn(o, c, 3, 3))
    w_packed.data.copy_(fresh)
    assert torch.equal(int8_route.int8_conv2d(x, w_packed, alpha, c, (1, 1), (1, 1), (1, 1)),
                       int8_route.int8_conv2d(x, fresh, alpha, c, (1, 1), (1, 1), (1, 1)))
    assert int8_route.cached_int8_weights() == before + 2  # w_packed's layout, rebuilt, and fresh's
    del w_packed, fresh
    assert int8_route.cached_int8_weights() == before  # the freed tensor's entry is gone


@pytest.mark.parametrize("bits", [1, 2, 7])
@pytest.mark.parametrize("channels", [1, 33, 64, 130])
def test_scale_level_bytes_are_the_epilogue_then_the_next_levels(bits, channels):
    """conv1's epilogue into conv2's input: the bytes and means of scale_epilogue then level_bytes, bit for bit, and
    never the float output."""
    gen = torch.Generator().manual_seed(channels)
    out = torch.randn(3, channels, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last)
    out[0, 0, 1, 2] = float("nan")
    k = torch.rand(3, 1, 5, 7, generator=gen) + 0.1
    bias = torch.randn(channels, generator=gen)
    scale, shift = torch.randn(channels, generator=gen), torch.randn(channels, generator=gen)
    q, absmean = cpu.scale_level_bytes_cpu(out, k, bias, scale, shift, bits)
    v = cpu.scale_epilogue_cpu(out.clone(), k, bias, None, False)
    q_ref, absmean_ref = cpu.level_bytes_cpu(v, bits, True, scale, shift)
    assert q.is_contiguous(memory_format=torch.channels_last) and torch.equal(q, q_ref)
    assert torch.equal(absmean.isnan(), absmean_ref.isnan()) and absmean.isnan().any()  # the NaN's pixel
    assert torch.equal(absmean.nan_to_num(), absmean_ref.nan_to_num())
    y = (v.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1))
    torch.testing.assert_close(absmean.double(), y.abs().mean(1, keepdim=True), rtol=1e-5, atol=1e-6,
                               equal_nan=True)


def test_scale_level_bytes_check_their_arguments():
    out = torch.randn(1, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    k, ones = torch.ones(1, 1, 3, 3), torch.ones(8)
    with pytest.raises(RuntimeError, match="channels_last"):
        cpu.scale_level_bytes_cpu(out.contiguous(), k, None, ones, ones, 1)
    with pytest.raises(RuntimeError, match="1 to 7 bits"):
        cpu.scale_level_bytes_cpu(out, k, None, ones, ones, 8)
    with pytest.raises(RuntimeError, match="scale and shift"):
        cpu.scale_level_bytes_cpu(out, k, None, torch.ones(7), ones, 1)
    with pytest.raises(RuntimeError, match="K must be"):
        cpu.scale_level_bytes_cpu(out, torch.ones(1, 1, 3, 2), None, ones, ones, 1)
    x, wp = torch.randn(1, 8, 3, 3), pack_weight_signs(torch.randn(8, 8, 3, 3))
    q, absmean = cpu.level_bytes_cpu(x, 1, True)
    with pytest.raises(ValueError, match="needs input_scale"):
        int8_route.int8_conv2d_levels(q, absmean, wp, ones, 8, (1, 1), (1, 1), (1, 1), next_norm=(ones, ones, 1))
    with pytest.raises(ValueError, match="no residual or ReLU"):
        int8_route.int8_conv2d_levels(q, absmean, wp, ones, 8, (1, 1), (1, 1), (1, 1), 1, (3, 3), relu=True,
                                      next_norm=(ones, ones, 1))


def test_int8_route_is_not_offered_where_onednn_errs():
    """An output one column (or row) wide with a stride > 1 along it: oneDNN's int8 conv gave wrong sums there, so
    the route choice keeps such convs on the popcount kernel, even with the int8 route forced."""
    assert not int8_route.int8_conv_exact_for((7, 3), (3, 2), (1, 5), (0, 0), (1, 2))
    assert not int8_route.int8_conv_exact_for((3, 7), (2, 3), (5, 1), (0, 0), (2, 1))
    assert int8_route.int8_conv_exact_for((7, 3), (3, 2), (1, 1), (0, 0), (1, 2))
    assert int8_route.int8_conv_exact_for((56, 56), (3, 3), (2, 2), (1, 1), (1, 1))
    gen = torch.Generator().manual_seed(0)
    for c in (1, 8, 40):
        x, w = torch.randn(1, c, 7, 3, generator=gen), torch.randn(8, c, 3, 2, generator=gen)
        wp = pack_weight_signs(w)
        with routes.force_route("int8"), routes.record() as seen:
            out = ops.xnor_conv2d(x, wp, torch.ones(8), c, (3, 2), (1, 5), 0, (1, 2))
        assert [routes.route_of(r) for _, r in seen] == ["popcount"]
        expected = xnor_conv2d_reference(pack_signs(x), wp, c, (1, 5), 0, (1, 2)).float()
        assert torch.equal(out, expected)
