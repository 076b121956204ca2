import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import BinaryConv2d, BinaryLinear, BwnConv2d, XnorConv2d
from zoo.quantizers import scaled_sign, ste_sign


def _sign64(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0).double()


def _alpha_sign64(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().double()
    alpha = w.abs().flatten(1).mean(dim=1).view(-1, *([1] * (w.dim() - 1)))
    return alpha * _sign64(w)


def _box_scale64(x, conv):
    """K computed independently: mean |x| over channels, then a ones-kernel sum divided by kh*kw."""
    a = x.double().abs().sum(dim=1, keepdim=True) / x.shape[1]
    kh, kw = conv.kernel_size
    ones = torch.ones(1, 1, kh, kw, dtype=torch.float64)
    return F.conv2d(a, ones, stride=conv.stride, padding=conv.padding, dilation=conv.dilation) / (kh * kw)


GEOMETRIES = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=1, stride=2, padding=0),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=(3, 1), stride=1, padding=(1, 0)),
]


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_xnor_conv_equals_float_conv_on_signs_times_k(geom):
    conv = XnorConv2d(13, 7, bias=True, **geom)
    nn.init.normal_(conv.bias)
    x = torch.randn(3, 13, 9, 8)
    ref = F.conv2d(_sign64(x), _alpha_sign64(conv.weight), None, conv.stride, conv.padding, conv.dilation)
    ref = ref * _box_scale64(x, conv) + conv.bias.double().view(1, -1, 1, 1)
    torch.testing.assert_close(conv(x).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_xnor_conv_without_k(geom):
    conv = XnorConv2d(5, 4, input_scale=False, **geom)
    x = torch.randn(2, 5, 8, 8)
    ref = F.conv2d(_sign64(x), _alpha_sign64(conv.weight), None, conv.stride, conv.padding, conv.dilation)
    torch.testing.assert_close(conv(x).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_bwn_conv_equals_float_conv_with_alpha_sign_weights(geom):
    conv = BwnConv2d(6, 5, **geom)
    x = torch.randn(2, 6, 8, 8)
    ref = F.conv2d(x.double(), _alpha_sign64(conv.weight), None, conv.stride, conv.padding, conv.dilation)
    torch.testing.assert_close(conv(x).double(), ref, rtol=1e-5, atol=1e-5)


def test_from_float_keeps_geometry_and_latent_weights():
    float_conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, dilation=1, bias=True)
    conv = BinaryConv2d.from_float(float_conv, input_quantizer="bin_activ", input_scale=True)
    assert torch.equal(conv.weight, float_conv.weight) and torch.equal(conv.bias, float_conv.bias)
    assert (conv.stride, conv.padding, conv.kernel_size) == (float_conv.stride, float_conv.padding, (3, 3))
    assert conv.weight.data_ptr() != float_conv.weight.data_ptr()


def test_binary_linear_xnor_oracle():
    lin = BinaryLinear(11, 4, input_quantizer="bin_activ", input_scale=True)
    x = torch.randn(5, 11)
    ref = _sign64(x) @ _alpha_sign64(lin.weight).T * x.double().abs().mean(dim=1, keepdim=True)
    ref = ref + lin.bias.double()
    torch.testing.assert_close(lin(x).double(), ref, rtol=1e-5, atol=1e-5)


def test_binary_linear_bwn_oracle():
    lin = BinaryLinear.from_float(nn.Linear(9, 3))
    x = torch.randn(4, 9)
    ref = x.double() @ _alpha_sign64(lin.weight).T + lin.bias.double()
    torch.testing.assert_close(lin(x).double(), ref, rtol=1e-5, atol=1e-5)


def test_kbit_input_conv_oracle():
    conv = BinaryConv2d(4, 3, 3, padding=1, input_quantizer="kbit", input_bits=2)
    x = torch.randn(2, 4, 5, 5)
    xq = ((x.double().clamp(-1, 1) + 1) / 2 * 3 + 0.5).floor() / 3 * 2 - 1
    ref = F.conv2d(xq, _alpha_sign64(conv.weight), None, 1, 1)
    torch.testing.assert_close(conv(x).double(), ref, rtol=1e-5, atol=1e-5)


def test_xnor_conv_gradients_flow_to_input_and_latent_weights():
    conv = XnorConv2d(4, 4, kernel_size=3, padding=1)
    x = (torch.randn(2, 4, 6, 6) * 0.5).requires_grad_()
    conv(x).square().sum().backward()
    assert x.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all() and torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize("shape", [(4, 5), (1, 4, 5, 5, 5), (5,)])
def test_conv_rejects_non_4d_input(shape):
    conv = XnorConv2d(4, 4, kernel_size=3, padding=1)
    with pytest.raises(ValueError, match="4D input"):
        conv(torch.randn(*shape))


def test_k_needs_binarized_inputs_and_padding_must_be_explicit():
    with pytest.raises(ValueError, match="input_quantizer"):
        BinaryConv2d(4, 4, 3, input_scale=True)
    with pytest.raises(ValueError, match="padding"):
        BinaryConv2d(4, 4, 3, padding="same")
    with pytest.raises(ValueError, match="padding_mode"):
        BinaryConv2d.from_float(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))


def test_binary_gradient_option_binarizes_the_output_gradient_before_the_backward_convs():
    # XNOR-Net sec. 3.2: g^in (the gradient at the layer's output) becomes sign(g^in) * max|g^in|; the weight and
    # input gradients are the float conv's, fed that binarized g^in.
    torch.manual_seed(0)
    conv = BinaryConv2d(3, 2, 3, padding=1, kernel_quantizer="scaled_sign", input_quantizer="ste_sign",
                        binary_gradient=True).double()
    x = (0.8 * torch.randn(2, 3, 5, 5, dtype=torch.float64)).requires_grad_()
    g = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    conv(x).backward(g)

    x_ref = x.detach().clone().requires_grad_()
    w_ref = conv.weight.detach().clone().requires_grad_()
    y_ref = F.conv2d(ste_sign(x_ref), scaled_sign(w_ref), None, 1, 1)
    y_ref.backward(torch.where(g >= 0, 1.0, -1.0) * g.abs().max())
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(conv.weight.grad, w_ref.grad)
    plain = BinaryConv2d(3, 2, 3, padding=1, kernel_quantizer="scaled_sign", input_quantizer="ste_sign").double()
    plain.weight.data.copy_(conv.weight.data)
    x_plain = x.detach().clone().requires_grad_()
    plain(x_plain).backward(g)
    assert not torch.allclose(x_plain.grad, x.grad)  # the option changes the gradient
