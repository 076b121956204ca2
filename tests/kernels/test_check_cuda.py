"""The GPU self-check script (zoo_kernels.check_cuda): its comparison passes a correct kernel, fails wrong or crashing
ones, and it refuses to run without a GPU. The kernel itself runs under Triton's interpreter here when there is no GPU
(tests/conftest.py)."""

import pytest
import torch
from zoo_kernels import check_cuda
from zoo_kernels.reference import xnor_conv2d_reference

TINY = check_cuda.Case("tiny", 2, 40, 6, (7, 6), 3, 2, 1, 2)


def test_exact_epilogue_operands():
    ops = check_cuda.make_operands(TINY, "cpu")
    assert torch.equal(ops.reference, xnor_conv2d_reference(ops.x_packed, ops.w_packed, 40, 2, 1, 2))
    alpha, scale, bias = ops.exact
    assert torch.equal(torch.log2(alpha), torch.log2(alpha).round()) and scale.shape == (2, 1, 3, 2)
    expected = ops.expected(alpha, scale, bias)
    assert torch.equal(expected.float().double(), expected)  # representable in float32: equality is the right test


def test_a_correct_kernel_passes_and_wrong_ones_fail():
    ops = check_cuda.make_operands(TINY, "cpu")

    def correct(xp, wp, alpha, scale, bias, *geometry, off_by=0.0):
        out = ops.expected(alpha, scale, bias).float()
        out[1, 2, 0, 1] += off_by
        return out

    def crashing(*args, **kwargs):
        raise RuntimeError("launch failed\nmore")

    launches = [("right", {}), ("one off", {"off_by": 0.125})]
    results = check_cuda.check_case(TINY, launches, "cpu", correct, ops)
    assert [(label, ok) for label, ok, _ in results] == [("right", True), ("one off", False)]
    assert "1 of 72 wrong" in results[1][2] and "max |err| 0.125" in results[1][2]
    [(_, ok, detail)] = check_cuda.check_case(TINY, [("crash", {})], "cpu", crashing, ops)
    assert not ok and detail == "RuntimeError: launch failed"


def test_the_triton_kernel_passes_both_routes():
    pytest.importorskip("triton")
    from zoo_kernels import triton_xnor as tx

    device = "cpu" if tx.INTERPRETED else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU, and zoo_kernels.triton_xnor was imported without TRITON_INTERPRET=1")
    results = check_cuda.check_case(TINY, [(route, {"route": route}) for route in tx.ROUTES], device)
    assert all(ok for _, ok, _ in results), results


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, main() runs the whole check")
def test_main_refuses_to_run_without_a_gpu(capsys):
    assert check_cuda.main([]) == 2
    assert "cannot run: no CUDA device" in capsys.readouterr().err


def test_the_packing_check_passes_the_triton_packing():
    pytest.importorskip("triton")
    from zoo_kernels import triton_pack as tp

    device = "cpu" if tp.INTERPRETED else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU, and zoo_kernels.triton_pack was imported without TRITON_INTERPRET=1")
    results = check_cuda.check_packing(device)
    assert len(results) == 3 and all(ok for _, ok, _ in results), results
    assert all("words equal" in detail for _, _, detail in results)
