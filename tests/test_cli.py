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
        "--trainer.enable_progress_bar", "false",
    ]


def test_recipe_fit_then_test_validate_predict_from_checkpoint(tmp_path, hub_server):
    out = _run(["fit", *_short(tmp_path), "--publish.enabled", "true", "--publish.folder", "hub",
                "--publish.token", "hf_secret_token"], cwd=tmp_path, warnings=True)
    assert "xnor_resnet18: test top-1" in out
    assert "args parameter is intended" not in out  # the command line reaches LightningCLI once, through sys.argv
    assert "anonymous setting" not in out  # no deprecated wandb setting passed on
    for noise in ("💡 Tip", "LeafSpec", "git root", "No CUDA runtime", "Traceback"):
        assert noise not in out
    lines = out.splitlines()
    (checkpoint,) = [line.removeprefix("checkpoint: ") for line in lines if line.startswith("checkpoint: ")]
    assert Path(checkpoint).suffix == ".ckpt" and (tmp_path / checkpoint).is_file()
    assert 'packed: hub/xnor_resnet18-digits  (zoo.from_pretrained("hub/xnor_resnet18-digits"))' in lines
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
    out = _run(["test", *_short(tmp_path), "--ckpt_path", str(checkpoints[-1]), "--trainer.max_epochs", "7",
                "--publish.enabled", "true", "--publish.folder", "tested"], cwd=tmp_path)
    assert "test top-1" in out
    tested = json.loads((tmp_path / "tested" / "xnor_resnet18-digits" / "config.json").read_text())
    recipe = tested["training"]["recipe"]  # the fit's config, stored in the checkpoint, not this command's
    assert recipe == config["training"]["recipe"] and "max_steps: 3" in recipe and "max_epochs: 7" not in recipe
    assert tested["evaluation"] == {"command": "zoo test", "checkpoint": checkpoints[-1].name, "epoch": 0,
                                    "global_step": 3, "hardware": tested["evaluation"]["hardware"],
                                    "run_record": True}
    assert 0 < tested["training"]["fit_seconds"] <= config["training"]["fit_seconds"]
    assert tested["training"]["seed"] == 0 and tested["training"]["hardware"] == config["training"]["hardware"]
    card = (tmp_path / "tested" / "xnor_resnet18-digits" / "README.md").read_text()
    assert f"| evaluated | `zoo test` of checkpoint `{checkpoints[-1].name}` (epoch 0, step 3)" in card
    assert f"on the config stored in the checkpoint `{checkpoints[-1].name}`:" in card
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
    out = _run(["models", "xnor_*resnet*", "--names"], cwd=tmp_path)
    assert out.split() == ["xnor_bireal_resnet18", "xnor_nobeta_bireal_resnet18", "xnor_nobeta_resnet18",
                           "xnor_nobeta_resnet34", "xnor_resnet18", "xnor_resnet34"]


# ------------------------------------------------------------------------------------------- help and models


def _exit_code(argv: list[str]) -> int:
    from zoo.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_help_lists_every_subcommand_with_one_line(capsys):
    from pytorch_lightning.cli import LightningCLI

    from zoo.cli import _TOOLS, overview

    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    section = out.split("subcommands:\n")[1].split("\n\n")[0].splitlines()
    listed = {line.split()[0]: line.split(maxsplit=1)[1] for line in section}
    assert set(listed) == set(LightningCLI.subcommands()) | set(_TOOLS)
    assert all(len(text.split()) >= 5 for text in listed.values())  # a line that says something
    assert _exit_code(["-h"]) == 0 and capsys.readouterr().out == out == overview()
    assert _exit_code([]) == 2  # no subcommand: the overview, on stderr, as an error
    assert capsys.readouterr().err == out


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict", "models", "bench", "cards", "publish"])
def test_every_subcommand_has_a_help(subcommand, capsys):
    from zoo.cli import SUBCOMMANDS

    assert subcommand in SUBCOMMANDS
    assert _exit_code([subcommand, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and f" {subcommand}" in out.splitlines()[0]
    assert "--help" in out and len(out.splitlines()) > 5


def test_models_prints_a_table_with_the_cards_figures(capsys):
    from zoo.cli import main

    card = json.loads((ROOT / "cards" / "xnor_resnet18-digits" / "config.json").read_text())
    main(["models", "xnor_resnet18"])
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["model", "scheme", "architecture", "bits"]
    assert row.split() == ["xnor_resnet18", "xnor", "resnet18", "1/1", f"{card['sizes']['packed_bytes'] / 1e6:.2f}",
                           "MB", f"{100 * card['training']['top1']:.2f}%",
                           "yes" if (ROOT / "cards" / "xnor_resnet18-digits" / "model.safetensors").is_file() else "no"]


def test_models_says_when_nothing_matches(capsys):
    assert _exit_code(["models", "resnet*"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("zoo: no model matches 'resnet*' (") and "'*resnet*'" in captured.err


def test_version(capsys):
    import zoo
    from zoo.cli import main

    main(["--version"])
    assert capsys.readouterr().out == f"zoo (xnor-zoo) {zoo.__version__}\n"


def test_unknown_model_in_config_is_a_clear_error(tmp_path):
    from zoo.cli import ZooCLI

    with pytest.raises(KeyError, match="unknown model 'xnor_resnet19'"):
        ZooCLI(args=["--config", str(RECIPE), "--model.model_name", "xnor_resnet19"], run=False)


# ------------------------------------------------------------------------------------------------------- errors

BAD_YAML = "model:\n  model_name: [xnor_resnet18\n  lr: 0.1\n"
HINT = "zoo: --debug (or ZOO_DEBUG=1) shows the traceback"


def _fails(args: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    """Run ``zoo args`` expecting an error: its exit code and stderr."""
    env = {**{k: v for k, v in os.environ.items() if k != "ZOO_DEBUG"}, "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore", **env}
    proc = subprocess.run(ZOO + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["fit", "--config", str(RECIPE), "--model.model_name", "xnor_resnet19"], 1,
         "zoo: error: unknown model 'xnor_resnet19'; did you mean xnor_resnet18, xnor_resnet34 or "
         "xnor_nobeta_resnet18? (`zoo models` lists them)"),
        (["test", "--config", str(RECIPE), "--ckpt_path", "runs/missing.ckpt"], 1,
         "zoo: error: --ckpt_path runs/missing.ckpt: no such checkpoint file"),
        (["test", "--config", str(RECIPE), "--publish.enabled", "true"], 1,
         "zoo: error: zoo test --publish.enabled true needs --ckpt_path: without a checkpoint the tested weights are "
         "the untrained initial ones"),
        (["fit", "--config", "bad.yaml"], 2,
         "zoo: error: bad.yaml, line 3, column 5: expected ',' or ']', but got ':' (while parsing a flow sequence, "
         "line 2)"),
    ],
    ids=["unknown-model", "missing-checkpoint", "publish-without-checkpoint", "malformed-yaml"],
)
def test_errors_are_one_line_without_a_traceback(args, code, message, tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD_YAML)
    returncode, stderr = _fails(args, tmp_path)
    lines = stderr.splitlines()
    assert returncode == code
    assert lines[-2:] == [message, HINT]
    assert len(lines) <= 3 and "Traceback" not in stderr  # at most Lightning's "Seed set to 0" before them


@pytest.mark.parametrize("env", [{}, {"ZOO_DEBUG": "1"}], ids=["--debug", "ZOO_DEBUG=1"])
def test_debug_shows_the_traceback(env, tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD_YAML)
    returncode, stderr = _fails(["fit", "--config", "bad.yaml"] + ([] if env else ["--debug"]), tmp_path, **env)
    assert returncode == 1 and stderr.startswith("Traceback (most recent call last):")
    assert stderr.splitlines()[-1].endswith("ConfigFileError: bad.yaml, line 3, column 5: expected ',' or ']', but "
                                            "got ':' (while parsing a flow sequence, line 2)")
    assert HINT not in stderr


def test_a_hostile_card_name_is_one_line_and_touches_nothing(tmp_path, capsys):
    from zoo.cli import main

    config = json.loads((ROOT / "cards" / "xnor_resnet18-digits" / "config.json").read_text())
    (tmp_path / "hub" / "evil").mkdir(parents=True)
    (tmp_path / "hub" / "evil" / "config.json").write_text(json.dumps({**config, "name": "../victim"}))
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as info:
        main(["cards", "--from", str(tmp_path / "hub"), "--out", str(tmp_path / "cards")])
    assert info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"zoo: error: {tmp_path / 'hub' / 'evil' / 'config.json'}: name '../victim' is not a valid model name: one "
        "folder name of 1 to 128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit", HINT]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "victim"]
    assert [p.name for p in (tmp_path / "victim").iterdir()] == ["precious.txt"]


def test_a_bad_publish_name_stops_fit_before_training(tmp_path, capsys, monkeypatch):
    from zoo.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["zoo"])  # as from the command line: LightningCLI compares the two
    with pytest.raises(SystemExit) as info:
        main(["fit", *_short(tmp_path), "--publish.enabled", "true", "--publish.name", "../evil"])
    assert info.value.code == 1
    assert capsys.readouterr().err.splitlines()[-2:] == [
        "zoo: error: publish name '../evil' is not a valid model name: one folder name of 1 to 128 ASCII letters, "
        "digits, '.', '_' or '-', starting with a letter or digit", HINT]
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "hub").exists()
    assert not (tmp_path.parent / "evil").exists()


def test_a_parse_error_is_the_error_and_the_help_tip(capsys, monkeypatch):
    from zoo.cli import main

    monkeypatch.setattr(sys, "argv", ["zoo"])
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(RECIPE), "--trainer.max_stepz", "3"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["tip: For details of accepted options run: zoo fit --help",
                                                    "error: unrecognized arguments: --trainer.max_stepz 3"]


@pytest.mark.parametrize(
    ("text", "arg", "message"),
    [
        ("model:\n\tmodel_name: x\n", "--config",
         "line 2, column 1: found character '\\t' that cannot start any token"),
        ('model:\n  model_name: "x\n', "--config", "line 3, column 1: found unexpected end of stream (while scanning a "
                                                   "quoted scalar, line 2)"),
        ("a: 1\n b: 2\n", "--trainer", "line 2, column 3: mapping values are not allowed here"),
        ("a: *nowhere\n", "--model", "line 1, column 4: found undefined alias 'nowhere'"),
    ],
)
def test_a_malformed_yaml_names_its_file_line_and_column(text, arg, message, tmp_path):
    from zoo.cli import ConfigFileError, check_config_files

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    for argv in (["fit", arg, str(path)], ["fit", f"{arg}={path}"], ["fit", "-c", str(path)]):
        with pytest.raises(ConfigFileError) as info:
            check_config_files(argv)
        assert str(info.value) == f"{path}, {message}"


def test_config_check_passes_valid_yaml_and_leaves_other_files(tmp_path):
    from zoo.cli import ConfigFileError, check_config_files

    (tmp_path / "tagged.yaml").write_text("model: !custom\n  lr: 0.1\n---\nsecond: document\n")  # syntax only
    (tmp_path / "binary.yml").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "notes.txt").write_text("a: [")
    check_config_files(["fit", "--config", str(tmp_path / "tagged.yaml"), str(tmp_path / "notes.txt"),
                        str(tmp_path / "absent.yaml"), str(RECIPE)])
    with pytest.raises(ConfigFileError, match="binary.yml: not valid YAML"):
        check_config_files(["--config", str(tmp_path / "binary.yml")])
