import pytest
import torch
import torch.nn.functional as F

from zoo.quantizers import (
    BinActiv,
    KBit,
    ScaledSign,
    SteSign,
    binarize_gradient,
    get_quantizer,
    kbit_quantize,
    list_quantizers,
    scaled_sign,
    sign,
    ste_sign,
    xnor_input_scale,
)


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-9, -1e-9, 3.0])
    assert sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]


def test_ste_sign_forward_and_gradient_is_indicator():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 7.0], requires_grad=True)
    g = torch.randn(8)
    y = ste_sign(x)
    y.backward(g)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1]
    expected = g * torch.tensor([0, 1, 1, 1, 1, 1, 0, 0], dtype=g.dtype)
    assert torch.equal(x.grad, expected)


def test_scaled_sign_alpha_is_mean_abs_per_filter():
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    out = scaled_sign(w)
    for o in range(6):
        alpha = sum(abs(v) for v in w[o].flatten().tolist()) / w[o].numel()
        expected = torch.tensor([alpha if v >= 0 else -alpha for v in w[o].flatten().tolist()], dtype=w.dtype)
        expected = expected.view_as(w[o])
        torch.testing.assert_close(out[o], expected, rtol=0, atol=1e-12)


def test_scaled_sign_alpha_minimises_l2_error():
    # alpha = mean|W| is the closed-form optimum of ||W - alpha * sign(W)||^2 (sec. 3.1, eq. 7).
    w = torch.randn(1, 32, dtype=torch.float64)
    alpha = w.abs().mean()
    err = lambda a: ((w - a * sign(w)) ** 2).sum()  # noqa: E731
    assert err(alpha) < err(alpha * 1.01) and err(alpha) < err(alpha * 0.99)


def test_scaled_sign_gradient_is_the_papers():
    w = (torch.randn(3, 2, 3, 3, dtype=torch.float64) * 1.2).requires_grad_()
    g = torch.randn_like(w)
    scaled_sign(w).backward(g)
    n = 2 * 3 * 3
    alpha = w.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = g * (1.0 / n + alpha * (w.detach().abs() <= 1).double())
    torch.testing.assert_close(w.grad, expected, rtol=0, atol=1e-12)


def test_scaled_sign_forward_is_the_same_for_every_gradient():
    w = torch.randn(5, 3, 3, 3)
    outs = [ScaledSign(g)(w) for g in ("paper", "exact", "authors")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert all(ScaledSign(g).quantizer_name == "scaled_sign" for g in ("paper", "exact", "authors"))  # still packs


def test_scaled_sign_exact_gradient_is_the_chain_rule():
    # d/dW_i of alpha(W) * ste(W)_k summed with g_k: g_i * alpha * 1{|W_i| <= 1} + sign(W_i) / n * sum_k g_k sign(W_k)
    w = (torch.randn(4, 3, 3, 3, dtype=torch.float64) * 1.3).requires_grad_()
    g = torch.randn_like(w)
    scaled_sign(w, "exact").backward(g)
    wd, n = w.detach(), 27
    alpha = wd.abs().mean(dim=(1, 2, 3), keepdim=True)
    signs = torch.where(wd >= 0, 1.0, -1.0).double()
    expected = g * alpha * (wd.abs() <= 1) + torch.sign(wd) / n * (g * signs).sum(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(w.grad, expected, rtol=0, atol=1e-12)
    # it differs from the paper's formula by more than rounding
    paper = torch.autograd.grad(scaled_sign(w, "paper"), w, g)[0]
    assert (paper - w.grad).abs().max() > 1e-3


def test_scaled_sign_authors_gradient_zeroes_the_ste_at_one():
    w = torch.tensor([[1.0, -1.0, 0.5, 2.0]], dtype=torch.float64, requires_grad=True)
    g = torch.ones_like(w)
    scaled_sign(w, "authors").backward(g)
    n, c, alpha = 4, 4, 4.5 / 4
    inside = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)  # |W| < 1, strictly (weight:ge(1) -> 0)
    torch.testing.assert_close(w.grad, (1 / n + alpha * inside) * n * (1 - 1 / c), rtol=0, atol=1e-12)


def test_unknown_weight_gradient_is_refused():
    with pytest.raises(ValueError, match="unknown weight gradient 'papers'; known: paper, exact, authors"):
        ScaledSign("papers")
    with pytest.raises(ValueError, match="unknown weight gradient"):
        scaled_sign(torch.ones(1, 2), "chain")


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_kbit_levels(bits):
    x = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64)
    q = kbit_quantize(x, bits)
    levels = 2**bits - 1
    grid = torch.tensor([-1 + 2 * i / levels for i in range(levels + 1)], dtype=torch.float64)
    # every output is one of the 2^k levels, and the nearest one to the clipped input (ties go up)
    assert torch.isin(q, grid).all()
    nearest = grid[((x.clamp(-1, 1)[:, None] - grid[None]).abs() - 1e-12 * grid[None]).argmin(dim=1)]
    torch.testing.assert_close(q, nearest, rtol=0, atol=1e-12)


def test_kbit_one_bit_is_sign():
    x = torch.tensor([-0.7, -0.0, 0.0, 0.2, 3.0])
    assert torch.equal(kbit_quantize(x, 1), sign(x))


def test_kbit_gradient_is_indicator_and_bad_bits():
    x = torch.tensor([-2.0, -0.3, 0.9, 1.5], requires_grad=True)
    kbit_quantize(x, 2).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="bits >= 1"):
        kbit_quantize(x, 0)


def test_binary_gradient_is_sign_times_max():
    x = torch.randn(4, 5, requires_grad=True)
    g = torch.randn(4, 5)
    y = binarize_gradient(x)
    assert torch.equal(y, x)
    y.backward(g)
    expected = torch.where(g >= 0, 1.0, -1.0) * g.abs().max()
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_xnor_input_scale_matches_loop_reference(stride, padding, dilation):
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    kh, kw = 3, 2
    k = xnor_input_scale(x, (kh, kw), stride, padding, dilation)
    a = x.abs().mean(dim=1)
    ap = F.pad(a, (padding, padding, padding, padding))
    ho = (7 + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (6 + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    assert k.shape == (2, 1, ho, wo)
    for n in range(2):
        for i in range(ho):
            for j in range(wo):
                total = 0.0
                for u in range(kh):
                    for v in range(kw):
                        total += ap[n, i * stride + u * dilation, j * stride + v * dilation].item()
                assert abs(k[n, 0, i, j].item() - total / (kh * kw)) < 1e-12


def test_quantizer_by_name_equals_object():
    x = torch.randn(10)
    assert torch.equal(get_quantizer("ste_sign")(x), SteSign()(x))
    assert torch.equal(get_quantizer("bin_activ")(x), BinActiv()(x))
    assert torch.equal(get_quantizer("kbit", bits=2)(x), KBit(2)(x))
    w = torch.randn(3, 4)
    assert torch.equal(get_quantizer("scaled_sign")(w), ScaledSign()(w))
    q = SteSign()
    assert get_quantizer(q) is q and get_quantizer(None) is None


def test_unknown_quantizer_lists_known():
    with pytest.raises(KeyError, match="ste_sign"):
        get_quantizer("nope")
    assert {"ste_sign", "bin_activ", "scaled_sign", "kbit", "binary_gradient"} <= set(list_quantizers())
