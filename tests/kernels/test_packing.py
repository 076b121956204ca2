"""Sign packing (zoo_kernels.packing): bit layout, sign(0) = +1, padding bits, round trip, layouts and dtypes."""

import pytest
import torch
from zoo_kernels.packing import num_words, pack_signs, pack_weight_signs, unpack_signs, weight_scale

CHANNELS = [1, 3, 31, 32, 33, 64, 100]


def sign(t: torch.Tensor) -> torch.Tensor:
    """The project's sign: +1 where t >= 0 (so sign(0) = +1), -1 elsewhere (NaN included)."""
    return torch.where(t >= 0, 1.0, -1.0)


def expected_words(x: torch.Tensor) -> torch.Tensor:
    """Independent bit-by-bit packing with Python ints: bit j of word k = [x[n, 32k + j, h, w] >= 0]."""
    n, c, h, w = x.shape
    cw = (c + 31) // 32
    out = torch.zeros(n, h, w, cw, dtype=torch.int32)
    nonneg = (x >= 0).tolist()
    for i in range(n):
        for y in range(h):
            for z in range(w):
                for k in range(cw):
                    word = sum(1 << j for j in range(32) if 32 * k + j < c and nonneg[i][32 * k + j][y][z])
                    out[i, y, z, k] = word - (1 << 32) if word >= 1 << 31 else word  # two's complement
    return out


def test_num_words():
    assert [num_words(c) for c in (1, 31, 32, 33, 64, 65, 512)] == [1, 1, 1, 2, 2, 3, 16]


@pytest.mark.parametrize("channels", CHANNELS)
def test_pack_matches_bitwise_definition(channels):
    x = torch.randn(2, channels, 3, 4)
    x[x.abs() < 0.2] = 0.0  # exact zeros are +1
    packed = pack_signs(x)
    assert packed.dtype == torch.int32 and packed.shape == (2, 3, 4, num_words(channels))
    assert torch.equal(packed, expected_words(x))


def test_bit_order_and_sign_bit():
    x = -torch.ones(1, 33, 1, 1)
    x[0, [0, 5, 31, 32], 0, 0] = torch.tensor([0.0, 2.0, 1.0, 3.0])
    words = pack_signs(x)[0, 0, 0].tolist()
    assert words[0] == (1 << 0) + (1 << 5) - (1 << 31)  # channel 31 is bit 31: a negative int32
    assert words[1] == 1  # channel 32 is bit 0 of word 1; bits 1..31 of word 1 are padding, 0


def test_padding_bits_are_zero():
    packed = pack_signs(torch.ones(1, 33, 2, 2))  # all +1: real bits 1, padding bits must stay 0
    assert (packed[..., 0] == -1).all()  # 32 ones
    assert (packed[..., 1] == 1).all()


def test_zero_and_negative_zero_pack_as_plus_one_nan_as_minus_one():
    x = torch.tensor([0.0, -0.0, float("nan"), -1e-30, 1e-30, float("inf"), float("-inf")]).view(1, 7, 1, 1)
    assert pack_signs(x)[0, 0, 0, 0].item() == 0b0110011


@pytest.mark.parametrize("channels", CHANNELS)
def test_round_trip(channels):
    x = torch.randn(3, channels, 5, 2)
    x[0, 0] = 0.0
    signs = unpack_signs(pack_signs(x), channels)
    assert signs.shape == x.shape and signs.dtype == torch.float32
    assert torch.equal(signs, sign(x))


def test_weight_packing_layout_and_round_trip():
    w = torch.randn(5, 40, 3, 2)
    packed = pack_weight_signs(w)
    assert packed.shape == (5, 3, 2, 2)
    assert torch.equal(packed, expected_words(w))
    assert torch.equal(unpack_signs(packed, 40), sign(w))


def test_non_contiguous_inputs():
    x = torch.randn(2, 70, 6, 5)
    ref = expected_words(x)
    assert torch.equal(pack_signs(x.contiguous(memory_format=torch.channels_last)), ref)
    big = torch.randn(2, 140, 12, 5)
    sliced = big[:, ::2, ::2]  # strided channels and rows
    assert not sliced.is_contiguous()
    assert torch.equal(pack_signs(sliced), expected_words(sliced.contiguous()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes(dtype):
    x = torch.randn(2, 35, 3, 3).to(dtype)
    assert torch.equal(pack_signs(x), expected_words(x.float()))


def test_float64_is_not_narrowed():
    tiny = torch.tensor([-1e-300, 1e-300, -0.0, 0.0], dtype=torch.float64).view(1, 4, 1, 1)  # float32: +-0.0
    assert pack_signs(tiny).item() == 0b1110


def test_empty_batch():
    packed = pack_signs(torch.randn(0, 33, 4, 5))
    assert packed.shape == (0, 4, 5, 2) and packed.dtype == torch.int32
    assert unpack_signs(packed, 33).shape == (0, 33, 4, 5)


def test_errors():
    with pytest.raises(TypeError, match="floating-point"):
        pack_signs(torch.ones(1, 3, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="4D"):
        pack_signs(torch.ones(3, 2, 2))
    with pytest.raises(TypeError, match="int32"):
        unpack_signs(torch.ones(1, 2, 2, 1), 3)
    with pytest.raises(ValueError, match="do not fit"):
        unpack_signs(torch.zeros(1, 2, 2, 1, dtype=torch.int32), 33)


def test_weight_scale():
    w = torch.randn(4, 3, 3, 3)
    alpha = weight_scale(w)
    assert alpha.shape == (4,) and alpha.dtype == torch.float32
    torch.testing.assert_close(alpha.double(), w.double().abs().mean(dim=(1, 2, 3)), rtol=1e-6, atol=0)
