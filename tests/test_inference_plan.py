import pytest
import torch
from timm.models.resnet import BasicBlock
from zoo_kernels import routes
from zoo_kernels.cpu import cpu_kernel_available
from zoo_kernels.routes import force_route

from zoo import inference_plan
from zoo.inference_plan import plan_for
from zoo.packing import PackedBasicBlock, PackedBinaryConvBlock, pack

pytestmark = pytest.mark.skipif(not cpu_kernel_available(), reason="prebound calls need the compiled CPU kernels")


def _block(trained_xnor, index: int) -> PackedBasicBlock:
    blocks = [m for m in pack(trained_xnor).modules() if isinstance(m, PackedBasicBlock)]
    return blocks[index]


def _input(block: PackedBasicBlock, n: int = 3) -> torch.Tensor:
    return torch.randn(n, block.conv1.norm.num_features, 9, 9).contiguous(memory_format=torch.channels_last)


# layer1[1]: identity shortcut; layer2[0]: stride 2, packed downsample (both conv1 -> conv2 through packed signs);
# layer3[0]: 256 filters, conv1's float output
@pytest.mark.parametrize("index", [1, 2, 4])
def test_a_block_runs_its_plan_from_the_second_call_with_the_same_values(trained_xnor, index, monkeypatch):
    block = _block(trained_xnor, index)
    x = _input(block)
    with torch.no_grad(), force_route("popcount"):
        first = block(x)  # the ordinary fused forward, which then builds the plan
        assert plan_for(block, x) is not None
        unfused = BasicBlock.forward(block, x)  # every layer on its own
        monkeypatch.setattr(PackedBinaryConvBlock, "fused_forward", lambda *a, **k: pytest.fail("not the plan"))
        second = block(x)
    assert torch.equal(second, first)
    torch.testing.assert_close(second, unfused, rtol=1e-5, atol=1e-5 * unfused.abs().max().item())


def _edit_alpha(block):
    block.conv2.conv.alpha.data.mul_(2.0)  # no version counter sees it


def _edit_norm(block):
    block.bn1.running_var.data.add_(1.0)


@pytest.mark.parametrize("edit", [_edit_alpha, _edit_norm])
def test_an_edit_of_any_tensor_drops_the_plan(trained_xnor, edit):
    block = _block(trained_xnor, 2)
    x = _input(block)
    with torch.no_grad(), force_route("popcount"):
        before = block(x)
        assert torch.equal(block(x), before)  # the plan
        edit(block)
        assert plan_for(block, x) is None
        after = block(x)
        want = BasicBlock.forward(block, x)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_the_plan_follows_the_input_signature_the_routes_and_the_mode(trained_xnor):
    block = _block(trained_xnor, 2)
    x = _input(block)
    with torch.no_grad():
        with force_route("popcount"):
            block(x)
            assert plan_for(block, x) is not None
            assert plan_for(block, _input(block, 5)) is None  # another batch: another signature
            assert plan_for(block, x.contiguous()) is None  # another layout
            with force_route("int8"):
                assert plan_for(block, x) is None  # another route state
            routes.clear()
            assert plan_for(block, x) is None  # the choices changed
            block(x)
            block.train()
            assert plan_for(block, x) is None
            block.eval()


def test_calls_inside_a_record_block_are_recorded_one_by_one(trained_xnor):
    block = _block(trained_xnor, 2)
    x = _input(block)
    with torch.no_grad(), force_route("popcount"):
        block(x)
        block(x)
        with routes.record() as seen:
            block(x)
    assert [route for _, route in seen] == ["popcount:auto"] * 3  # conv1, the downsample, conv2


def test_a_module_keeps_at_most_a_few_plans(trained_xnor):
    block = _block(trained_xnor, 1)
    with torch.no_grad(), force_route("popcount"):
        xs = [_input(block, n) for n in range(1, inference_plan.MAX_PLANS + 3)]
        for x in xs:
            block(x)
        kept = block.__dict__["_prebound_plans"]
        assert len(kept) == inference_plan.MAX_PLANS
        assert plan_for(block, xs[-1]) is not None and plan_for(block, xs[0]) is None


def test_an_edit_of_the_packed_weight_words_reaches_the_kernel(trained_xnor):
    # the plan leaves the words' contents to the compiled kernel, which fingerprints them on every call
    block = _block(trained_xnor, 1)
    x = _input(block)
    with torch.no_grad(), force_route("popcount"):
        before = block(x)
        assert torch.equal(block(x), before)
        block.conv2.conv.weight_bits.data.bitwise_not_()
        after = block(x)
        want = BasicBlock.forward(block, x)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_a_block_without_a_plan_does_not_try_again_until_the_routes_change(trained_xnor, monkeypatch):
    block = _block(trained_xnor, 1)
    x = _input(block)
    tries = []
    build = PackedBasicBlock._prebound_plan
    monkeypatch.setattr(PackedBasicBlock, "_prebound_plan", lambda self, x: tries.append(1) or None)
    with torch.no_grad(), force_route("popcount"):
        for _ in range(3):
            block(x)
        assert len(tries) == 1  # the first call found none; the next ones did not look again
        routes.clear()  # the choices changed: worth another look
        block(x)
        assert len(tries) == 2
    monkeypatch.setattr(PackedBasicBlock, "_prebound_plan", build)
