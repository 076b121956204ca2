import copy

import pytest
import torch
import torch.nn.functional as F
from zoo_kernels.cpu import quantize_u8_cpu

import zoo
from zoo import int8_stem
from zoo.packing import PackedResNet

needs_onednn = pytest.mark.skipif(not int8_stem.available(), reason="torch has no oneDNN int8 conv here")


def _levels_reference(x: torch.Tensor, scale: float, zero: int) -> torch.Tensor:
    # in float32, as the kernel divides; torch.round: half to even
    level = torch.round(x.float() / torch.tensor(scale, dtype=torch.float32)) + zero
    return torch.where(torch.isnan(x), float(zero), level.clamp(0, 255)).to(torch.uint8)


@pytest.mark.parametrize("channels_last", [False, True])
def test_quantize_is_round_half_even_clamped_and_channels_last(channels_last):
    x = 4 * torch.randn(2, 3, 7, 5)
    x[0, 0, 0, :4] = torch.tensor([float("nan"), 0.05, 0.15, -0.25])  # NaN, and ties at scale 0.1
    x[1, 2, 6, 4] = 1e9  # clamped
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    q = quantize_u8_cpu(x, 0.1, 120)
    assert q.dtype == torch.uint8 and q.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(q, _levels_reference(x, 0.1, 120))
    assert quantize_u8_cpu(torch.zeros(0, 3, 2, 2), 0.1, 7).shape == (0, 3, 2, 2)


def test_levels_put_zero_on_a_level_and_span_the_normalised_range():
    lo, hi = int8_stem.normalized_range((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert lo == pytest.approx(-0.485 / 0.229) and hi == pytest.approx((1 - 0.406) / 0.225)
    scale, zero = int8_stem.input_levels(lo, hi)
    assert 0 <= zero <= 255 and (0 - zero) * scale <= lo + scale and (255 - zero) * scale >= hi - scale
    assert int8_stem.input_levels(0.5, 2.0)[1] == 0  # 0 is always inside: the padding stays exact
    with pytest.raises(ValueError, match="std"):
        int8_stem.normalized_range((0.5,), (0.0,))


@needs_onednn
def test_int8_stem_is_the_conv_of_the_quantized_input_and_weights():
    torch.manual_seed(0)
    net = zoo.pack_model(zoo.create_model("xnor_resnet18").eval()).net
    assert isinstance(net, PackedResNet)
    net.stem_dtype = torch.int8
    x = torch.randn(2, 3, 64, 64).clamp(-2.0, 2.5)
    with torch.no_grad():
        out = net._stem(x)
        lo, hi = net._int8_stem_range()
        conv, norm = net.conv1, net.bn1
        from zoo.packing import _fold_norm
        w, b = _fold_norm(norm, conv.weight, conv.bias)
        stem = int8_stem.prepack(w, b, lo, hi, conv.stride, conv.padding, conv.dilation, conv.groups)
        # float64 reference: the dequantized levels of the input and the weights, the float bias, pool, ReLU
        xq = (_levels_reference(x, stem.x_scale, stem.x_zero).double() - stem.x_zero) * stem.x_scale
        wq = (w.double() / stem.w_scales.double().view(-1, 1, 1, 1)).round().clamp(-127, 127)
        wq = wq * stem.w_scales.double().view(-1, 1, 1, 1)
        ref = F.max_pool2d(F.conv2d(xq, wq, b.double(), conv.stride, conv.padding), 3, 2, 1).relu()
        float_stem = copy.deepcopy(net)
        float_stem.stem_dtype = torch.float32
        exact = float_stem._stem(x).double()
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    scale = ref.abs().max().item()
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2 * scale)  # bfloat16 output rounding at most
    assert ((out.double() - exact).norm() / exact.norm()).item() < 0.03  # what the quantization costs


@needs_onednn
def test_int8_stem_needs_a_range():
    net = zoo.pack_model(zoo.create_model("xnor_resnet18").eval()).net
    net.stem_dtype = torch.int8
    net.pretrained_cfg = {}
    with torch.no_grad(), pytest.raises(ValueError, match="stem_input_range"):
        net(torch.randn(1, 3, 32, 32))
    net.stem_input_range = (-2.0, 2.0)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
