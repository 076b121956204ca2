import contextlib
import copy
import functools

import pytest
import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import nn
from zoo_kernels import routes
from zoo_kernels.int8_route import int8_route_available
from zoo_kernels.routes import force_route

import zoo
from zoo.layers import BinaryConv2d, BinaryLinear
from zoo.packing import (
    PackedBasicBlock,
    PackedBinaryConv2d,
    PackedBinaryConvBlock,
    PackedBinaryLinear,
    PackedResNet,
    pack,
    unpack,
)


def _sign(t):
    return torch.where(t >= 0, 1.0, -1.0)


def test_packed_model_equals_trained_model_on_digits(trained_xnor, digits_batch):
    images, _ = digits_batch
    packed = pack(trained_xnor)
    with torch.no_grad():
        ref, out = trained_xnor(images), packed(images)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert torch.equal(out.argmax(1), ref.argmax(1))
    assert trained_xnor.training is False and any(isinstance(m, BinaryConv2d) for m in trained_xnor.modules())


def test_pack_leaves_original_and_stores_one_bit_per_weight(trained_xnor):
    packed = pack(trained_xnor)
    layers = [m for m in packed.modules() if isinstance(m, PackedBinaryConv2d)]
    assert len(layers) == 19 and not any(type(m) is BinaryConv2d for m in packed.modules())
    for layer in layers:
        o, c = layer.out_channels, layer.in_channels
        kh, kw = layer.kernel_size
        assert layer.weight_bits.dtype == torch.int32 and "weight" not in dict(layer.named_parameters())
        assert layer.weight_bits.numel() * 4 * 8 == o * c * kh * kw  # C is a multiple of 32 in ResNet-18
        assert layer.alpha.shape == (o,)


def test_packed_bits_and_alpha_are_the_signs_and_mean_abs(trained_xnor):
    name = "layer2.0.conv2.conv"
    layer = trained_xnor.get_submodule(name)
    packed = pack(trained_xnor).get_submodule(name)
    w = layer.weight.detach().double()
    torch.testing.assert_close(packed.alpha.double(), w.abs().mean(dim=(1, 2, 3)), rtol=1e-6, atol=0)
    # independent bit check: channel c is bit c % 32 of word c // 32, 1 for w >= 0
    o, ky, kx, c = 5, 1, 2, 77
    word = int(packed.weight_bits[o, ky, kx, c // 32]) & 0xFFFFFFFF
    assert ((word >> (c % 32)) & 1) == int(w[o, c, ky, kx] >= 0)


def test_unpack_gives_trainable_model_with_identical_binarized_weights(trained_xnor, digits_batch):
    images, labels = digits_batch
    restored = unpack(pack(trained_xnor))
    for name, a in trained_xnor.named_modules():
        if isinstance(a, (BinaryConv2d, BinaryLinear)):
            b = restored.get_submodule(name)
            assert type(b) is type(a), name
            assert torch.equal(b.quantized_weight(), a.quantized_weight()), name
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(images), trained_xnor(images), rtol=1e-5, atol=1e-6)
    restored.train()
    nn.functional.cross_entropy(restored(images), labels).backward()
    assert restored.layer1[0].conv1.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [3, 33])
def test_packed_conv_border_and_odd_channels(channels):
    layer = BinaryConv2d(channels, 4, 3, stride=2, padding=1, input_quantizer="bin_activ", input_scale=True)
    packed = PackedBinaryConv2d.from_binary(layer)
    x = torch.randn(2, channels, 7, 7)
    w = layer.weight.detach().double()
    alpha = w.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
    k = zoo.quantizers.xnor_input_scale(x.double(), (3, 3), 2, 1)
    ref = nn.functional.conv2d(_sign(x).double(), _sign(w).double(), stride=2, padding=1) * alpha * k
    with torch.no_grad():
        torch.testing.assert_close(packed(x).double(), ref, rtol=1e-5, atol=1e-6)


def test_packed_linear_round_trip():
    layer = BinaryLinear(70, 5, input_quantizer="bin_activ", input_scale=True)
    packed = PackedBinaryLinear.from_binary(layer)
    assert packed.weight_bits.shape == (5, 3)
    x = torch.randn(4, 70)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), layer(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(packed.to_binary().quantized_weight(), layer.quantized_weight())


def test_packed_xnor_linear_runs_on_bits_against_a_float64_reference():
    layer = BinaryLinear(70, 5, bias=True, input_quantizer="bin_activ", input_scale=True)
    with torch.no_grad():
        layer.bias.normal_()
    packed = PackedBinaryLinear.from_binary(layer).eval()
    assert packed.runs_on_bits
    x = torch.randn(4, 70, dtype=torch.float64)
    sx, sw = torch.where(x >= 0, 1.0, -1.0), torch.where(layer.weight.double() >= 0, 1.0, -1.0)
    alpha = layer.weight.double().abs().mean(dim=1)
    expected = (sx @ sw.T) * alpha * x.abs().mean(dim=1, keepdim=True) + layer.bias.double()
    with torch.no_grad():
        got = packed(x.float())
        assert packed(torch.empty(0, 70)).shape == (0, 5)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_packed_kbit_linear_runs_on_bits_against_a_float64_reference(monkeypatch):
    layer = BinaryLinear(70, 5, bias=True, input_quantizer="kbit", input_bits=2)
    with torch.no_grad():
        layer.bias.normal_()
    packed = PackedBinaryLinear.from_binary(layer).eval()
    assert packed.runs_on_bits
    calls = []
    kernel = zoo.packing.kbit_conv2d
    monkeypatch.setattr(zoo.packing, "kbit_conv2d", lambda *a, **k: calls.append(k["bits"]) or kernel(*a, **k))
    x = torch.randn(4, 70, dtype=torch.float64)
    sw = torch.where(layer.weight >= 0, 1.0, -1.0).double()
    alpha = layer.weight.double().abs().mean(dim=1)
    expected = (zoo.quantizers.kbit_quantize(x.float(), 2).double() @ sw.T) * alpha + layer.bias.double()
    with torch.no_grad():
        got = packed(x.float())
    assert calls == [2]
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_pack_needs_a_binarized_model():
    with pytest.raises(ValueError, match="binarized model"):
        pack(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_fp_model_packs_to_itself():
    model = zoo.create_model("fp_resnet18", num_classes=10, in_chans=1, small_input=True).eval()
    packed = pack(model)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))


@pytest.mark.parametrize("backend", ["compiled", "int8", "reference", "triton"])
@pytest.mark.parametrize("model", ["xnor", "w1a2"])
def test_packed_model_runs_on_bits_on_each_backend(request, model, digits_batch, backend, monkeypatch):
    """XNOR (sign inputs) and w1a2 (2-bit inputs, as two sign planes) models: every binary conv runs on the popcount
    kernel of the backend, and the packed model's logits match the training-mode model's."""
    from zoo_kernels import cpu, ops

    trained = request.getfixturevalue(f"trained_{model}")
    images, _ = digits_batch
    device, kernel_route, triton_calls = "cpu", contextlib.nullcontext(), []
    if backend in ("compiled", "int8") and not cpu.cpu_kernel_available():
        pytest.skip("the C++ extension could not be built here")
    if backend == "int8":  # the int8 matrix-engine route (oneDNN), where torch has it
        from zoo_kernels import int8_route

        if not int8_route.int8_route_available():
            pytest.skip("torch has no oneDNN int8 conv here")
        monkeypatch.setenv("ZOO_KERNELS_ROUTE", "int8")
        int8_calls = []  # every conv of the int8 route, on its own or in a block's fused pair, comes through here
        int8_conv = int8_route.int8_conv2d_levels
        monkeypatch.setattr(int8_route, "int8_conv2d_levels",
                            lambda *a, **k: int8_calls.append(1) or int8_conv(*a, **k))
    if backend == "reference":
        monkeypatch.setattr(cpu, "load_extension", lambda: False)
    if backend == "triton":
        pytest.importorskip("triton")
        from zoo_kernels import triton_xnor

        # compiled on a GPU; else Triton's interpreter runs it on CPU tensors (tests/conftest.py), slowly: 16 images
        device = "cpu" if triton_xnor.INTERPRETED else "cuda"
        if device == "cuda" and not torch.cuda.is_available():
            pytest.skip("no GPU, and zoo_kernels.triton_xnor was imported without TRITON_INTERPRET=1")
        if device == "cpu":
            images = images[:16]
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the float stem on CUDA, held to 1e-4
        kernel_route = ops.use_kernel(
            "xnor_conv2d", device, lambda *a: triton_calls.append(1) or triton_xnor.xnor_conv2d_triton(*a)
        )
    packed = pack(trained).to(device)
    layers = [m for m in packed.modules() if isinstance(m, PackedBinaryConv2d)]
    assert layers and all(m.runs_on_bits for m in layers)
    calls, planes = [], 1 if model == "xnor" else 2
    entry = "popcount_conv2d" if model == "xnor" else "kbit_conv2d"
    kernel = getattr(zoo.packing, entry)
    monkeypatch.setattr(zoo.packing, entry, lambda *a, **k: calls.append(1) or kernel(*a, **k))
    with torch.no_grad(), kernel_route, routes.record() as seen:
        ref, out = trained(images), packed(images.to(device)).cpu()
    if backend == "int8":  # the blocks' conv pairs run fused, outside popcount_conv2d's entry
        # (on the digits' 8x8 images layer4's stride-2 convs have 1x1 outputs, which the int8 route is not offered)
        assert len(seen) == len(layers)
        on_popcount = [c for _, c in seen if routes.route_of(c) != "int8"]
        assert len(on_popcount) <= sum(max(m.stride) > 1 for m in layers) < len(layers) - len(on_popcount)
        assert {routes.route_of(c) for c in on_popcount} <= {"popcount"}
    else:
        assert len(calls) == len(layers)
    assert len(triton_calls) == (planes * len(layers) if backend == "triton" else 0)
    if backend == "int8":
        assert len(int8_calls) == len(layers) - len(on_popcount)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert torch.equal(out.argmax(1), ref.argmax(1))
    assert ref.std() > 0.1  # real logits, not a constant


def test_packed_conv_keeps_a_differentiable_float_path():
    layer = PackedBinaryConv2d.from_binary(BinaryConv2d(8, 4, 3, padding=1, input_quantizer="bin_activ"))
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def _random_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.2, 3.0)
    return norm


def test_packed_block_fuses_the_batchnorm_into_the_packing(monkeypatch):
    """BatchNorm -> sign -> conv: the packed block's fused BatchNorm against an unfused float64 computation."""
    norm = _random_norm(40)
    conv = BinaryConv2d(40, 16, 3, padding=1, input_quantizer="bin_activ", input_scale=True)
    model = nn.Sequential(zoo.layers.BinaryConvBlock(norm, conv))
    model.binarize_config = zoo.get_scheme("xnor")
    packed = pack(model)[0]
    assert type(packed) is PackedBinaryConvBlock  # no state of its own: the BatchNorm's and the packed conv's
    assert set(packed.state_dict()) == {f"norm.{k}" for k in norm.state_dict()} | {
        f"conv.{k}" for k in packed.conv.state_dict()}
    x = torch.randn(2, 40, 9, 8)
    a = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    y = (x.double() - norm.running_mean.double().view(1, -1, 1, 1)) * a.view(1, -1, 1, 1) + norm.bias.double().view(
        1, -1, 1, 1)
    assert y.abs().min() > 1e-5  # no sign within rounding of zero
    w = conv.weight.detach().double()
    k = zoo.quantizers.xnor_input_scale(y, (3, 3), 1, 1)
    ref = nn.functional.conv2d(_sign(y), _sign(w), padding=1) * w.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1) * k
    calls = []
    monkeypatch.setattr(norm.__class__, "forward", lambda *a: calls.append(1))  # the BatchNorm never runs on its own
    with torch.no_grad():
        out = packed(x)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert not calls and out.is_contiguous(memory_format=torch.channels_last)


def test_packed_block_follows_its_batchnorm():
    model = nn.Sequential(zoo.layers.BinaryConvBlock(
        _random_norm(8), BinaryConv2d(8, 4, 3, padding=1, input_quantizer="bin_activ", input_scale=True)))
    model.binarize_config = zoo.get_scheme("xnor")
    packed = pack(model).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        first = packed(x)
        packed[0].norm.running_mean.add_(0.5)  # in place: the cached affine must not be reused
        torch.testing.assert_close(packed(x), packed[0].conv(packed[0].norm(x)))
        assert not torch.equal(packed(x), first)
        packed[0].norm.load_state_dict(model[0].norm.state_dict())
        torch.testing.assert_close(packed(x), first)
    packed.train()  # training BatchNorm: batch statistics, the layers run one after the other
    with torch.no_grad():
        torch.testing.assert_close(packed(x), packed[0].conv(packed[0].norm(x)))
    restored = unpack(packed)
    assert type(restored[0]) is zoo.layers.BinaryConvBlock and type(restored[0].conv) is BinaryConv2d


def test_pack_stores_float_convs_channels_last(trained_xnor):
    packed = pack(trained_xnor)
    stem = packed.conv1
    assert type(stem) is nn.Conv2d and stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert trained_xnor.conv1.weight.is_contiguous()  # the trained model is left as it was
    assert isinstance(packed.layer1[0].conv1, PackedBinaryConvBlock)


def test_packed_basic_block_folds_its_batchnorms(trained_xnor, digits_batch, monkeypatch):
    packed = pack(trained_xnor)
    blocks = [m for m in packed.modules() if isinstance(m, PackedBasicBlock)]
    assert len(blocks) == 8 and blocks[2].downsample is not None
    block = blocks[2]  # layer2[0]: stride 2 and a packed downsample
    x = torch.randn(3, block.conv1.norm.num_features, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        unfused = BasicBlock.forward(block, x)  # every BatchNorm on its own
        calls = []
        forward = nn.BatchNorm2d.forward
        monkeypatch.setattr(nn.BatchNorm2d, "forward", lambda self, t: calls.append(1) or forward(self, t))
        out = block(x)
    assert not calls  # all five BatchNorms ran inside the packed convs
    torch.testing.assert_close(out, unfused, rtol=1e-5, atol=1e-5 * unfused.abs().max().item())
    restored = unpack(packed)
    assert not any(isinstance(m, (PackedBasicBlock, PackedBinaryConvBlock)) for m in restored.modules())
    assert sum(type(m) is BasicBlock for m in restored.modules()) == 8


@pytest.mark.skipif(not int8_route_available(), reason="torch has no oneDNN int8 conv here")
def test_packed_basic_block_runs_an_int8_pair_as_its_two_convs(trained_xnor, trained_w1a2, monkeypatch):
    """Where both convs of a block are on the int8 route, conv1's epilogue writes conv2's level bytes directly: the
    block's output is bit for bit that of the two convs in turn, on every block (stride 2 and downsamples too). A
    scheme without XNOR-Net's K (w1a2) runs its convs one by one."""
    packed = pack(trained_xnor)
    blocks = [m for m in packed.modules() if isinstance(m, PackedBasicBlock)]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), force_route("int8"):
        for block in blocks:
            c = block.conv1.norm.num_features
            x = torch.randn(3, c, 6, 6, generator=gen).contiguous(memory_format=torch.channels_last)
            with routes.record() as seen:
                fused = block(x)
            assert [routes.route_of(r) for _, r in seen][:2] == ["int8", "int8"]
            with monkeypatch.context() as m:
                m.setattr(PackedBasicBlock, "_int8_pair", lambda self, x: None)
                separate = block(x)
            assert torch.equal(fused, separate)
        pairs = []
        pair = PackedBasicBlock._int8_pair

        def counted(self, x):
            out = pair(self, x)
            pairs.append(out is not None)
            return out

        monkeypatch.setattr(PackedBasicBlock, "_int8_pair", counted)
        packed(torch.randn(2, 1, 16, 16, generator=gen))  # layer4: 4x4 -> 2x2 (a 1x1 output of stride 2 is not
        # offered to oneDNN, see zoo_kernels.int8_route.int8_conv_exact_for)
        assert pairs == [True] * len(blocks)
        pairs.clear()
        pack(trained_w1a2)(torch.randn(2, 1, 16, 16, generator=gen))
        assert pairs == [False] * len(blocks)


def test_packed_resnet_folds_the_stem_batchnorm(trained_xnor, digits_batch):
    images, _ = digits_batch
    packed = pack(trained_xnor)
    assert type(packed) is PackedResNet and type(unpack(packed)) is type(trained_xnor)
    with torch.no_grad():
        fused = packed.forward_features(images)
        unfused = ResNet.forward_features(packed, images)
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5 * unfused.abs().max().item())
    assert "_folded_stem" in packed.__dict__
    with torch.enable_grad():  # autograd: the stem's own layers, which get their gradients
        packed.forward_features(images).sum().backward()
    assert packed.conv1.weight.grad is not None


def _imagenet_resnet_stem():
    """A packed xnor_resnet18 at ImageNet size (7x7 stride-2 stem and max-pool) with non-trivial stem statistics."""
    model = zoo.create_model("xnor_resnet18", num_classes=10).eval()
    with torch.no_grad():
        model.bn1.running_mean.normal_(0, 0.2)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.bias.normal_(0, 0.5)
    return pack(model)


def _reference_stem(packed, x):
    """The trainable stem, layer by layer: conv1 -> bn1 -> ReLU -> max-pool, in float64."""
    m = packed
    y = nn.functional.conv2d(x.double(), m.conv1.weight.double(), None, m.conv1.stride, m.conv1.padding)
    a = m.bn1.weight.double() / torch.sqrt(m.bn1.running_var.double() + m.bn1.eps)
    y = (y - m.bn1.running_mean.double().view(1, -1, 1, 1)) * a.view(1, -1, 1, 1) + m.bn1.bias.double().view(
        1, -1, 1, 1)
    return m.maxpool(y.relu())


def test_packed_resnet_stem_pools_before_its_relu_in_chunks():
    """float32 stem: max-pool then ReLU, a few images at a time, equals conv -> BatchNorm -> ReLU -> pool."""
    packed = _imagenet_resnet_stem()
    x = torch.randn(5, 3, 64, 64)
    ref = _reference_stem(packed, x)
    with torch.no_grad():
        whole = packed._stem(x)
        packed.stem_chunk_bytes = 1  # one image per conv call
        chunked = packed._stem(x)
    assert whole.dtype == torch.float32 and whole.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(whole, chunked)
    torch.testing.assert_close(whole.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert (whole == 0).any() and (whole > 0).any()  # the ReLU clipped something, and left something


@pytest.mark.native_stem
def test_packed_resnet_stem_dtype_follows_the_cpu_and_can_be_forced():
    """Default stem: bfloat16 where the CPU has native bfloat16, float32 elsewhere; its outputs within bfloat16's
    rounding (8 significant bits on the inputs and weights) of the float64 stem; ``stem_dtype`` forces float32."""
    from zoo_kernels.cpu_features import has_native_bf16

    packed = _imagenet_resnet_stem()
    x = torch.randn(3, 3, 64, 64)
    ref = _reference_stem(packed, x)
    assert packed._stem_dtype(x) == (torch.bfloat16 if has_native_bf16() else torch.float32)
    with torch.no_grad():
        native = packed._stem(x)
        packed.stem_dtype = torch.float32
        f32 = packed._stem(x)
    scale = ref.abs().max().item()
    torch.testing.assert_close(f32.double(), ref, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(native.double(), ref, rtol=0, atol=2e-2 * scale)
    assert native.dtype == torch.float32 and native.is_contiguous(memory_format=torch.channels_last)
    if has_native_bf16():
        assert not torch.equal(native, f32)  # it did run in bfloat16


def test_packed_bwn_weight_is_rebuilt_once_and_follows_the_bits():
    layer = BinaryConv2d(8, 4, 3, padding=1, kernel_quantizer="scaled_sign")
    packed = PackedBinaryConv2d.from_binary(layer).eval()
    first = packed.quantized_weight()
    assert packed.quantized_weight() is first  # cached between calls
    torch.testing.assert_close(first, layer.quantized_weight().detach())
    with torch.no_grad():
        packed.alpha.mul_(2.0)  # an in-place change of the buffers invalidates the cache
    torch.testing.assert_close(packed.quantized_weight(), 2.0 * first)
    assert "_float_weight" not in packed.state_dict()


def test_packed_resnet18_compiled_equals_reference_at_imagenet_shape(monkeypatch):
    # 224x224 through the compiled CPU kernel's pair blocks at even widths (56, 28, 14) and at the odd 7x7 of the last
    # stage (a place past the row computed, never written), stride-2 convs, residual and ReLU epilogues, folded
    # BatchNorms: the same packed model on the pure-PyTorch reference (exact integer convs) gives the same logits.
    from zoo_kernels import cpu

    if not cpu.cpu_kernel_available():
        pytest.skip("the C++ extension could not be built here")
    torch.manual_seed(0)
    model = zoo.create_model("xnor_resnet18").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # statistics away from the identity, so that the folding matters
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        packed, x = pack(model), torch.randn(2, 3, 224, 224)
        compiled = packed(x)
        monkeypatch.setattr(cpu, "load_extension", lambda: False)
        reference = packed(x)
    torch.testing.assert_close(compiled, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    assert torch.equal(compiled.argmax(1), reference.argmax(1))


@functools.cache
def _packed_randomised(name: str, seed: int) -> nn.Module:
    """Model ``name`` with random weights and BatchNorms, packed and never run (so without cached forms): tests take
    copies."""
    torch.manual_seed(seed)
    model = zoo.create_model(name, num_classes=10, in_chans=3, small_input=True).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.load_state_dict({**m.state_dict(), **_random_norm(m.num_features).state_dict()})
    return pack(model)


def _edited_keys(packed: nn.Module, which: str) -> list[str]:
    norms = tuple(f"{n}." for n, m in packed.named_modules() if isinstance(m, nn.BatchNorm2d))
    keep = {"weight_bits": lambda k: k.endswith(".weight_bits"), "alpha": lambda k: k.endswith(".alpha"),
            "norms": lambda k: k.startswith(norms), "stem": lambda k: k.startswith("conv1.")}[which]
    return [k for k in packed.state_dict() if keep(k)]


_CACHE_CASES = [  # (model, route, which tensors change): the caches each one reaches
    *(("xnor_resnet18", route, which) for route in ("popcount", "int8") for which in ("weight_bits", "alpha", "norms")),
    ("xnor_resnet18", "popcount", "stem"),  # PackedResNet's folded stem
    ("bwn_resnet18", "popcount", "weight_bits"),  # quantized_weight: alpha * sign(W) rebuilt from the bits
    ("bwn_resnet18", "popcount", "alpha"),
]


@pytest.mark.parametrize("how", ["data_copy", "load_state_dict"])
@pytest.mark.parametrize("name, route, which", _CACHE_CASES)
def test_cached_forms_follow_every_edit_of_the_weights(name, route, which, how):
    # the popcount panels, the int8 route's oneDNN layouts, the fused and folded BatchNorms, the folded stem and the
    # rebuilt float weights are all cached; an edit through .data bumps no version counter, and must be seen too
    if route == "int8" and not int8_route_available():
        pytest.skip("no oneDNN int8 route on this CPU")
    packed, fresh = copy.deepcopy(_packed_randomised(name, 0)), copy.deepcopy(_packed_randomised(name, 0))
    other = _packed_randomised(name, 1).state_dict()
    keys = _edited_keys(packed, which)
    assert keys
    edited = {**packed.state_dict(), **{k: other[k] for k in keys}}
    fresh.load_state_dict(edited)  # a freshly packed model given the edited weights, before any call
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad(), force_route(route):
        before = packed(x)  # fills every cache
        assert torch.equal(packed(x), before)
        if how == "data_copy":
            tensors = packed.state_dict(keep_vars=True)
            for k in keys:
                tensors[k].data.copy_(other[k])
        else:
            packed.load_state_dict(edited)
        want = fresh(x)
        assert not torch.equal(want, before)
        assert torch.equal(packed(x), want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("name", ["xnor_resnet18", "bwn_resnet18", "xnor_alexnet", "xnor_googlenet"])
def test_a_packed_model_runs_in_the_dtype_it_is_cast_to(name, dtype):
    # .half() / .to(torch.bfloat16) / .double(), as for any timm model: the output in that dtype, the binary layers
    # still exact on the signs they get (half precision moves the float parts by its rounding)
    torch.manual_seed(0)
    packed = pack(zoo.create_model(name, num_classes=10).eval())
    cast = copy.deepcopy(packed).to(dtype)
    x = torch.randn(2, 3, 99 if "alexnet" in name else 64, 99 if "alexnet" in name else 64)
    with torch.no_grad():
        want, got = packed(x), cast(x.to(dtype))
    assert got.dtype == dtype
    tolerance = 1e-6 if dtype == torch.float64 else 0.05
    assert (got.double() - want.double()).abs().max().item() <= tolerance * want.abs().max().item()


@pytest.mark.parametrize("name", ["xnor_resnet18", "w1a2_resnet18", "xnor_googlenet"])
def test_a_packed_model_exports_with_its_kernels_as_ops(name):
    # torch.export traces the packed model: the binary convs stay torch.ops.zoo_xnor ops, the outputs the same
    torch.manual_seed(0)
    packed = zoo.pack_model(zoo.create_model(name, num_classes=10).eval())
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        exported = torch.export.export(packed, (x,))
        want, got = packed(x), exported.module()(x)
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert "zoo_xnor.xnor_conv2d.default" in ops
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * want.abs().max().item())
