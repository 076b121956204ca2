"""The ``zoo`` command: Lightning's ``fit`` / ``validate`` / ``test`` / ``predict`` on recipes, plus zoo tools.

    zoo fit --config recipes/digits/xnor_resnet18.yaml
    zoo test --config recipes/digits/xnor_resnet18.yaml --ckpt_path runs/.../last.ckpt
    zoo models 'xnor_*'
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .training.callbacks import RunReport
from .training.module import ZooClassifier

__all__ = ["ZooCLI", "main"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


class ZooCLI(LightningCLI):
    """LightningCLI over :class:`ZooClassifier` and any LightningDataModule (given by ``class_path``).

    ``model.num_classes`` and ``model.in_chans`` follow the data module. ``fit`` ends with a ``test`` of the final
    weights unless ``--test_after_fit false``.
    """

    def __init__(self, args: list[str] | None = None, **kwargs):
        kwargs.setdefault("trainer_defaults", {"callbacks": [RunReport()]})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(ZooClassifier, pl.LightningDataModule, subclass_mode_data=True, args=args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True, help="run test on the final weights")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.in_chans", apply_on="instantiate")

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit", True) and not self.trainer.fast_dev_run:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)


def _models(argv: list[str]) -> None:
    from .models import list_models

    for name in list_models(argv[0] if argv else "*"):
        print(name)


_TOOLS = {"models": _models}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _TOOLS:
        _TOOLS[argv[0]](argv[1:])
        return
    ZooCLI(args=argv)


if __name__ == "__main__":
    main()
