"""The ``zoo`` command: Lightning's ``fit`` / ``validate`` / ``test`` / ``predict`` on recipes, plus zoo tools.

    zoo fit --config recipes/digits/xnor_resnet18.yaml
    zoo test --config recipes/digits/xnor_resnet18.yaml --ckpt_path runs/.../last.ckpt
    zoo models 'xnor_*'
    zoo publish hub/xnor_resnet18-digits --repo-id org/xnor_resnet18-digits
    zoo cards                       # regenerate cards/ (index.md, index.html) and print the model index
    zoo cards --from hub            # ... adding or updating the cards of published checkpoint folders
    zoo cards --bench bench.json    # ... with each card's CPU latency from `zoo bench --json`
    zoo cards --imagenet            # ... with the <model>-imagenet cards of the paper's reported accuracy
    zoo cards --rerun other/hub     # ... recording reruns of the cards' recipes (reproducibility)
    zoo bench --json bench.json     # float vs packed XNOR speed (convs, models) and checkpoint sizes

An error (an unknown model, a missing checkpoint, a YAML file that does not parse, ...) is one line on stderr and a
non-zero exit: 2 for the command line and its config files, 1 otherwise; ``--debug`` anywhere on the command line,
or ``ZOO_DEBUG=1``, shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from ._unknown_name import UnknownNameError
from .hub.publish import PublishOptions, hardware_description, publish, publish_name
from .training.callbacks import RunReport
from .training.module import ZooClassifier

__all__ = ["ConfigFileError", "ZooCLI", "main"]

_CONFIG_SUFFIXES = (".yaml", ".yml")
_CKPT_PATH_WORDS = ("best", "last", "hpc")  # Lightning's ckpt_path values that name no file


class ConfigFileError(ValueError):
    """A YAML file named on the command line does not parse."""


class ZooArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors end with the error and the ``--help`` tip but without the usage (some 60
    lines of options, before the error)."""

    def print_usage(self, file=None) -> None:
        pass


class ZooCLI(LightningCLI):
    """LightningCLI over :class:`ZooClassifier` and any LightningDataModule (given by ``class_path``).

    ``model.num_classes`` and ``model.in_chans`` follow the data module. ``fit`` ends with a ``test`` of the final
    weights unless ``--test_after_fit false``; with ``--publish.enabled true`` the tested model is packed and written
    to the folder hub (and pushed to the Hub with ``--publish.repo_id``).
    """

    def __init__(self, args: list[str] | None = None, **kwargs):
        kwargs.setdefault("trainer_defaults", {"callbacks": [RunReport()]})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", ZooArgumentParser)
        super().__init__(ZooClassifier, pl.LightningDataModule, subclass_mode_data=True, args=args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True, help="run test on the final weights")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.in_chans", apply_on="instantiate")
        parser.add_class_arguments(PublishOptions, "publish")

    def before_instantiate_classes(self) -> None:
        """A ``--ckpt_path`` that names no file is an error before anything is built (Lightning's comes after)."""
        path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        if (isinstance(path, str) and path not in _CKPT_PATH_WORDS and not path.startswith("registry")
                and "://" not in path and not Path(path).is_file()):
            raise FileNotFoundError(f"--ckpt_path {path}: no such checkpoint file")

    def before_fit(self) -> None:
        self._check_publish_name()

    def before_test(self) -> None:
        self._check_publish_name()

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit", True) and not self.trainer.fast_dev_run:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
            self._publish()

    def after_test(self) -> None:
        self._publish()

    def _report(self) -> RunReport:
        return next(c for c in self.trainer.callbacks if isinstance(c, RunReport))

    def _publish_options(self) -> PublishOptions:
        return PublishOptions(**vars(self.config[self.subcommand].publish))

    def _dataset(self) -> str:
        return getattr(self.datamodule, "dataset_name", type(self.datamodule).__name__)

    def _check_publish_name(self) -> None:
        """A name that cannot be published is an error before the run, not after it."""
        options = self._publish_options()
        if options.enabled:
            publish_name(options, f"{self.model.hparams.model_name}-{self._dataset()}")

    def _publish(self) -> None:
        options = self._publish_options()
        if not options.enabled or not self.trainer.is_global_zero:
            return
        report, dm, dataset = self._report(), self.datamodule, self._dataset()
        run_config = self.config[self.subcommand].clone()
        run_config.publish.token = None  # never publish a secret with the recipe
        recipe = self._parser(self.subcommand).dump(run_config, skip_none=False)
        info = {
            "name": f"{self.model.hparams.model_name}-{dataset}",
            "input_size": list(getattr(dm, "input_size", ())),
            "mean": list(getattr(dm, "mean", ())),
            "std": list(getattr(dm, "std", ())),
            "training": {
                "dataset": dataset,
                "split": "test",
                "top1": report.test_metrics.get("test/top1"),
                "top5": report.test_metrics.get("test/top5"),
                "fit_seconds": report.fit_seconds,
                "hardware": hardware_description(),
                "seed": self.config[self.subcommand].get("seed_everything"),
                "recipe": recipe,
            },
        }
        folder = publish(self.model.model, options, info)
        print(f"published {info['name']} to {folder}" + (f" and {options.repo_id}" if options.repo_id else ""))


def _models(argv: list[str]) -> None:
    from .models import list_models

    for name in list_models(argv[0] if argv else "*"):
        print(name)


def _publish(argv: list[str]) -> None:
    from .hub import from_pretrained

    parser = argparse.ArgumentParser(prog="zoo publish", description="push a packed checkpoint folder to the Hub")
    parser.add_argument("folder", type=Path, help="a checkpoint folder (model.safetensors, config.json)")
    parser.add_argument("--repo-id", required=True, help="Hugging Face Hub repo id, e.g. org/xnor_resnet18-digits")
    parser.add_argument("--token", default=None, help="Hub token (default: hf auth login / HF_TOKEN)")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    model = from_pretrained(args.folder)
    model.config["repo_id"] = args.repo_id
    url = model.push_to_hub(args.repo_id, token=args.token, private=args.private)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")


def _cards(argv: list[str]) -> None:
    from .hub.cards import card_name
    from .hub.latency import BENCH_NAME, read_bench, with_latency
    from .hub.paper_results import paper_card_configs
    from .hub.publish import collect_cards, write_cards
    from .hub.reproduction import with_reproductions

    parser = argparse.ArgumentParser(
        prog="zoo cards", description="regenerate the cards, cards/index.md and the cards/index.html leaderboard"
    )
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="regenerate the cards from the checkpoint folders under this folder hub")
    parser.add_argument("--out", type=Path, default=Path("cards"), help="the cards folder (default: cards)")
    parser.add_argument("--bench", type=Path, default=None,
                        help="a `zoo bench --json` file giving each card its CPU latency (default: OUT/bench.json if "
                             "it exists; without one, the latencies already in the cards are kept)")
    parser.add_argument("--imagenet", action="store_true",
                        help="(re)generate the <model>-imagenet cards: the paper's reported ImageNet accuracy next to "
                             "the packed size measured on the architecture")
    parser.add_argument("--rerun", type=Path, default=None,
                        help="checkpoint folders published by reruns of the cards' recipes: each card records its "
                             "rerun's top-1 and whether it lands within 0.5 points")
    args = parser.parse_args(argv)
    if args.source is not None and not args.source.is_dir():
        parser.error(f"--from {args.source}: no such folder")
    bench = args.bench if args.bench is not None else args.out / BENCH_NAME
    if args.bench is not None and not bench.is_file():
        parser.error(f"--bench {bench}: no such file")
    configs = collect_cards(args.out) + (collect_cards(args.source) if args.source is not None else [])
    if args.imagenet:
        paper, skipped = paper_card_configs()
        configs += paper
        for architecture in skipped:
            print(f"no {architecture} card: the zoo does not register {architecture}", file=sys.stderr)
    merged = {card_name(c): c for c in configs}
    configs = [merged[k] for k in sorted(merged)]
    if bench.is_file():
        configs = with_latency(configs, read_bench(bench))
    if args.rerun is not None:
        if not args.rerun.is_dir():
            parser.error(f"--rerun {args.rerun}: no such folder")
        try:
            configs = with_reproductions(configs, collect_cards(args.rerun))
        except ValueError as e:
            parser.error(f"--rerun {args.rerun}: {e}")
    print(write_cards(configs, args.out), end="")


def _bench(argv: list[str]) -> None:
    from .bench import main as bench_main

    bench_main(argv)


_TOOLS = {"models": _models, "publish": _publish, "cards": _cards, "bench": _bench}


def check_config_files(argv: list[str]) -> None:
    """Every YAML file named on the command line (``--config FILE``, ``--trainer=FILE``, ...) parses; else a
    :class:`ConfigFileError` naming the file, line and column (jsonargparse's own message names neither)."""
    import yaml

    for arg in argv:
        path = Path(arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg)
        if path.suffix.lower() not in _CONFIG_SUFFIXES or not path.is_file():
            continue
        try:
            list(yaml.compose_all(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader))  # syntax only: no tags
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            context = f" ({e.context}, line {e.context_mark.line + 1})" if e.context and e.context_mark else ""
            raise ConfigFileError(f"{path}, {where}: {e.problem}{context}") from e
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigFileError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e


def _fail(error: Exception) -> NoReturn:
    """Report ``error`` in one line on stderr (and how to see its traceback), then exit."""
    if isinstance(error, UnknownNameError):
        message = error.short() + (" (`zoo models` lists them)" if error.kind == "model" else "")
    elif isinstance(error, (ValueError, OSError)):  # CheckpointError and ConfigFileError are ValueErrors
        message = str(error) or type(error).__name__
    else:
        message = f"{type(error).__name__}: {error}"
    print(f"zoo: error: {' '.join(message.split())}", file=sys.stderr)
    print("zoo: --debug (or ZOO_DEBUG=1) shows the traceback", file=sys.stderr)
    sys.exit(2 if isinstance(error, ConfigFileError) else 1)


def main(argv: list[str] | None = None) -> None:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("ZOO_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        os.environ["ZOO_DEBUG"] = "1"  # for the processes a DDP run starts with the same command line
    if from_command_line:
        sys.argv[1:] = argv
    try:
        check_config_files(argv)
        if argv and argv[0] in _TOOLS:
            _TOOLS[argv[0]](argv[1:])
            return
        # From the command line LightningCLI reads sys.argv itself (given both, it warns that they may disagree).
        ZooCLI(args=None if from_command_line else argv)
    except Exception as e:  # noqa: BLE001 - every error ends the command: one line unless debugging
        if debug:
            raise
        _fail(e)


if __name__ == "__main__":
    main()
