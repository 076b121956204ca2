"""The exact integer reference (zoo_kernels.reference) against float64 F.conv2d of the signs."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from zoo_kernels.packing import pack_signs, pack_weight_signs
from zoo_kernels.reference import conv_output_size, popcount32, xnor_conv2d_reference

# (kernel, stride, padding, dilation)
GEOMETRIES = [(1, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (3, 2, 0, 1)]


def sign(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0).double()


def int_conv(x, w, stride, padding, dilation) -> torch.Tensor:
    """Independent reference: conv2d(sign(x), sign(w)) in float64 (exact for these integer sums)."""
    return F.conv2d(sign(x), sign(w), None, stride, padding, dilation)


@pytest.mark.parametrize("channels", [1, 3, 31, 33, 64, 100])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_matches_conv2d_of_signs(channels, geometry):
    k, s, p, d = geometry
    for batch in (1, 3):
        x = torch.randn(batch, channels, 7, 6)
        x[x.abs() < 0.1] = 0.0
        w = torch.randn(5, channels, k, k)
        out = xnor_conv2d_reference(pack_signs(x), pack_weight_signs(w), channels, s, p, d)
        assert out.dtype == torch.int64
        assert torch.equal(out.double(), int_conv(x, w, s, p, d))


def test_padding_taps_contribute_zero_not_minus_one():
    # All activations negative: every packed bit is 0, the same bits as the zero words of the padding would have.
    x = -torch.ones(1, 40, 4, 4)
    w = torch.ones(2, 40, 3, 3)
    out = xnor_conv2d_reference(pack_signs(x), pack_weight_signs(w), 40, 1, 1, 1)
    assert out[0, 0, 0, 0].item() == -40 * 4  # corner: 4 valid taps of -40; the 5 padded taps add 0
    assert out[0, 0, 1, 1].item() == -40 * 9
    assert torch.equal(out.double(), int_conv(x, w, 1, 1, 1))


def test_rectangular_kernel_and_anisotropic_geometry():
    x, w = torch.randn(2, 45, 9, 7), torch.randn(3, 45, 1, 3)
    stride, padding, dilation = (1, 2), (0, 2), (1, 2)
    out = xnor_conv2d_reference(pack_signs(x), pack_weight_signs(w), 45, stride, padding, dilation)
    assert torch.equal(out.double(), int_conv(x, w, stride, padding, dilation))


def test_popcount32():
    words = torch.tensor([0, 1, -1, -(2**31), 2**31 - 1, 0x0F0F0F0F, -0x0F0F0F10], dtype=torch.int32)
    expected = [bin(v & 0xFFFFFFFF).count("1") for v in words.tolist()]
    assert popcount32(words).tolist() == expected
    rand = torch.randint(-(2**31), 2**31 - 1, (1000,), dtype=torch.int32)
    assert popcount32(rand).tolist() == [bin(v & 0xFFFFFFFF).count("1") for v in rand.tolist()]


def test_output_size():
    for size, k, s, p, d in itertools.product((5, 8), (1, 3), (1, 2), (0, 1, 2), (1, 2)):
        assert conv_output_size(size, k, s, p, d) == F.conv2d(torch.zeros(1, 1, size, 1), torch.zeros(1, 1, k, 1),
                                                              None, (s, 1), (p, 0), (d, 1)).shape[2]


def test_errors():
    x, w = pack_signs(torch.randn(1, 33, 3, 3)), pack_weight_signs(torch.randn(2, 33, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        xnor_conv2d_reference(x, w, 70)
    with pytest.raises(ValueError, match="not positive"):
        xnor_conv2d_reference(x[:, :2, :2], w, 33)
    with pytest.raises(TypeError, match="int32"):
        xnor_conv2d_reference(x.float(), w, 33)
