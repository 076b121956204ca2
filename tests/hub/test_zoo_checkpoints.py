"""Every model of the zoo saves as a packed checkpoint, loads with from_pretrained and runs on the packed kernels."""

import pytest
import torch

import zoo
from zoo.layers import BinaryConvBlock
from zoo.packing import PackedBinaryConv2d, PackedBinaryLinear


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_zoo_model_round_trips_packed_and_runs_on_bits(name, tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        model.train()(torch.randn(16, 1, 8, 8))  # non-trivial BatchNorm running statistics
        expected = model.eval()(x)
    zoo.pack_model(model).save_pretrained(tmp_path / name)
    loaded = zoo.from_pretrained(tmp_path / name)
    packed = [m for m in loaded.modules() if isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear))]
    scheme = model.binarize_config
    assert (len(packed) > 0) == (not scheme.is_float)
    if scheme.binarizes_inputs and scheme.input_bits is None:  # sign inputs: the convs run on XNOR-popcount
        assert any(getattr(m, "runs_on_bits", False) for m in packed)
    with torch.no_grad():
        got = loaded(x)
        torch.testing.assert_close(got, zoo.pack(model)(x), rtol=1e-6, atol=1e-6)  # the checkpoint is the packed net
    if not scheme.binarizes_inputs:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        return
    # With binarized inputs, a pre-sign value within rounding of 0 (1e-8 in an untrained network) takes one sign on the
    # exact integer kernels and may take the other in the float reference, and a flip changes every layer after it;
    # so each packed block is compared with its trainable block on the same input (what the float model feeds it).
    inputs, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, BinaryConvBlock):
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: inputs.__setitem__(name, (i[0], o))))
    with torch.no_grad():
        model(x)
        for hook in hooks:
            hook.remove()
        assert inputs
        net = dict(loaded.net.named_modules())
        for name, (block_input, block_output) in inputs.items():
            torch.testing.assert_close(net[name](block_input), block_output, rtol=1e-4, atol=1e-4)
