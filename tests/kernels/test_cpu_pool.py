"""zoo_xnor_cpu::max_pool_relu (kernels/zoo_kernels/cpu_pool.cpp): relu(max_pool2d(x)) as float32, exactly as torch
computes it."""

import pytest
import torch
import torch.nn.functional as F
from zoo_kernels import cpu

pytestmark = pytest.mark.skipif(not cpu.cpu_kernel_available(), reason="the C++ extension could not be built here")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("geometry", [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2), (1, 1, 0)])
@pytest.mark.parametrize("shape", [(2, 64, 11, 12), (1, 3, 5, 4), (3, 17, 1, 7)])
def test_max_pool_relu_equals_torch(dtype, geometry, shape):
    k, s, p = geometry
    if shape[2] + 2 * p < k or shape[3] + 2 * p < k:
        pytest.skip("window larger than the padded input")
    x = torch.randn(shape).to(dtype)
    x.view(-1)[3] = float("nan")
    x = x.contiguous(memory_format=torch.channels_last)
    ref = F.max_pool2d(x.float(), k, s, p).relu()  # relu(NaN) = NaN, as the kernel gives it
    out = torch.empty(ref.shape, memory_format=torch.channels_last)
    cpu.max_pool_relu_cpu(x, out, k, s, p)
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(), ref.nan_to_num())


def test_max_pool_relu_writes_into_a_slice_and_checks_its_output():
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    out = torch.full((4, 8, 3, 3), -7.0).contiguous(memory_format=torch.channels_last)
    cpu.max_pool_relu_cpu(x[1:3], out[1:3], 3, 2, 1)
    assert torch.equal(out[1:3], F.max_pool2d(x[1:3], 3, 2, 1).relu()) and (out[[0, 3]] == -7).all()
    with pytest.raises(RuntimeError, match="out must be a float32 channels_last"):
        cpu.max_pool_relu_cpu(x, torch.empty(4, 8, 3, 3), 3, 2, 1)
    with pytest.raises(RuntimeError, match="padding at most half the kernel"):
        cpu.max_pool_relu_cpu(x, out, 3, 2, 2)
