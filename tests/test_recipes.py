"""The recipes: checked in exactly as ``recipes/generate.py`` writes them, one per zoo model and data set, and each
one a configuration the ``zoo`` command accepts."""

import importlib.util
import sys
from pathlib import Path

import pytest

from zoo.cli import ZooCLI
from zoo.models import is_model, list_models

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
DATA_CLASSES = {
    "digits": "zoo.data.DigitsDataModule",
    "cifar10": "zoo.data.CIFAR10DataModule",
    "imagenet": "zoo.data.ImageNetDataModule",
}


def _generator():
    spec = importlib.util.spec_from_file_location("recipes_generate", RECIPES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _generator()
RENDERED = generate.render()


class _ParseOnly(ZooCLI):
    """The zoo CLI's parser and checks, without building the model, data module and trainer (ImageNet's data module
    needs the data set on disk to count its classes)."""

    def instantiate_classes(self) -> None:
        pass


@pytest.fixture(scope="module")
def parser():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["zoo"])
        return _ParseOnly(args=["--config", str(RECIPES / "digits" / "fp_resnet18.yaml")], run=False).parser


def test_checked_in_recipes_are_the_generators_output():
    on_disk = {str(p.relative_to(RECIPES)): p.read_text() for p in sorted(RECIPES.glob("**/*.yaml"))}
    assert sorted(on_disk) == sorted(RENDERED), "run `python recipes/generate.py` (and delete stale recipes)"
    stale = [path for path, text in RENDERED.items() if on_disk[path] != text]
    assert not stale, f"edited by hand or not regenerated: {stale}; run `python recipes/generate.py`"
    assert generate.main(["--check"]) == 0


def test_every_model_has_a_recipe_on_every_dataset():
    models = {m for scheme in generate.SCHEMES for m in list_models(f"{scheme}_*")}
    assert set(generate.MODELS) == models and len(models) == 20
    assert {path.split("/")[0] for path in RENDERED} == set(DATA_CLASSES)
    assert len(RENDERED) == 3 * 20 + len(generate.ABLATIONS)


MODEL_RECIPES = sorted(p for p in RENDERED if "/ablations/" not in p)


@pytest.mark.parametrize("path", MODEL_RECIPES, ids=lambda p: p.removesuffix(".yaml"))
def test_recipe_parses_with_the_zoo_cli(path, parser):
    dataset, model = path.removesuffix(".yaml").split("/")
    config = parser.parse_args(["--config", str(RECIPES / path)])
    assert config.model.model_name == model and is_model(model)
    assert config.data.class_path == DATA_CLASSES[dataset]
    assert config.trainer.logger.class_path == "zoo.training.loggers.ZooWandbLogger"
    assert config.trainer.logger.init_args.save_dir == f"runs/{dataset}/{model}" == config.trainer.default_root_dir
    assert config.trainer.logger.init_args.name == f"{dataset}-{model}"
    assert config.model.small_input == (dataset != "imagenet")
    header = (RECIPES / path).read_text().split("\nseed_everything")[0]
    assert f"# Train and test:  zoo fit --config recipes/{path}" in header
    assert all(len(line) <= 120 and line.startswith("#") for line in header.splitlines())


def test_digits_recipes_keep_their_settings():
    for model in generate.MODELS:
        config = generate.recipe("digits", model)
        binary_inputs = model.startswith("xnor")
        assert config["model"] == {"model_name": model, "small_input": True, "optimizer": "adam",
                                   "lr": 1e-2 if binary_inputs else 3e-3, "lr_schedule": "cosine"}
        assert config["trainer"]["max_epochs"] == 25 and config["trainer"]["accelerator"] == "cpu"
        assert config["data"]["init_args"] == {"image_size": 8, "batch_size": 64, "max_shift": 1}


def test_imagenet_recipes_follow_the_authors_code():
    xnor, bwn = generate.recipe("imagenet", "xnor_resnet18"), generate.recipe("imagenet", "bwn_resnet18")
    assert (xnor["model"]["optimizer"], xnor["data"]["init_args"]["batch_size"]) == ("adam", 800)
    assert (bwn["model"]["optimizer"], bwn["data"]["init_args"]["batch_size"]) == ("sgd", 128)
    assert xnor["trainer"]["limit_train_batches"] == 1500 and bwn["trainer"]["limit_train_batches"] == 2500
    assert [row[0] for row in xnor["model"]["regime"]] == [0, 18, 29, 43, 52] and xnor["trainer"]["max_epochs"] == 55
    sgd_lrs = [row[1] for row in bwn["model"]["regime"]]
    assert sgd_lrs == [1e-2, 5e-3, 1e-3, 5e-4, 1e-4]
    assert [row[1] for row in xnor["model"]["regime"]] == pytest.approx([lr / 10 for lr in sgd_lrs])
    assert [row[2] for row in xnor["model"]["regime"]] == [5e-4, 5e-4, 0.0, 0.0, 0.0]
    assert generate.recipe("imagenet", "bwn_alexnet")["model"]["model_kwargs"] == {"drop_rate": 0.1}
    assert generate.recipe("imagenet", "xnor_alexnet")["model"]["model_kwargs"] == {"drop_rate": 0.0}
    assert xnor["data"]["init_args"]["image_size"] == 224 and xnor["data"]["init_args"]["train_crop"] == "random"
    # the authors' weight update (train.lua / util.lua) for every binary scheme, so that their lr gives their steps
    authors = [{"class_path": "zoo.training.weight_update.WeightUpdate",
                "init_args": {"gradient": "authors", "mean_center": True, "clamp": True}}]
    for model in generate.MODELS:
        callbacks = generate.recipe("imagenet", model)["trainer"].get("callbacks")
        assert callbacks == (None if model.startswith("fp_") else authors), model
        assert "callbacks" not in generate.recipe("digits", model)["trainer"]  # digits: the paper's gradient


def test_overrides_name_known_datasets_and_models():
    for dataset, key in generate.OVERRIDES:
        assert dataset in generate.DATASETS
        known = key in generate.SCHEMES or key in generate.MODELS or key in ("w1a2", "w1a4")
        assert known, f"override for unknown scheme or model {key!r}"


@pytest.mark.parametrize("name", sorted(generate.ABLATIONS))
def test_ablation_recipes_change_one_thing_of_the_resnet18_recipe(name, parser):
    config = parser.parse_args(["--config", str(RECIPES / "digits" / "ablations" / f"{name}.yaml")])
    model = generate.ABLATIONS[name][0]
    base_model = model if is_model(model) and model in generate.MODELS else "xnor_resnet18"
    base = parser.parse_args(["--config", str(RECIPES / "digits" / f"{base_model}.yaml")])
    assert is_model(config.model.model_name) and config.publish.name == f"{name}-digits"
    assert config.trainer.default_root_dir == f"runs/digits/{name}"
    assert (config.trainer.max_epochs, config.data) == (25, base.data)
    changed = {k for k in vars(base.model) if getattr(config.model, k) != getattr(base.model, k)}
    if config.trainer.callbacks != base.trainer.callbacks:
        changed.add("callbacks")
    expected = {"xnor_resnet18-binary_gradient": {"model_kwargs"}, "w1a2_resnet18": {"model_name"},
                "w1a4_resnet18": {"model_name"},
                "xnor_bireal_resnet18-lr3e-3": {"lr"}, "xnor_alexnet-dropout": {"model_kwargs"},
                "xnor_resnet18-block_relu": {"model_kwargs"}, "xnor_resnet18-affine_off": {"model_kwargs"},
                "xnor_resnet18-exact_gradient": {"callbacks"}, "xnor_resnet18-authors_gradient": {"callbacks"},
                "xnor_resnet18-authors_update": {"callbacks"}, "xnor_resnet18-center_clamp": {"callbacks"}}
    assert changed == expected[name]


def test_weight_update_ablations_name_the_mechanics(parser):
    settings = {}
    for name in ("exact_gradient", "authors_gradient", "authors_update", "center_clamp"):
        config = parser.parse_args(["--config", str(RECIPES / "digits" / "ablations" / f"xnor_resnet18-{name}.yaml")])
        (callback,) = config.trainer.callbacks
        assert callback.class_path == "zoo.training.weight_update.WeightUpdate"
        settings[name] = (callback.init_args.gradient, callback.init_args.mean_center, callback.init_args.clamp)
    assert settings == {"exact_gradient": ("exact", False, False), "authors_gradient": ("authors", False, False),
                        "authors_update": ("authors", True, True), "center_clamp": ("paper", True, True)}
