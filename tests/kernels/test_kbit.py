"""zoo_kernels.kbit and the k-bit ops: sign planes that sum to XNOR-Net's k-bit quantizer, and the conv of k-bit
inputs on the popcount kernel against a float64 conv of the quantized input."""

import pytest
import torch
import torch.nn.functional as F
from zoo_kernels import ops
from zoo_kernels.kbit import MAX_BITS, kbit_levels, kbit_plane_weights, pack_kbit_planes
from zoo_kernels.packing import pack_signs, pack_weight_signs, unpack_signs, weight_scale

from zoo.quantizers import kbit_quantize


def _inputs(shape=(2, 37, 5, 6)):
    x = torch.randn(shape) * 0.9
    x.view(-1)[:6] = torch.tensor([-1.0, 1.0, 0.0, -0.0, 5.0, -5.0])  # the ends, zeros, and clipped values
    return x


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_planes_sum_to_the_quantizer(bits):
    x = _inputs()
    planes = pack_kbit_planes(x, bits)
    assert planes.shape == (bits, 2, 5, 6, 2) and planes.dtype == torch.int32
    signs = torch.stack([unpack_signs(p, 37) for p in planes]).double()  # (bits, N, C, H, W) of +-1
    q = sum(w * s for w, s in zip(kbit_plane_weights(bits), signs, strict=True))
    torch.testing.assert_close(q, kbit_quantize(x, bits).double(), rtol=0, atol=1e-6)
    levels = sum((2**b) * (s + 1) / 2 for b, s in enumerate(signs))
    assert torch.equal(levels.int(), kbit_levels(x, bits))  # the exact integer levels


def test_one_bit_is_the_sign_packing_and_nan_is_level_zero():
    x = _inputs()
    assert torch.equal(pack_kbit_planes(x, 1)[0], pack_signs(x))
    x[0, 0, 0, 0] = float("nan")
    assert kbit_levels(x, 3)[0, 0, 0, 0] == 0
    assert all((int(p[0, 0, 0, 0]) & 1) == 0 for p in pack_kbit_planes(x, 3))  # every plane -1


@pytest.mark.parametrize("bits", [0, MAX_BITS + 1, True, 2.0])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        pack_kbit_planes(torch.randn(1, 2, 3, 3), bits)
    with pytest.raises(ValueError, match="bits"):
        ops.pack_kbit_planes(torch.randn(1, 2, 3, 3), bits)


def test_op_with_affine_and_layouts():
    x, scale, shift = _inputs((2, 40, 7, 5)), torch.randn(40), torch.randn(40) * 0.3
    y = torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))
    for layout in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, :, ::1]):
        assert torch.equal(ops.pack_kbit_planes(layout, 2, scale, shift), pack_kbit_planes(y, 2))
        assert torch.equal(ops.pack_kbit_planes(layout, 3), pack_kbit_planes(x, 3))
    assert ops.pack_kbit_planes(torch.randn(0, 40, 3, 3), 2).shape == (2, 0, 3, 3, 2)


def _reference(x, w, bits, stride, padding, dilation, scale=None, shift=None, bias=None, input_scale=False):
    """alpha * K * conv2d(q_k(y), sign(w)) + bias in float64, y = x * scale + shift."""
    y = x if scale is None else torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))
    sw = torch.where(w >= 0, 1.0, -1.0).double() * weight_scale(w).double().view(-1, 1, 1, 1)
    out = F.conv2d(kbit_quantize(y, bits).double(), sw, None, stride, padding, dilation)
    if input_scale:
        box = torch.full((1, 1, *w.shape[2:]), 1.0 / (w.shape[2] * w.shape[3]), dtype=torch.float64)
        out = out * F.conv2d(y.double().abs().mean(1, keepdim=True), box, None, stride, padding, dilation)
    return out if bias is None else out + bias.double().view(1, -1, 1, 1)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize(
    "n, c, o, size, k, stride, padding, dilation",
    [(2, 40, 24, (9, 11), 3, 1, 1, 1), (1, 64, 32, (8, 8), 3, 2, 1, 1), (3, 5, 7, (6, 5), 1, 1, 0, 1),
     (1, 33, 9, (7, 7), 3, 1, 2, 2)],
)
def test_kbit_conv2d_against_a_float64_conv(bits, n, c, o, size, k, stride, padding, dilation):
    x, w = _inputs((n, c, *size)), torch.randn(o, c, k, k)
    out = ops.kbit_conv2d(x, pack_weight_signs(w), weight_scale(w), c, k, stride, padding, dilation, bits=bits)
    expected = _reference(x, w, bits, stride, padding, dilation)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_kbit_conv2d_epilogue_options():
    x, w = _inputs((2, 40, 9, 8)), torch.randn(16, 40, 3, 3)
    scale, shift, bias = torch.randn(40), torch.randn(40) * 0.3, torch.randn(16)
    residual = torch.randn(2, 16, 9, 8)
    out = ops.kbit_conv2d(x.transpose(2, 3).contiguous().transpose(2, 3), pack_weight_signs(w), weight_scale(w), 40,
                          3, 1, 1, 1, bits=2, input_scale=True, bias=bias, norm_scale=scale, norm_shift=shift,
                          residual=residual, relu=True)  # a non-contiguous input
    expected = (_reference(x, w, 2, 1, 1, 1, scale, shift, bias, input_scale=True) + residual.double()).relu()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_kbit_conv2d_edge_cases():
    w = torch.randn(4, 33, 3, 3)
    wp, alpha = pack_weight_signs(w), weight_scale(w)
    assert ops.kbit_conv2d(torch.randn(0, 33, 5, 5), wp, alpha, 33, 3, padding=1).shape == (0, 4, 5, 5)
    x = torch.randn(1, 33, 5, 5)
    x[0, 3, 2, 2] = float("nan")  # level 0: q = -1, a finite output
    assert torch.isfinite(ops.kbit_conv2d(x, wp, alpha, 33, 3, padding=1)).all()
    with pytest.raises(TypeError, match="floating-point|float"):
        ops.kbit_conv2d(torch.ones(1, 33, 5, 5, dtype=torch.int64), wp, alpha, 33, 3)
    with pytest.raises(ValueError, match="channels"):
        ops.kbit_conv2d(torch.randn(1, 32, 5, 5), wp, alpha, 33, 3)
    with pytest.raises(ValueError, match="bits"):
        ops.kbit_conv2d(x, wp, alpha, 33, 3, bits=0)


def test_kbit_conv2d_traces_under_torch_compile():
    w = torch.randn(8, 40, 3, 3)
    wp, alpha = pack_weight_signs(w), weight_scale(w)

    def f(x):
        return ops.kbit_conv2d(x, wp, alpha, 40, 3, padding=1, bits=2)

    x = torch.randn(2, 40, 6, 6)
    # traced: the ops one plane at a time; eager: the compiled kernel's single conv over the planes (other rounding)
    torch.testing.assert_close(torch.compile(f, backend="aot_eager", fullgraph=True)(x), f(x), rtol=1e-6, atol=1e-5)
