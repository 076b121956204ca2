import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import zoo
from zoo.data import DigitsDataModule
from zoo.training import ZooClassifier
from zoo.training.weight_update import WeightUpdate, binary_layers, center_and_clamp_, set_weight_gradient_


def test_binary_layers_are_the_scaled_sign_layers_only():
    model = zoo.create_model("xnor_resnet18", num_classes=10, in_chans=1, small_input=True)
    layers = list(binary_layers(model))
    assert len(layers) == 19  # 16 block convs + 3 downsample convs; conv1 and fc stay float
    assert model.conv1 not in layers and model.fc not in layers
    assert list(binary_layers(zoo.create_model("fp_resnet18", num_classes=10))) == []


def test_set_weight_gradient_reaches_every_binary_layer():
    model = zoo.create_model("bwn_alexnet", num_classes=10, in_chans=1, small_input=True)
    assert set_weight_gradient_(model, "authors") == 6
    assert {layer.kernel_quantizer.gradient for layer in binary_layers(model)} == {"authors"}
    with pytest.raises(ValueError, match="unknown weight gradient 'authorz'"):
        set_weight_gradient_(model, "authorz")


def test_center_and_clamp_is_the_authors_meancenter_then_clamp():
    model = zoo.create_model("bwn_resnet18", num_classes=10, in_chans=1, small_input=True)
    layer = model.layer2[0].conv1
    with torch.no_grad():
        layer.weight.normal_(0.3, 1.0)
    w = layer.weight.detach().numpy().copy()
    expected = np.clip(w - w.mean(axis=1, keepdims=True), -1, 1)  # meancenterConvParms, then clampConvParms
    float_conv = model.conv1.weight.detach().clone()
    center_and_clamp_(model)
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected, rtol=0, atol=1e-6)
    assert torch.equal(model.conv1.weight, float_conv)  # the float first conv is not touched
    only_clamp = zoo.create_model("bwn_resnet18", num_classes=10, in_chans=1, small_input=True)
    with torch.no_grad():
        only_clamp.layer2[0].conv1.weight.copy_(torch.from_numpy(w))
    center_and_clamp_(only_clamp, mean_center=False)
    np.testing.assert_allclose(only_clamp.layer2[0].conv1.weight.detach().numpy(), np.clip(w, -1, 1), atol=0)


def _fit_and_watch(tmp_path, callbacks) -> tuple[ZooClassifier, list[float]]:
    """Two training steps with layer2.0.conv1's latent weights started beyond [-1, 1]; the largest |W| of that layer
    that each training forward sees."""
    pl.seed_everything(0)
    module = ZooClassifier("xnor_resnet18", lr_schedule="none")
    layer = module.model.layer2[0].conv1.conv
    with torch.no_grad():
        layer.weight.mul_(100.0)
    seen = []
    layer.register_forward_pre_hook(lambda m, args: seen.append(m.weight.abs().max().item()) if m.training else None)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, callbacks=callbacks)
    trainer.fit(module, DigitsDataModule(image_size=8, batch_size=32))
    return module, seen


def test_callback_applies_the_mechanics_before_every_step(tmp_path):
    module, seen = _fit_and_watch(tmp_path, [WeightUpdate("authors", mean_center=True, clamp=True)])
    assert {layer.kernel_quantizer.gradient for layer in binary_layers(module)} == {"authors"}
    assert len(seen) == 2 and max(seen) <= 1.0
    _, unclamped = _fit_and_watch(tmp_path, [])
    assert max(unclamped) > 1.0  # without the callback the same run leaves [-1, 1]


def test_callback_refuses_an_unknown_gradient():
    with pytest.raises(ValueError, match="known: paper, exact, authors"):
        WeightUpdate("binary")
