"""The zoo_xnor torch.library ops and the float-input xnor_conv2d: results, validation, edge cases, tracing."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from zoo_kernels import cpu, ops
from zoo_kernels.packing import pack_signs, pack_weight_signs, weight_scale

from zoo.layers import XnorConv2d


def sign(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0).double()


def expected(x, w, alpha, stride, padding, dilation, input_scale, bias=None) -> torch.Tensor:
    """Independent float64 reference: alpha * K * conv2d(sign(x), sign(w)) + bias."""
    out = F.conv2d(sign(x), sign(w), None, stride, padding, dilation) * alpha.double().view(1, -1, 1, 1)
    if input_scale:
        k = w.shape[-2:]
        box = torch.full((1, 1, *k), 1.0 / (k[0] * k[1]), dtype=torch.float64)
        out = out * F.conv2d(x.double().abs().mean(dim=1, keepdim=True), box, None, stride, padding, dilation)
    if bias is not None:
        out = out + bias.double().view(1, -1, 1, 1)
    return out


def test_ops_are_registered():
    for name in ("pack_signs", "pack_signs_absmean", "input_scale", "xnor_conv2d"):
        assert hasattr(torch.ops.zoo_xnor, name)
    schema = str(torch.ops.zoo_xnor.xnor_conv2d.default._schema)
    assert "Tensor? scale" in schema and "int[2] stride" in schema


@pytest.mark.parametrize("input_scale", [False, True])
@pytest.mark.parametrize("geometry", [(1, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2)])
@pytest.mark.parametrize("channels", [3, 33, 100])
def test_xnor_conv2d_matches_float64(input_scale, geometry, channels):
    k, s, p, d = geometry
    x, w, bias = torch.randn(3, channels, 8, 7), torch.randn(6, channels, k, k), torch.randn(6)
    x[x.abs() < 0.1] = 0.0
    alpha = weight_scale(w)
    out = ops.xnor_conv2d(x, pack_weight_signs(w), alpha, channels, k, s, p, d, input_scale, bias)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected(x, w, alpha, s, p, d, input_scale, bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device_kernel", [True, False])
@pytest.mark.parametrize("input_scale", [False, True])
def test_fused_batchnorm_matches_unfused_float64(input_scale, device_kernel, monkeypatch):
    """norm_scale / norm_shift: the conv of sign(BN(x)) (and K of |BN(x)|), BN applied in float64 beforehand."""
    torch.manual_seed(3)
    x, w, bias = torch.randn(3, 40, 8, 7), torch.randn(6, 40, 3, 3), torch.randn(6)
    scale, shift = torch.randn(40), torch.randn(40)
    y = x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)
    assert y.abs().min() > 1e-5  # no sign within float32 rounding of zero
    alpha = weight_scale(w)
    if not device_kernel:  # the pure-PyTorch pack of devices without a kernel of their own
        monkeypatch.setitem(ops._KERNELS["pack_signs"], "cpu", ops._pack_signs_affine_torch)
        monkeypatch.setitem(ops._KERNELS["pack_signs_absmean"], "cpu", ops._pack_signs_absmean_torch)
    out = ops.xnor_conv2d(x, pack_weight_signs(w), alpha, 40, 3, 1, 1, 1, input_scale, bias, norm_scale=scale,
                          norm_shift=shift)
    torch.testing.assert_close(out.double(), expected(y, w, alpha, 1, 1, 1, input_scale, bias), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="both scale and shift"):
        ops.pack_signs(x, scale)
    with pytest.raises(ValueError, match="float32 of shape"):
        ops.pack_signs(x, scale[:3], shift[:3])


@pytest.mark.parametrize("fused", [True, False])
def test_residual_and_relu_epilogue(fused, monkeypatch):
    x, w, bias = torch.randn(2, 40, 7, 7), torch.randn(16, 40, 3, 3), torch.randn(16)
    residual = torch.randn(2, 16, 4, 4).contiguous(memory_format=torch.channels_last)
    alpha = weight_scale(w)
    if not fused:  # the op path (a kernel swapped in, or another device)
        monkeypatch.setitem(ops._KERNELS["xnor_conv2d"], "cpu", lambda *a: cpu.xnor_conv2d_cpu(*a))
    ref = expected(x, w, alpha, 2, 1, 1, True, bias) + residual.double()
    out = ops.xnor_conv2d(x, pack_weight_signs(w), alpha, 40, 3, 2, 1, 1, True, bias, residual=residual, relu=True)
    torch.testing.assert_close(out.double(), ref.clamp_min(0), rtol=1e-5, atol=1e-5)
    assert (ref < 0).any() and torch.equal(residual, residual.clone())  # the residual is read, not written
    with pytest.raises(ValueError, match="residual"):
        ops.xnor_conv2d(x, pack_weight_signs(w), alpha, 40, 3, 1, 1, 1, True, bias, residual=residual)


def test_residual_and_relu_epilogue_streamed():
    # a 5.2 MB output: the CPU kernel's epilogue streams it to memory, residual and ReLU included
    torch.manual_seed(1)
    x, w, bias = torch.randn(5, 64, 64, 64), torch.randn(64, 64, 3, 3), torch.randn(64)
    residual = torch.randn(5, 64, 64, 64).contiguous(memory_format=torch.channels_last)
    alpha = weight_scale(w)
    ref = expected(x, w, alpha, 1, 1, 1, True, bias) + residual.double()
    out = ops.xnor_conv2d(x, pack_weight_signs(w), alpha, 64, 3, 1, 1, 1, True, bias, residual=residual, relu=True)
    torch.testing.assert_close(out.double(), ref.clamp_min(0), rtol=1e-5, atol=1e-5)
    assert (ref < 0).any()


def test_non_contiguous_and_half_inputs():
    x, w = torch.randn(2, 64, 9, 9), torch.randn(8, 64, 3, 3)
    wp, alpha = pack_weight_signs(w), weight_scale(w)
    ref = expected(x, w, alpha, 1, 1, 1, True)
    strided = torch.stack([x, -x], 2).flatten(1, 2)[:, ::2]  # channel stride 2
    for xi in (x.contiguous(memory_format=torch.channels_last), strided, torch.cat([x, x], 1)[:, :64]):
        assert torch.equal(xi, x)
        out = ops.xnor_conv2d(xi, wp, alpha, 64, (3, 3), 1, 1, 1, input_scale=True)
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    xh = x.half()
    out = ops.xnor_conv2d(xh, wp, alpha, 64, 3, 1, 1, 1, input_scale=True)
    torch.testing.assert_close(out.double(), expected(xh.float(), w, alpha, 1, 1, 1, True), rtol=1e-5, atol=1e-5)


def test_matches_the_zoo_xnor_layer():
    layer = XnorConv2d(40, 12, 3, stride=1, padding=1, bias=True).eval()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 40, 10, 10)
    with torch.no_grad():
        ref = layer(x)
    out = ops.xnor_conv2d(x, pack_weight_signs(layer.weight), weight_scale(layer.weight), 40, 3, 1, 1, 1, True,
                          layer.bias)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_packed_op_directly():
    x, w = torch.randn(2, 33, 6, 6), torch.randn(4, 33, 3, 3)
    alpha, scale, bias = torch.rand(4), torch.rand(2, 1, 6, 6), torch.randn(4)
    out = torch.ops.zoo_xnor.xnor_conv2d(pack_signs(x), pack_weight_signs(w), alpha, scale, bias, 33, [1, 1],
                                         [1, 1], [1, 1])
    ref = F.conv2d(sign(x), sign(w), None, 1, 1) * alpha.double().view(1, -1, 1, 1) * scale + bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out.double(), ref.double(), rtol=1e-5, atol=1e-5)
    packed, absmean = torch.ops.zoo_xnor.pack_signs_absmean(x)
    assert torch.equal(packed, torch.ops.zoo_xnor.pack_signs(x))
    assert torch.equal(packed, pack_signs(x))
    torch.testing.assert_close(absmean, x.abs().mean(1, keepdim=True))


def test_input_scale_op_matches_the_zoo_definition():
    from zoo.quantizers import xnor_input_scale as zoo_scale

    x = torch.randn(2, 20, 9, 7)
    absmean = torch.ops.zoo_xnor.pack_signs_absmean(x)[1]
    for k, s, p, d in [((3, 3), 1, 1, 1), ((3, 3), 2, 2, 2), ((1, 3), 1, (0, 1), 1)]:
        p2 = (p, p) if isinstance(p, int) else p
        out = ops.xnor_input_scale(absmean, k, (s, s), p2, (d, d))
        torch.testing.assert_close(out, zoo_scale(x, k, s, p2, d), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="absmean"):
        ops.xnor_input_scale(absmean.double(), (3, 3), (1, 1), (1, 1), (1, 1))


def test_zeros_pack_as_plus_one():
    x, w = torch.zeros(1, 35, 5, 5), torch.randn(3, 35, 3, 3)
    alpha = weight_scale(w)
    out = ops.xnor_conv2d(x, pack_weight_signs(w), alpha, 35, 3, 1, 1, 1, input_scale=False)
    ones = F.conv2d(torch.ones(1, 35, 5, 5).double(), sign(w), None, 1, 1) * alpha.double().view(1, -1, 1, 1)
    torch.testing.assert_close(out.double(), ones, rtol=1e-6, atol=1e-6)
    scaled = ops.xnor_conv2d(x, pack_weight_signs(w), alpha, 35, 3, 1, 1, 1, input_scale=True)
    assert torch.equal(scaled, torch.zeros_like(scaled))  # K = 0


def test_empty_batch():
    w = torch.randn(4, 33, 3, 3)
    out = ops.xnor_conv2d(torch.randn(0, 33, 8, 8), pack_weight_signs(w), weight_scale(w), 33, 3, 2, 1, 1, True)
    assert out.shape == (0, 4, 4, 4) and out.dtype == torch.float32


def test_nan_input_is_defined():
    x, w = torch.randn(1, 20, 7, 7), torch.randn(3, 20, 3, 3)
    x[0, 4, 3, 3] = float("nan")
    wp, alpha = pack_weight_signs(w), weight_scale(w)
    plain = ops.xnor_conv2d(x, wp, alpha, 20, 3, 1, 1, 1, input_scale=False)
    as_minus_one = x.clone()
    as_minus_one[0, 4, 3, 3] = -1.0
    torch.testing.assert_close(plain.double(), expected(as_minus_one, w, alpha, 1, 1, 1, False), rtol=1e-5,
                               atol=1e-5)
    scaled = ops.xnor_conv2d(x, wp, alpha, 20, 3, 1, 1, 1, input_scale=True)
    touched = torch.zeros(7, 7, dtype=torch.bool)
    touched[2:5, 2:5] = True  # the 3 x 3 windows that cover pixel (3, 3)
    assert scaled[0, :, touched].isnan().all() and not scaled[0, :, ~touched].isnan().any()


def test_validation_errors():
    x, w = torch.randn(2, 33, 6, 6), torch.randn(4, 33, 3, 3)
    wp, alpha = pack_weight_signs(w), weight_scale(w)
    with pytest.raises(ValueError, match="4D"):
        ops.xnor_conv2d(x[0], wp, alpha, 33, 3)
    with pytest.raises(TypeError, match="floating-point"):
        ops.xnor_conv2d(x.long(), wp, alpha, 33, 3)
    with pytest.raises(ValueError, match="channels"):
        ops.xnor_conv2d(x[:, :32], wp, alpha, 33, 3)
    with pytest.raises(ValueError, match="does not match"):
        ops.xnor_conv2d(x, wp, alpha, 33, 1)
    with pytest.raises(TypeError, match="int32"):
        ops.xnor_conv2d(x, wp.long(), alpha, 33, 3)
    with pytest.raises(NotImplementedError, match="groups"):
        ops.xnor_conv2d(x, wp, alpha, 33, 3, groups=2)
    with pytest.raises(ValueError, match="alpha"):
        ops.xnor_conv2d(x, wp, alpha[:3], 33, 3)
    with pytest.raises(ValueError, match="on meta"):
        ops.xnor_conv2d(x, wp.to("meta"), alpha, 33, 3)
    with pytest.raises(ValueError, match="too small"):
        ops.xnor_conv2d(x[:, :, :2, :2], wp, alpha, 33, 3)
    with pytest.raises(ValueError, match="scale"):
        torch.ops.zoo_xnor.xnor_conv2d(pack_signs(x), wp, alpha, torch.ones(2, 1, 6, 6), None, 33, [1, 1], [0, 0],
                                       [1, 1])


def test_device_dispatch_hook(monkeypatch):
    x, w = torch.randn(1, 8, 4, 4), torch.randn(2, 8, 1, 1)
    args = (pack_signs(x), pack_weight_signs(w), torch.ones(2), None, None, 8, [1, 1], [0, 0], [1, 1])
    kernels = dict(ops._KERNELS["xnor_conv2d"])
    monkeypatch.setitem(ops._KERNELS, "xnor_conv2d", {})
    with pytest.raises(NotImplementedError, match="no kernel for device type 'cpu'"):
        torch.ops.zoo_xnor.xnor_conv2d(*args)
    calls = []
    ops.register_device_kernel("xnor_conv2d", "cpu", lambda *a: calls.append(a) or kernels["cpu"](*a))
    out = torch.ops.zoo_xnor.xnor_conv2d(*args)
    assert len(calls) == 1 and out.shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="unknown op"):
        ops.register_device_kernel("conv", "cuda", print)


def test_has_kernel_and_use_kernel_restores_the_previous_kernel():
    assert ops.has_kernel("xnor_conv2d", "cpu") and ops.has_kernel("pack_signs", torch.device("cpu"))
    assert ops.has_kernel("xnor_conv2d", "cuda") == (importlib.util.find_spec("triton") is not None)
    assert not ops.has_kernel("xnor_conv2d", "meta")
    with pytest.raises(ValueError, match="unknown op"):
        ops.has_kernel("conv", "cpu")
    x, w = torch.randn(1, 8, 4, 4), torch.randn(2, 8, 3, 3)
    args = (x, pack_weight_signs(w), weight_scale(w), 8, 3, 1, 1)
    ref = ops.xnor_conv2d(*args)
    calls = []
    fake = lambda *a: calls.append(a) or torch.full((1, 2, 4, 4), 7.0)  # noqa: E731
    with ops.use_kernel("xnor_conv2d", "cpu", fake):
        assert torch.equal(ops.xnor_conv2d(*args), torch.full((1, 2, 4, 4), 7.0)) and len(calls) == 1
    assert torch.equal(ops.xnor_conv2d(*args), ref) and len(calls) == 1  # the CPU kernel is back
    with pytest.raises(RuntimeError, match="inside"), ops.use_kernel("xnor_conv2d", "cpu", fake):
        raise RuntimeError("inside")
    assert torch.equal(ops.xnor_conv2d(*args), ref) and len(calls) == 1
    assert not ops.has_kernel("xnor_conv2d", "xpu")  # a device type without a kernel has none again afterwards
    with ops.use_kernel("xnor_conv2d", "xpu", fake):
        assert ops.has_kernel("xnor_conv2d", "xpu")
    assert not ops.has_kernel("xnor_conv2d", "xpu")


def test_cpu_ops_work_without_triton():
    # A fresh interpreter where `import triton` fails: no CUDA kernel is registered, the CPU op still runs exactly.
    code = """if True:
        import sys
        sys.modules["triton"] = None
        import torch
        import torch.nn.functional as F
        from zoo_kernels import ops
        from zoo_kernels.packing import pack_weight_signs
        assert not ops.has_kernel("xnor_conv2d", "cuda") and ops.has_kernel("xnor_conv2d", "cpu")
        x, w = torch.randn(2, 33, 5, 5), torch.randn(4, 33, 3, 3)
        out = ops.xnor_conv2d(x, pack_weight_signs(w), torch.ones(4), 33, 3, 1, 1)
        sign = lambda t: torch.where(t >= 0, 1.0, -1.0).double()
        assert torch.equal(out.double(), F.conv2d(sign(x), sign(w), None, 1, 1))
        assert sys.modules["triton"] is None
        print("ok")
    """
    env = {**os.environ, "ZOO_KERNELS_DISABLE_CPP": "1"}  # the reference CPU kernel: no build of the extension
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


class _Block(torch.nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w_packed", pack_weight_signs(w))
        self.register_buffer("alpha", weight_scale(w))
        self.channels = w.shape[1]

    def forward(self, x):
        y = ops.xnor_conv2d(x, self.w_packed, self.alpha, self.channels, 3, 1, 1, 1, input_scale=True)
        return torch.relu(y)


def test_torch_export():
    block, x = _Block(torch.randn(8, 40, 3, 3)), torch.randn(2, 40, 6, 6)
    exported = torch.export.export(block, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"zoo_xnor.pack_signs_absmean.default", "zoo_xnor.input_scale.default", "zoo_xnor.xnor_conv2d.default"} \
        <= targets
    assert torch.equal(exported.module()(x), block(x))


def test_torch_compile():
    block, x = _Block(torch.randn(8, 40, 3, 3)), torch.randn(2, 40, 6, 6)
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)  # traces the fake kernels
    assert torch.equal(compiled(x), block(x))
