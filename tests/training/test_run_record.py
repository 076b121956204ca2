"""zoo.training.run_record: a checkpoint carries the record of the run that wrote it, and a later test reads it."""

import pytorch_lightning as pl
import torch
from torch import nn

from zoo.training.run_record import RunRecord


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    return torch.utils.data.DataLoader(data, batch_size=4)


def _trainer(tmp_path, record: RunRecord, **kwargs) -> pl.Trainer:
    return pl.Trainer(default_root_dir=tmp_path, callbacks=[record], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", **kwargs)


def test_the_record_goes_into_the_checkpoint_and_comes_back_in_a_test(tmp_path):
    record = RunRecord()
    record.recipe, record.seed, record.hardware = "trainer:\n  max_steps: 3\n", 7, "a CPU, 2 cores"
    trainer = _trainer(tmp_path, record, max_steps=3)
    trainer.fit(_Tiny(), _loader())
    (ckpt,) = tmp_path.rglob("*.ckpt")
    stored = torch.load(ckpt, weights_only=True)["callbacks"]["RunRecord"]  # plain data: loads without pickle
    assert stored["recipe"] == record.recipe and stored["seed"] == 7 and stored["hardware"] == "a CPU, 2 cores"
    assert 0 < stored["fit_seconds"] <= record.fit_seconds()

    later = RunRecord()  # a test run: its own command knows nothing of the training run
    _trainer(tmp_path, later).test(_Tiny(), _loader(), ckpt_path=ckpt, verbose=False)
    assert later.restored == stored
    assert later.checkpoint == {"epoch": 0, "global_step": 3}


def test_a_checkpoint_without_a_record_restores_none(tmp_path):
    trainer = _trainer(tmp_path, RunRecord(), max_steps=2)
    trainer.fit(_Tiny(), _loader())
    ckpt = next(tmp_path.rglob("*.ckpt"))
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint["callbacks"]["RunRecord"]
    torch.save(checkpoint, tmp_path / "bare.ckpt")
    later = RunRecord()
    _trainer(tmp_path, later).test(_Tiny(), _loader(), ckpt_path=tmp_path / "bare.ckpt", verbose=False)
    assert later.restored is None and later.checkpoint == {"epoch": 0, "global_step": 2}


def test_a_resumed_fit_adds_its_time_to_the_restored_one():
    record = RunRecord()
    record.load_state_dict({"recipe": "r", "seed": 0, "hardware": "h", "fit_seconds": 100.0})
    assert record.fit_seconds() == 100.0
    record.on_fit_start(None, None)
    assert 100.0 <= record.state_dict()["fit_seconds"] < 110.0
