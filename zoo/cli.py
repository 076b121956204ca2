"""The ``zoo`` command: Lightning's ``fit`` / ``validate`` / ``test`` / ``predict`` on recipes, plus zoo tools.

    zoo fit --config recipes/digits/xnor_resnet18.yaml
    zoo test --config recipes/digits/xnor_resnet18.yaml --ckpt_path runs/.../last.ckpt
    zoo models 'xnor_*'
    zoo publish hub/xnor_resnet18-digits --repo-id org/xnor_resnet18-digits
    zoo cards                       # regenerate cards/ (index.md, index.html) and print the model index
    zoo cards --from hub            # ... adding or updating the cards of published checkpoint folders
    zoo cards --bench bench.json    # ... with each architecture's `zoo bench --json` latency (ImageNet shape)
    zoo cards --measure-latency     # ... timing each zoo-trained card's network at its own input size, here
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
from typing import Any, NoReturn

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from ._unknown_name import UnknownNameError
from .hub.publish import PublishOptions, hardware_description, publish, publish_name
from .training.callbacks import RunReport
from .training.module import ZooClassifier
from .training.quiet import silence_known_noise
from .training.run_record import RunRecord

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
    to the folder hub (and pushed to the Hub with ``--publish.repo_id``). ``fit`` ends by printing the checkpoint's
    path and the packed folder. Every checkpoint carries the run's config (:class:`RunRecord`), so that a card
    published by ``test --ckpt_path`` describes the training run that made it.
    """

    def __init__(self, args: list[str] | None = None, **kwargs):
        silence_known_noise()
        kwargs.setdefault("trainer_defaults", {"callbacks": [RunReport(), RunRecord()]})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", ZooArgumentParser)
        super().__init__(ZooClassifier, pl.LightningDataModule, subclass_mode_data=True, args=args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True, help="run test on the final weights")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.in_chans", apply_on="instantiate")
        parser.add_class_arguments(PublishOptions, "publish")

    def before_instantiate_classes(self) -> None:
        """A ``--ckpt_path`` that names no file, or none for ``test --publish.enabled true``, is an error before
        anything is built (Lightning's comes after)."""
        path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        if self.subcommand == "test" and path is None and self.config.test.publish.enabled:
            raise ValueError("zoo test --publish.enabled true needs --ckpt_path: without a checkpoint the tested "
                             "weights are the untrained initial ones")
        if (isinstance(path, str) and path not in _CKPT_PATH_WORDS and not path.startswith("registry")
                and "://" not in path and not Path(path).is_file()):
            raise FileNotFoundError(f"--ckpt_path {path}: no such checkpoint file")

    def before_fit(self) -> None:
        self._check_publish_name()
        record = self._record()
        record.recipe, record.hardware = self._run_config_yaml(), hardware_description()
        record.seed = self.config[self.subcommand].get("seed_everything")

    def before_test(self) -> None:
        self._check_publish_name()

    def after_fit(self) -> None:
        folder = None
        if self.config[self.subcommand].get("test_after_fit", True) and not self.trainer.fast_dev_run:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
            folder = self._publish()
        if self.trainer.is_global_zero:
            self._print_outputs(folder)

    def after_test(self) -> None:
        self._publish()

    def _report(self) -> RunReport:
        return next(c for c in self.trainer.callbacks if isinstance(c, RunReport))

    def _record(self) -> RunRecord:
        return next(c for c in self.trainer.callbacks if isinstance(c, RunRecord))

    def _run_config_yaml(self) -> str:
        """This command's config as YAML, without the Hub token (never published)."""
        run_config = self.config[self.subcommand].clone()
        run_config.publish.token = None
        return self._parser(self.subcommand).dump(run_config, skip_none=False)

    def _print_outputs(self, folder: Path | None) -> None:
        """The files a fit leaves, for the next command: its checkpoint (for ``zoo test --ckpt_path``) and the
        packed folder (for ``zoo.from_pretrained``)."""
        checkpoint = self.trainer.checkpoint_callback
        path = (checkpoint.last_model_path or checkpoint.best_model_path) if checkpoint is not None else ""
        print(f"checkpoint: {path}" if path else "checkpoint: none (checkpointing is off)")
        if folder is not None:
            print(f'packed: {folder}  (zoo.from_pretrained("{folder}"))')
        else:
            print("packed: none (--publish.enabled true packs the tested model into --publish.folder, default hub/)")

    def _publish_options(self) -> PublishOptions:
        return PublishOptions(**vars(self.config[self.subcommand].publish))

    def _dataset(self) -> str:
        return getattr(self.datamodule, "dataset_name", type(self.datamodule).__name__)

    def _check_publish_name(self) -> None:
        """A name that cannot be published is an error before the run, not after it."""
        options = self._publish_options()
        if options.enabled:
            publish_name(options, f"{self.model.hparams.model_name}-{self._dataset()}")

    def _training_info(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The card's ``training`` entries and, for ``test --ckpt_path``, its ``evaluation`` entry: after ``fit``,
        this run; after ``test``, the run recorded in the checkpoint (no recipe, time or seed where it recorded
        none), and which checkpoint was evaluated."""
        record = self._record()
        if self.subcommand == "fit":
            return {"fit_seconds": self._report().fit_seconds, "hardware": record.hardware, "seed": record.seed,
                    "recipe": record.recipe}, None
        stored = record.restored or {}
        evaluation = {
            "command": f"zoo {self.subcommand}",
            "checkpoint": Path(self.config[self.subcommand].ckpt_path).name,
            **(record.checkpoint or {}),
            "hardware": hardware_description(),
            "run_record": record.restored is not None,
        }
        training = {"fit_seconds": stored.get("fit_seconds"), "hardware": stored.get("hardware"),
                    "seed": stored.get("seed"), "recipe": stored.get("recipe")}
        return training, evaluation

    def _publish(self) -> Path | None:
        options = self._publish_options()
        if not options.enabled or not self.trainer.is_global_zero:
            return None
        report, dm, dataset = self._report(), self.datamodule, self._dataset()
        training, evaluation = self._training_info()
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
                **training,
            },
            **({"evaluation": evaluation} if evaluation is not None else {}),
        }
        folder = publish(self.model.model, options, info)
        print(f"published {info['name']} to {folder}" + (f" and {options.repo_id}" if options.repo_id else ""))
        return folder


def _models(argv: list[str]) -> None:
    from .hub.catalog import CARD_DATASET, default_cards_folder, model_rows, models_table

    parser = argparse.ArgumentParser(
        prog="zoo models",
        description="list the zoo's models: scheme, architecture, bits (weights/inputs of the binary layers) and, "
                    f"from the model's {CARD_DATASET} card, its packed size, top-1 and whether weights come with it",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'xnor_*' (default: all)")
    parser.add_argument("--cards", type=Path, default=default_cards_folder(),
                        help="the cards folder (default: the zoo's cards/)")
    parser.add_argument("--names", action="store_true", help="print the names only, one a line")
    args = parser.parse_args(argv)
    rows = model_rows(args.pattern, args.cards)
    if not rows:
        print(f"zoo: no model matches {args.pattern!r} (names are <scheme>_<architecture>, e.g. 'xnor_resnet18': "
              "try '*resnet*'; `zoo models` lists them all)", file=sys.stderr)
        sys.exit(1)
    print("\n".join(r["name"] for r in rows) if args.names else models_table(rows), end="\n" if args.names else "")


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
    from .hub.publish import card_weights, collect_cards, write_cards
    from .hub.reproduction import with_reproductions

    parser = argparse.ArgumentParser(
        prog="zoo cards", description="regenerate the cards, cards/index.md and the cards/index.html leaderboard"
    )
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="regenerate the cards from the checkpoint folders under this folder hub")
    parser.add_argument("--out", type=Path, default=Path("cards"), help="the cards folder (default: cards)")
    parser.add_argument("--bench", type=Path, default=None,
                        help="a `zoo bench --json` file giving each card its architecture's CPU latency at the bench's "
                             "input size (the card's own latency where that is the card's network; default: "
                             "OUT/bench.json if it exists; without one, the latencies already in the cards are kept)")
    parser.add_argument("--measure-latency", action="store_true",
                        help="time each zoo-trained card's own network at its own input size on this machine (batch "
                             "1, median of --repeats) as the card's CPU latency")
    parser.add_argument("--repeats", type=int, default=21, help="timed rounds of --measure-latency (default: 21)")
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
    configs = with_latency(configs, read_bench(bench) if bench.is_file() else None)
    if args.measure_latency:
        from .hub.card_latency import with_measured_latency

        configs = with_measured_latency(configs, repeats=args.repeats)
    if args.rerun is not None:
        if not args.rerun.is_dir():
            parser.error(f"--rerun {args.rerun}: no such folder")
        try:
            configs = with_reproductions(configs, collect_cards(args.rerun))
        except ValueError as e:
            parser.error(f"--rerun {args.rerun}: {e}")
    print(write_cards(configs, args.out, card_weights(args.out, args.source)), end="")


def _bench(argv: list[str]) -> None:
    from .bench import main as bench_main

    bench_main(argv)


# The zoo's own subcommands, beside LightningCLI's, with the line `zoo --help` gives each.
_TOOLS = {"models": _models, "bench": _bench, "cards": _cards, "publish": _publish}
SUBCOMMANDS = {
    "fit": "train a model on a recipe, then test the final weights (--publish.enabled true packs and publishes it)",
    "validate": "evaluate a checkpoint (--ckpt_path) on the validation split",
    "test": "evaluate a checkpoint (--ckpt_path) on the test split (--publish.enabled true packs and publishes it)",
    "predict": "run a checkpoint (--ckpt_path) on the predict split",
    "models": "list the zoo's models: scheme, bits, and their digits card's packed size, top-1 and weights",
    "bench": "time packed XNOR convs and models against float and int8 (CPU), or the Triton kernel (GPU)",
    "cards": "regenerate cards/: a model card per model, index.md and the index.html leaderboard",
    "publish": "push a packed checkpoint folder to the Hugging Face Hub",
}


def overview() -> str:
    """What ``zoo``, ``zoo -h`` and ``zoo --help`` print: every subcommand with one line."""
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "usage: zoo SUBCOMMAND [options]     (zoo SUBCOMMAND --help for its options)",
        "",
        "Binary neural networks (XNOR-Net) on timm, PyTorch Lightning and the Hugging Face Hub.",
        "",
        "subcommands:",
        *(f"  {name.ljust(width)}  {text}" for name, text in SUBCOMMANDS.items()),
        "",
        "examples:",
        "  zoo fit --config recipes/digits/xnor_resnet18.yaml",
        "  zoo test --config recipes/digits/xnor_resnet18.yaml --ckpt_path PATH.ckpt",
        "  zoo models 'xnor_*'",
        "",
        "--debug (or ZOO_DEBUG=1) shows the traceback of an error.",
    ]
    return "\n".join(lines) + "\n"


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
    silence_known_noise()
    if not argv or argv[0] in ("-h", "--help"):
        print(overview(), end="", file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        from . import __version__

        print(f"zoo (xnor-zoo) {__version__}")
        return
    try:
        check_config_files(argv)
        if argv[0] in _TOOLS:
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
