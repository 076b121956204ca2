"""The Triton sign packing (zoo_kernels.triton_pack): words and mean_c |y| against the pure-PyTorch definition.

Without a GPU the kernel runs on CPU tensors in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1);
with a GPU the same tests run the compiled kernel on CUDA tensors.
"""

import contextlib

import pytest

pytest.importorskip("triton")

import torch  # noqa: E402
from zoo_kernels import ops  # noqa: E402
from zoo_kernels import triton_pack as tp  # noqa: E402
from zoo_kernels.packing import pack_signs  # noqa: E402

if not tp.INTERPRETED and not torch.cuda.is_available():
    pytest.skip("no GPU, and zoo_kernels.triton_pack was imported without TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = "cpu" if tp.INTERPRETED else "cuda"


def layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "nchw": x,
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "float64": x.double(),
        "float16": x.half(),
        "sliced": torch.cat([x, x], dim=3)[:, :, :, ::2],  # a non-unit pixel stride
    }


@pytest.mark.parametrize("channels", [1, 31, 32, 33, 100])
def test_words_and_absmean_match_the_definition(channels):
    torch.manual_seed(channels)
    x = torch.randn(2, channels, 5, 7)
    x[x.abs() < 0.1] = 0.0
    x[0, 0, 0, 0], x[1, -1, 2, 3] = float("nan"), -0.0
    for name, v in layouts(x.to(DEVICE)).items():
        words, mean = tp.pack_signs_absmean_triton(v)
        expected = pack_signs(v.cpu())
        assert torch.equal(words.cpu(), expected), name
        assert torch.equal(tp.pack_signs_triton(v).cpu(), expected), name
        torch.testing.assert_close(mean.cpu(), v.cpu().float().abs().mean(dim=1, keepdim=True), equal_nan=True,
                                   rtol=1e-5, atol=1e-6)


def test_sign_is_taken_in_the_input_dtype():
    tiny = torch.tensor([-1e-300, 1e-300, -0.0, 0.0], dtype=torch.float64).view(1, 4, 1, 1).to(DEVICE)
    assert tp.pack_signs_triton(tiny).item() == 0b1110  # -1e-300 < 0, although it rounds to -0.0 in float32


def test_fused_affine():
    torch.manual_seed(0)
    x, scale, shift = torch.randn(2, 70, 6, 5) * 3, torch.randn(70), torch.randn(70)
    scale[0] = -scale[0].abs()  # a negative BatchNorm scale flips the comparison
    y = x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)
    words, mean = tp.pack_signs_absmean_triton(x.to(DEVICE), scale.to(DEVICE), shift.to(DEVICE))
    clear = (y.abs() > 1e-5).all(dim=1)  # pixels whose float32 rounding cannot flip a sign
    assert clear.float().mean() > 0.9
    assert torch.equal(words.cpu()[clear], pack_signs(y)[clear])
    torch.testing.assert_close(mean.cpu().double(), y.abs().mean(dim=1, keepdim=True), rtol=1e-5, atol=1e-5)


def test_empty_batch():
    words, mean = tp.pack_signs_absmean_triton(torch.randn(0, 40, 3, 3, device=DEVICE))
    assert words.shape == (0, 3, 3, 2) and mean.shape == (0, 1, 3, 3)


def test_registered_as_the_ops_kernel():
    """Swapped in for the op (as it is for CUDA tensors), the op returns the Triton kernel's words."""
    x = torch.randn(1, 40, 4, 4)
    with ops.use_kernel("pack_signs", "cpu", tp.pack_signs_triton) if tp.INTERPRETED else contextlib.nullcontext():
        words = ops.pack_signs(x.to(DEVICE))
    assert torch.equal(words.cpu(), pack_signs(x))
    if not tp.INTERPRETED:
        assert ops.has_kernel("pack_signs", "cuda")

