"""The rows of docs/paper-fidelity.md that a number can show: each test checks the zoo against the paper's formula or
against an independent re-implementation of the authors' Torch code (allenai/XNOR-Net)."""

import fnmatch

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from zoo.layers import BinaryConv2d, BinaryConvBlock
from zoo.quantizers import ScaledSign
from zoo.schemes import get_scheme, list_schemes
from zoo.training.weight_update import center_and_clamp_

XNOR_MODELS = [name for name in zoo.list_models()
               if any(name.startswith(s + "_") and get_scheme(s).binarizes_inputs for s in list_schemes())]

# The binary blocks whose input may come from a ReLU, and why:
# - the float stem's ReLU (conv1 -> BN -> ReLU -> pool -> [BN -> sign -> conv2], as in the authors' alexnetxnor.lua);
# - timm ResNet's residual ReLU (act2), which also feeds the shortcut: every block's conv1 and downsample.
RELU_INPUTS = {
    "alexnet": ["stage2.conv"],
    "googlenet": ["conv2.conv"],
    "resnet": ["layer*.conv1", "layer*.downsample.0"],
    "bireal_resnet": ["layer1.0.conv1"],
}


def _family(name: str) -> str:
    arch = name.split("_", 1)[1].removeprefix("nobeta_")
    return "bireal_resnet" if arch.startswith("bireal") else arch.rstrip("0123456789")


def _block_inputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every binary block's BatchNorm (the values the block's sign reads after normalisation)."""
    inputs, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, BinaryConvBlock):
            hooks.append(module.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0])))
    with torch.no_grad():
        model.train()(images)
    for hook in hooks:
        hook.remove()
    return inputs


@pytest.mark.parametrize("name", XNOR_MODELS)
def test_no_relu_in_front_of_a_binary_block(name, digits_batch):
    # A ReLU in front of BatchNorm -> sign leaves no negative input: the sign then splits a half-zero distribution.
    # In the paper's block (fig. 3) only the previous conv, pooling and concatenation come before the BatchNorm.
    images = digits_batch[0][:16]
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True)
    inputs = _block_inputs(model, images)
    assert inputs
    non_negative = {n for n, x in inputs.items() if x.min() >= 0}
    allowed = {n for n in inputs if any(fnmatch.fnmatch(n, p) for p in RELU_INPUTS[_family(name)])}
    assert non_negative == allowed


@pytest.mark.parametrize("name", ["xnor_alexnet", "xnor_googlenet", "xnor_resnet18"])
def test_block_relu_option_puts_the_relu_back(name, digits_batch):
    images = digits_batch[0][:16]
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True, block_relu=True)
    inputs = _block_inputs(model, images)
    allowed = {n for n in inputs if any(fnmatch.fnmatch(n, p) for p in RELU_INPUTS[_family(name)])}
    non_negative = {n for n, x in inputs.items() if x.min() >= 0}
    assert non_negative > allowed  # the check above is not vacuous: it sees these ReLUs


def _authors_step(w: np.ndarray, grad_of_binary: np.ndarray, lr: float) -> np.ndarray:
    """One step of the authors' trainBatch on one conv, written from train.lua / util.lua: meancenterConvParms,
    clampConvParms, (forward/backward on binarizeConvParms' weights give grad_of_binary), updateBinaryGradWeight,
    then plain SGD (momentum and weight decay 0)."""
    w = w - w.mean(axis=1, keepdims=True)  # weight:mean(2), repeated over the input planes
    w = np.clip(w, -1.0, 1.0)
    n = w[0].size
    c = w.shape[1]
    m = np.repeat(np.abs(w).reshape(w.shape[0], -1).sum(axis=1) / n, n).reshape(w.shape)  # norm(1,4):sum(3):sum(2)
    m[w <= -1] = 0
    m[w >= 1] = 0
    m = (m + 1.0 / n) * (1 - 1.0 / c) * n
    return w - lr * grad_of_binary * m


def test_authors_mechanics_reproduce_their_step_on_one_layer():
    torch.manual_seed(0)
    conv = BinaryConv2d(128, 256, 3, padding=1, kernel_quantizer=ScaledSign("authors"), dtype=torch.float64)
    with torch.no_grad():
        conv.weight.mul_(60.0)  # some latent weights beyond [-1, 1], so that the clamp and the STE's edge matter
    w0 = conv.weight.detach().numpy().copy()
    x = torch.randn(2, 128, 6, 6, dtype=torch.float64)
    target = torch.randn(2, 256, 6, 6, dtype=torch.float64)

    center_and_clamp_(conv)
    assert (conv.weight.abs() == 1).any()
    binary = conv.quantized_weight().detach().requires_grad_()  # binarizeConvParms
    (nn.functional.conv2d(x, binary, padding=1) * target).sum().backward()
    expected = _authors_step(w0, binary.grad.numpy(), lr=1e-2)

    opt = torch.optim.SGD(conv.parameters(), lr=1e-2)
    (conv(x) * target).sum().backward()
    opt.step()
    np.testing.assert_allclose(conv.weight.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_authors_scale_against_the_papers_gradient():
    # The authors' gradient is the paper's times n(1 - 1/c): 1152 * 127/128 = 1143 for a 3x3 conv of 128 channels.
    w = (torch.randn(256, 128, 3, 3, dtype=torch.float64) * 0.05).requires_grad_()
    g = torch.randn_like(w)
    paper = torch.autograd.grad(ScaledSign("paper")(w), w, g)[0]
    authors = torch.autograd.grad(ScaledSign("authors")(w), w, g)[0]
    torch.testing.assert_close(authors, paper * 1143.0, rtol=1e-12, atol=0)


def test_input_scale_counts_padding_as_zero_like_the_conv():
    # K = A * k over the padded input (sec. 3.2): at a corner a 3x3 box sees 4 of 9 input positions.
    x = torch.ones(1, 5, 4, 4)
    k = zoo.quantizers.xnor_input_scale(x, (3, 3), 1, 1)
    assert k[0, 0, 0, 0].item() == pytest.approx(4 / 9) and k[0, 0, 1, 1].item() == pytest.approx(1.0)
