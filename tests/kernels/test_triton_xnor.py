"""The Triton XNOR-popcount conv (zoo_kernels.triton_xnor): exact integers on both routes, tiles, fused epilogue,
strides, validation.

Without a GPU the kernel runs on CPU tensors in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1
before this module imports it); every program step is Python there, so the shapes are small. With a GPU the same
tests run the compiled kernel on CUDA tensors.
"""

import pytest

pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from zoo_kernels import ops  # noqa: E402
from zoo_kernels import triton_xnor as tx  # noqa: E402
from zoo_kernels.packing import pack_signs, pack_weight_signs, weight_scale  # noqa: E402
from zoo_kernels.reference import xnor_conv2d_reference  # noqa: E402

if not tx.INTERPRETED and not torch.cuda.is_available():
    pytest.skip("no GPU, and zoo_kernels.triton_xnor was imported without TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = "cpu" if tx.INTERPRETED else "cuda"

# (channels, batch, kernel, stride, padding, dilation): every channel count, stride, padding, dilation and kernel
# size of the brief appears, without the cost of the full product under the interpreter.
CASES = [
    (3, 1, 3, 1, 1, 1),
    (3, 3, 3, 1, 0, 2),
    (33, 3, 3, 2, 1, 1),
    (33, 1, 1, 2, 0, 1),
    (64, 1, 1, 1, 0, 1),
    (64, 3, 3, 2, 0, 1),
    (70, 3, 3, 1, 2, 2),
    (70, 1, 3, 2, 1, 2),
    (40, 3, (3, 1), (2, 1), (1, 0), (1, 2)),  # asymmetric kernel and geometry
]


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def signed_inputs(batch, channels, out_channels, kernel, h=7, w=6):
    """Random x and w with exact zeros in x (sign(0) = +1)."""
    x = torch.randn(batch, channels, h, w)
    x[x.abs() < 0.1] = 0.0
    return x, torch.randn(out_channels, channels, *pair(kernel))


def run(xp, wp, channels, stride, padding, dilation, alpha=None, scale=None, bias=None, **launch):
    """The kernel on DEVICE; alpha = 1 gives the integer conv as float32 (exact: |int| < 2**24)."""
    dev = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    alpha = torch.ones(wp.shape[0]) if alpha is None else alpha
    out = tx.xnor_conv2d_triton(dev(xp), dev(wp), dev(alpha), dev(scale), dev(bias), channels, pair(stride),
                                pair(padding), pair(dilation), **launch)
    assert out.dtype == torch.float32 and out.device.type == DEVICE
    return out.cpu()


@pytest.mark.parametrize("route", tx.ROUTES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "c{}-n{}-k{}-s{}-p{}-d{}".format(*c))
def test_integer_conv_is_exact(route, case):
    channels, batch, k, s, p, d = case
    x, w = signed_inputs(batch, channels, 5, k)
    xp, wp = pack_signs(x), pack_weight_signs(w)
    ref = xnor_conv2d_reference(xp, wp, channels, s, p, d)
    out = run(xp, wp, channels, s, p, d, route=route)
    assert out.shape == ref.shape
    assert torch.equal(out, ref.float()), (route, case)


@pytest.mark.parametrize("route", tx.ROUTES)
def test_extreme_words(route):
    # all-ones words (int32 -1, 32 set bits), a lone sign bit (channel 31), and all-zero words
    channels = 64
    x = torch.ones(2, channels, 4, 4)
    x[1, :31] = -1.0  # image 1: only channels 31 and 32..63 are >= 0 -> words 0x80000000 and -1
    w = -torch.ones(3, channels, 3, 3)
    w[1] = 1.0
    w[2, 31] = 1.0
    xp, wp = pack_signs(x), pack_weight_signs(w)
    assert int(xp[1, 0, 0, 0]) == -(2**31) and int(xp[0, 0, 0, 0]) == -1 and int(wp[0, 0, 0, 0]) == 0
    ref = xnor_conv2d_reference(xp, wp, channels, 1, 1, 1)
    assert torch.equal(run(xp, wp, channels, 1, 1, 1, route=route), ref.float())
    assert ref[0, 0, 1, 1] == -channels * 9 and ref[0, 1, 0, 0] == channels * 4  # inside / corner, padding is 0


@pytest.mark.parametrize(
    "config",
    [
        tx.TritonXnorConfig("popcount", block_m=16, block_n=16, block_k=1),
        tx.TritonXnorConfig("popcount", block_m=32, block_n=16, block_k=4),
        tx.TritonXnorConfig("dot", block_m=16, block_n=16, block_k=1),
        tx.TritonXnorConfig("dot", block_m=32, block_n=16, block_k=4),
        *tx.AUTOTUNE_CONFIGS,
    ],
    ids=lambda c: f"{c.route}-{c.block_m}x{c.block_n}x{c.block_k}-w{c.num_warps}",
)
def test_tiles_and_every_autotune_config(config):
    # M = 2 * 5 * 4 = 40 pixels and O = 20 filters: with the small tiles, several tiles with a partial last one in
    # both directions; with the GPU's, one partial tile. Cw = 3 words: 3 steps of 1 word per tap, 2 steps of 2 with a
    # masked word in the second, or 1 step of 4 with a masked word.
    x, w = signed_inputs(2, 70, 20, (1, 3), h=5, w=4)
    xp, wp = pack_signs(x), pack_weight_signs(w)
    ref = xnor_conv2d_reference(xp, wp, 70, 1, (0, 1), 1)
    assert torch.equal(run(xp, wp, 70, 1, (0, 1), 1, config=config), ref.float())


def expected_epilogue(x, w, alpha, scale, bias, stride, padding):
    """Independent float64 result: alpha[o] * scale[n, 0, y, x] * conv2d(sign(x), sign(w)) + bias[o]."""
    sign = lambda t: torch.where(t >= 0, 1.0, -1.0).double()  # noqa: E731
    out = F.conv2d(sign(x), sign(w), None, stride, padding) * alpha.double().view(1, -1, 1, 1)
    if scale is not None:
        out = out * scale.double()
    if bias is not None:
        out = out + bias.double().view(1, -1, 1, 1)
    return out


@pytest.mark.parametrize("route", tx.ROUTES)
@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_epilogue(route, with_scale, with_bias):
    x, w = signed_inputs(3, 33, 6, 3, h=5, w=5)
    alpha = weight_scale(w)
    scale = torch.rand(3, 1, 3, 3) + 0.5 if with_scale else None
    bias = torch.randn(6) if with_bias else None
    out = run(pack_signs(x), pack_weight_signs(w), 33, 2, 1, 1, alpha, scale, bias, route=route)
    torch.testing.assert_close(out.double(), expected_epilogue(x, w, alpha, scale, bias, 2, 1), rtol=1e-6,
                               atol=1e-5)


@pytest.mark.parametrize("route", tx.ROUTES)
def test_non_contiguous_inputs(route):
    x, w = signed_inputs(3, 40, 10, 3, h=5, w=6)
    xp, wp = pack_signs(x), pack_weight_signs(w)
    alpha, scale, bias = weight_scale(w), torch.rand(3, 1, 5, 6) + 0.5, torch.randn(10)
    ref = expected_epilogue(x, w, alpha, scale, bias, 1, 1)
    # every operand strided: words every other int32, NCHW-ordered words seen as NHWC, filters and vectors strided
    xp_strided = torch.stack([xp, ~xp], -1).flatten(-2)[..., ::2]
    xp_permuted = xp.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    wp_strided = torch.stack([wp, ~wp], 0).transpose(0, 1).flatten(0, 1)[::2]
    scale_t = scale.transpose(2, 3).contiguous().transpose(2, 3)
    alpha_s, bias_s = torch.stack([alpha, -alpha], 1)[:, 0], torch.stack([bias, -bias], 1)[:, 0]
    for xi in (xp_strided, xp_permuted):
        assert not xi.is_contiguous() and torch.equal(xi, xp)
        out = run(xi, wp_strided, 40, 1, 1, 1, alpha_s, scale_t, bias_s, route=route)
        torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-5)
    assert not (wp_strided.is_contiguous() or scale_t.is_contiguous() or alpha_s.is_contiguous())


def test_through_the_op_with_use_kernel():
    # the float-input op routed to the Triton kernel, against the float64 formula with XNOR-Net's input scale K
    x, w = signed_inputs(2, 33, 4, 3, h=6, w=6)
    wp, alpha, bias = pack_weight_signs(w), weight_scale(w), torch.randn(4)
    calls = []
    kernel = lambda *args: calls.append(1) or tx.xnor_conv2d_triton(*args)  # noqa: E731
    with ops.use_kernel("xnor_conv2d", DEVICE, kernel):
        out = ops.xnor_conv2d(x.to(DEVICE), wp.to(DEVICE), alpha.to(DEVICE), 33, 3, 1, 1, 1, True, bias.to(DEVICE))
    assert calls == [1]
    k = F.conv2d(x.double().abs().mean(dim=1, keepdim=True), torch.full((1, 1, 3, 3), 1 / 9, dtype=torch.float64),
                 None, 1, 1)
    torch.testing.assert_close(out.cpu().double(), expected_epilogue(x, w, alpha, k, bias, 1, 1), rtol=1e-5,
                               atol=1e-5)


def test_empty_batch():
    xp, wp = torch.zeros(0, 5, 5, 2, dtype=torch.int32), torch.zeros(4, 3, 3, 2, dtype=torch.int32)
    assert run(xp, wp, 64, 1, 0, 1).shape == (0, 4, 3, 3)


def test_bad_arguments_are_named():
    xp, wp = torch.zeros(1, 4, 4, 1, dtype=torch.int32), torch.zeros(2, 3, 3, 1, dtype=torch.int32)
    args = (torch.ones(2), None, None, 20, (1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="route must be one of"):
        tx.xnor_conv2d_triton(xp, wp, *args, route="xor")
    with pytest.raises(ValueError, match="contradicts"):
        tx.xnor_conv2d_triton(xp, wp, *args, route="dot", config=tx.TritonXnorConfig("popcount"))
    with pytest.raises(TypeError, match="TritonXnorConfig"):
        tx.xnor_conv2d_triton(xp, wp, *args, config={"route": "dot"})
    with pytest.raises(TypeError, match="w_packed must be a 4D torch.int32"):
        tx.xnor_conv2d_triton(xp, wp.float(), *args)
    with pytest.raises(ValueError, match="20 channels need 1 words; x_packed has 2"):
        tx.xnor_conv2d_triton(torch.zeros(1, 4, 4, 2, dtype=torch.int32), wp, *args)
    with pytest.raises(ValueError, match="block_m must be a positive power of two"):
        tx.TritonXnorConfig(block_m=48)
    with pytest.raises(ValueError, match="tl.dot needs block_m and block_n >= 16"):
        tx.TritonXnorConfig("dot", block_m=8)
    with pytest.raises(ValueError, match="route must be one of"):
        tx.TritonXnorConfig("xnor")


@pytest.mark.skipif(tx.INTERPRETED, reason="the interpreter runs CPU tensors")
def test_cpu_tensors_need_the_interpreter():
    xp, wp = torch.zeros(1, 4, 4, 1, dtype=torch.int32), torch.zeros(2, 3, 3, 1, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        tx.xnor_conv2d_triton(xp, wp, torch.ones(2), None, None, 20, (1, 1), (1, 1), (1, 1))


def test_interpreter_tiles_stay_within_the_block_limit():
    for m, o, cw in ((4096, 64, 2), (16, 512, 16), (3, 5, 1), (100_000, 1024, 64)):
        for route in tx.ROUTES:
            c = tx.interpreter_config(m, o, cw, route)
            per_row = c.block_k * (32 if route == "dot" else c.block_n)
            assert c.route == route and c.block_m * per_row <= 2**20, (m, o, cw, c)
            assert c.block_m >= min(m, 2**20 // per_row) and c.block_n >= min(o, 256) and c.block_k >= min(cw, 16)
