"""The ``zoo`` command end to end on the digits recipe, as a user runs it (subprocesses, real files)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "digits" / "xnor_resnet18.yaml"
ZOO = [sys.executable, "-m", "zoo.cli"]


def _run(args: list[str], cwd: Path, timeout: int = 400, warnings: bool = False) -> str:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if not warnings:
        env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(ZOO + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def _short(tmp_path: Path, steps: int = 3) -> list[str]:
    return [
        "--config", str(RECIPE),
        "--trainer.max_steps", str(steps),
        "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "2",
        "--trainer.limit_predict_batches", "1",
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    ]


def test_recipe_fit_then_test_validate_predict_from_checkpoint(tmp_path, hub_server):
    out = _run(["fit", *_short(tmp_path), "--publish.enabled", "true", "--publish.folder", "hub",
                "--publish.token", "hf_secret_token"], cwd=tmp_path, warnings=True)
    assert "xnor_resnet18: test top-1" in out
    assert "args parameter is intended" not in out  # the command line reaches LightningCLI once, through sys.argv
    assert "anonymous setting" not in out  # no deprecated wandb setting passed on
    published = tmp_path / "hub" / "xnor_resnet18-digits"
    assert "published xnor_resnet18-digits" in out
    assert {p.name for p in published.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    config = json.loads((published / "config.json").read_text())
    assert config["input_size"] == [1, 8, 8] and config["training"]["dataset"] == "digits"
    assert 0.0 <= config["training"]["top1"] <= 1.0 and config["training"]["fit_seconds"] > 0
    assert "model_name: xnor_resnet18" in config["training"]["recipe"]
    assert "hf_secret_token" not in (published / "config.json").read_text() + (published / "README.md").read_text()
    out = _run(["publish", str(published), "--repo-id", "zoo-tests/cli-digits", "--token", "hf_cli"], cwd=tmp_path)
    assert "pushed" in out and hub_server.head("zoo-tests/cli-digits")
    out = _run(["cards", "--from", "hub", "--out", "cards"], cwd=tmp_path)
    assert "| xnor_resnet18-digits | xnor | digits |" in out
    assert (tmp_path / "cards" / "index.md").is_file()
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints, "fit must leave a checkpoint"
    out = _run(["test", *_short(tmp_path), "--ckpt_path", str(checkpoints[-1])], cwd=tmp_path)
    assert "test top-1" in out
    _run(["validate", *_short(tmp_path), "--ckpt_path", str(checkpoints[-1])], cwd=tmp_path)
    _run(["predict", *_short(tmp_path), "--ckpt_path", str(checkpoints[-1])], cwd=tmp_path)
    assert list(tmp_path.rglob("offline-run-*")), "the recipe's wandb logger must record an offline run"


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes" / "digits").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_digits_recipe_builds(recipe, tmp_path):
    from zoo.cli import ZooCLI
    from zoo.data import DigitsDataModule

    cli = ZooCLI(args=["--config", str(recipe), "--trainer.default_root_dir", str(tmp_path),
                       "--trainer.logger.init_args.save_dir", str(tmp_path)], run=False)
    assert cli.model.hparams.model_name == recipe.stem
    assert recipe.stem.startswith(cli.model.model.binarize_config.name + "_")
    assert isinstance(cli.datamodule, DigitsDataModule) and cli.model.hparams.num_classes == 10
    assert cli.trainer.max_epochs > 0 and type(cli.trainer.logger).__name__ == "ZooWandbLogger"


def test_ddp_two_cpu_processes(tmp_path):
    out = _run(
        ["fit", *_short(tmp_path, steps=2), "--trainer.devices", "2", "--trainer.strategy", "ddp"], cwd=tmp_path
    )
    assert "test top-1" in out
    assert "distributed_backend=gloo" in out and "All distributed processes registered" in out


def test_models_tool_lists_registry(tmp_path):
    out = _run(["models", "xnor_*resnet*"], cwd=tmp_path)
    assert out.split() == ["xnor_bireal_resnet18", "xnor_nobeta_bireal_resnet18", "xnor_nobeta_resnet18",
                           "xnor_nobeta_resnet34", "xnor_resnet18", "xnor_resnet34"]


def test_unknown_model_in_config_is_a_clear_error(tmp_path):
    from zoo.cli import ZooCLI

    with pytest.raises(KeyError, match="unknown model 'xnor_resnet19'"):
        ZooCLI(args=["--config", str(RECIPE), "--model.model_name", "xnor_resnet19"], run=False)
