import pytest
import pytorch_lightning as pl
import torch

from zoo.data import DigitsDataModule
from zoo.training import ZooClassifier


def test_few_steps_on_digits_lower_the_loss_and_log_topk(digits_batch):
    images, labels = digits_batch
    module = ZooClassifier("bwn_resnet18", lr=3e-3, lr_schedule="none")
    opt = module.configure_optimizers()
    module.train()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(images[:32]), labels[:32])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_trainer_fit_test_and_predict_on_digits(tmp_path):
    pl.seed_everything(0)
    dm = DigitsDataModule(image_size=8, batch_size=32)
    module = ZooClassifier("xnor_resnet18", lr_schedule="cosine")
    trainer = pl.Trainer(
        max_steps=4, limit_val_batches=1, limit_test_batches=2, limit_predict_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
    )
    trainer.fit(module, dm)
    results = trainer.test(module, dm, verbose=False)[0]
    assert {"test/top1", "test/top5", "test/loss"} <= results.keys()
    assert 0.0 <= results["test/top1"] <= results["test/top5"] <= 1.0
    predictions = trainer.predict(module, dm)[0]
    assert predictions.shape == (32,) and predictions.dtype == torch.int64
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and scheduler.T_max == 4


def test_step_schedule_and_optimizers():
    module = ZooClassifier("fp_resnet18", optimizer="sgd", lr=0.1, lr_schedule="step", step_epochs=5, step_gamma=0.5)
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert config["lr_scheduler"]["scheduler"].step_size == 5


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        ZooClassifier("fp_resnet18", optimizer="lamb")
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        ZooClassifier("fp_resnet18", lr_schedule="linear")
    with pytest.raises(KeyError, match="known models"):
        ZooClassifier("xnor_alexnet9")


def test_regime_sets_lr_and_weight_decay_at_each_epoch(tmp_path):
    class Record(pl.Callback):
        seen: list[tuple[float, float]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            group = trainer.optimizers[0].param_groups[0]
            self.seen.append((group["lr"], group["weight_decay"]))

    regime = [(0, 1e-2, 5e-4), (2, 5e-3, 5e-4), (3, 1e-3, 0.0)]
    module = ZooClassifier("fp_resnet18", optimizer="sgd", lr=1e-2, lr_schedule="regime", regime=regime)
    trainer = pl.Trainer(
        max_epochs=4, limit_train_batches=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()], default_root_dir=tmp_path,
    )
    trainer.fit(module, DigitsDataModule(image_size=8, batch_size=8))
    assert Record.seen == [(1e-2, 5e-4), (1e-2, 5e-4), (5e-3, 5e-4), (1e-3, 0.0)]


def test_regime_needs_rows_from_epoch_zero():
    with pytest.raises(ValueError, match="go with lr_schedule='regime'"):
        ZooClassifier("fp_resnet18", lr_schedule="regime")
    with pytest.raises(ValueError, match="go with lr_schedule='regime'"):
        ZooClassifier("fp_resnet18", regime=[(0, 1e-3, 0.0)])
    with pytest.raises(ValueError, match="start at epoch 0 with strictly increasing"):
        ZooClassifier("fp_resnet18", lr_schedule="regime", regime=[(0, 1e-3, 0.0), (5, 1e-4, 0.0), (5, 1e-5, 0.0)])
    with pytest.raises(ValueError, match="start at epoch 0"):
        ZooClassifier("fp_resnet18", lr_schedule="regime", regime=[(1, 1e-3, 0.0)])
