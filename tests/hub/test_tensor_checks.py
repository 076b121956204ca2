"""Loading refuses tensor contents the network must not run with: padding bits, non-finite values, negative alpha
and negative running variances, each naming its tensor; clean files load unchanged."""

import copy
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import zoo
from zoo.hub import CheckpointError
from zoo.packing import PackedBinaryConv2d

PADDED = "inception3a.branch3.1.conv.conv"  # 16 input channels: bits 16..31 of each word are padding


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def packed():
    torch.manual_seed(0)
    model = zoo.create_model("xnor_googlenet", num_classes=10, in_chans=1, small_input=True).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return zoo.pack_model(model)


@pytest.fixture(scope="module")
def saved(packed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "xnor_googlenet"
    packed.save_pretrained(folder)
    return folder


def _edited(saved, tmp_path, edit):
    """A copy of ``saved`` whose tensors ``edit(tensors)`` changed in place, with the same ``__metadata__``."""
    dst = tmp_path / "edited"
    dst.mkdir()
    for f in saved.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    path = str(dst / "model.safetensors")
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata=metadata)
    return dst


def _refused(folder, tensor, problem):
    with pytest.raises(CheckpointError, match=re.escape(f"tensor {tensor!r} {problem}")):
        zoo.from_pretrained(folder)


def test_clean_file_loads_with_identical_outputs(saved, packed, images):
    model = zoo.from_pretrained(saved)
    original, loaded = packed.net.state_dict(), model.net.state_dict()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    with torch.no_grad():
        assert torch.equal(model(images), packed(images))


def test_padding_bits_are_refused(saved, packed, images, tmp_path):
    name = f"{PADDED}.weight_bits"
    bits = packed.net.state_dict()[name]
    assert bits.shape[-1] == 1 and int((bits & ~0xFFFF).abs().sum()) == 0

    def set_padding(t):
        t[name][3, 1, 2, 0] |= 1 << 20

    folder = _edited(saved, tmp_path, set_padding)
    _refused(folder, name, "has padding bits set (bits past channel 15 in the last word must be 0): 1 value, "
                           "the first at index (3, 1, 2)")
    # what the check prevents: the same bits loaded unchecked move the layer's outputs
    layer = packed.net.get_submodule(PADDED)
    unchecked = copy.deepcopy(layer)
    unchecked.weight_bits.copy_(load_file(str(folder / "model.safetensors"))[name])
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert not torch.equal(unchecked(x)[0, 3], layer(x)[0, 3])
        assert torch.equal(unchecked(x)[0, 4:], layer(x)[0, 4:])


def test_bit_31_of_a_padded_word_is_refused(saved, tmp_path):
    name = f"{PADDED}.weight_bits"

    def set_sign_bit(t):
        t[name][0, 0, 0, 0] |= -(1 << 31)

    _refused(_edited(saved, tmp_path, set_sign_bit), name, "has padding bits set")


@pytest.mark.parametrize("value, name", [
    (float("nan"), "fc.weight"),
    (float("inf"), f"{PADDED}.alpha"),
    (float("-inf"), "inception3a.branch3.1.bn.bias"),
    (float("nan"), "conv1.bn.running_var"),
])
def test_non_finite_floats_are_refused(saved, tmp_path, value, name):
    def poison(t):
        t[name].view(-1)[1] = value

    folder = _edited(saved, tmp_path, poison)
    _refused(folder, name, "is not finite (NaN or infinite): 1 value, the first at index (")


def test_negative_alpha_is_refused(saved, tmp_path):
    name = f"{PADDED}.alpha"

    def negate(t):
        t[name][5] = -t[name][5]

    _refused(_edited(saved, tmp_path, negate), name, "is negative (alpha = mean |W| is >= 0): 1 value, the first at "
                                                     "index (5,)")


def test_negative_running_var_is_refused(saved, tmp_path):
    name = f"{PADDED.rsplit('.', 1)[0]}.norm.running_var"

    def negate(t):
        t[name][2] = -0.5

    _refused(_edited(saved, tmp_path, negate), name, "is negative (a variance is >= 0): 1 value, the first at "
                                                     "index (2,)")


def test_zero_alpha_of_an_all_zero_filter_loads(tmp_path, images):
    model = zoo.create_model("xnor_googlenet", num_classes=10, in_chans=1, small_input=True).eval()
    conv = model.get_submodule(PADDED)
    with torch.no_grad():
        conv.weight[7].zero_()  # a pruned filter: alpha = mean |W| = 0, the filter outputs its bias
    packed = zoo.pack_model(model)
    layer = packed.net.get_submodule(PADDED)
    assert isinstance(layer, PackedBinaryConv2d) and float(layer.alpha[7]) == 0.0
    packed.save_pretrained(tmp_path / "pruned")
    loaded = zoo.from_pretrained(tmp_path / "pruned")
    assert float(loaded.net.get_submodule(PADDED).alpha[7]) == 0.0
    with torch.no_grad():
        assert torch.equal(loaded(images), packed(images))
