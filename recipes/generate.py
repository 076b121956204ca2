"""Write ``recipes/<dataset>/<model>.yaml`` for every zoo model on every data set, from two tables.

    python recipes/generate.py            # rewrite the recipes
    python recipes/generate.py --check    # list the recipes that differ from the tables, exit 1 if any

``DATASETS`` holds one data set's settings for every model; ``OVERRIDES`` changes them for a scheme (``"xnor"``) or
one model (``"xnor_alexnet"``) on one data set, model-level entries applied last. Tune a recipe by editing the
tables and rerunning this script, never by editing a YAML file: ``tests/test_recipes.py`` checks that the files are
this script's output. The ``zoo`` package never imports this file.
"""

from __future__ import annotations

import argparse
import copy
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

RECIPES = Path(__file__).resolve().parent

# The zoo's binarization schemes and architectures (zoo.list_models() has every combination); the text describes the
# model in each recipe's first comment line.
SCHEMES = {
    "fp": "Full-precision {arch} (the reference for the binary models)",
    "bwn": "Binary-Weight-Network {arch} (W ~ alpha * sign(W), float inputs; arXiv:1603.05279 sec. 3.1)",
    "xnor": "XNOR-Net {arch} (binary weights and inputs, input scale K; arXiv:1603.05279 sec. 3.2)",
    "xnor_nobeta": "XNOR-Net {arch} without the input scale K (binary weights and inputs; the ablation of "
    "arXiv:1603.05279 fig. 4b)",
}
ARCHITECTURES = {
    "alexnet": "AlexNet-BN",
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "googlenet": "GoogLeNet",
    "bireal_resnet18": "Bi-Real-Net-18 (a shortcut around every conv; arXiv:1808.00278)",
}
MODELS = {f"{scheme}_{arch}": (scheme, arch) for scheme in SCHEMES for arch in ARCHITECTURES}



def _weight_update(gradient: str, mean_center: bool = False, clamp: bool = False) -> dict[str, Any]:
    """The trainer's callbacks for a run with these weight-update mechanics (zoo.training.weight_update)."""
    init_args = {"gradient": gradient, "mean_center": mean_center, "clamp": clamp}
    return {"callbacks": [{"class_path": "zoo.training.weight_update.WeightUpdate", "init_args": init_args}]}


# The paper's options beyond the four schemes (arXiv:1603.05279 sec. 3.2) and the choices where the paper,
# the authors' code and the zoo differ (docs/paper-fidelity.md), on digits for ResNet-18:
# recipes/<data set>/ablations/<name>.yaml, each published as <name>-<data set>. name -> (model, what, changes).
ABLATIONS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "xnor_resnet18-binary_gradient": (
        "xnor_resnet18",
        "XNOR-Net ResNet-18 trained with the paper's binary gradient (sec. 3.2: the gradient of each binary layer "
        "is itself binarized, sign(g) * max|g|)",
        {"model": {"model_kwargs": {"binary_gradient": True}}},
    ),
    "xnor_bireal_resnet18-lr3e-3": (
        "xnor_bireal_resnet18",
        "Bi-Real-Net-18 (arXiv:1808.00278) with XNOR-Net's quantizers at Adam lr 3e-3 instead of the digits default "
        "1e-2 for binary inputs (the learning rate that suits it better on digits)",
        {"model": {"lr": 3e-3}},
    ),
    "xnor_alexnet-dropout": (
        "xnor_alexnet",
        "XNOR-Net AlexNet-BN with float AlexNet's dropout 0.5 in front of the binary fc6 and fc7 blocks (the zoo's "
        "XNOR AlexNet has none, like the authors' alexnetxnor.lua), to show the train / test variance shift that the "
        "input scale K carries into the outputs",
        {"model": {"model_kwargs": {"drop_rate": 0.5}}},
    ),
    "xnor_resnet18-block_relu": (
        "xnor_resnet18",
        "XNOR-Net ResNet-18 with the ReLU kept in front of each block's BatchNorm -> sign (act1 of every BasicBlock; "
        "the paper's block of fig. 3 has none)",
        {"model": {"model_kwargs": {"block_relu": True}}},
    ),
    "xnor_resnet18-exact_gradient": (
        "xnor_resnet18",
        "XNOR-Net ResNet-18 trained with the exact chain rule through alpha * sign(W) (the straight-through "
        "estimator for sign, d alpha / dW = sign(W) / n) instead of the paper's weight gradient",
        {"trainer": _weight_update("exact")},
    ),
    "xnor_resnet18-authors_gradient": (
        "xnor_resnet18",
        "XNOR-Net ResNet-18 trained with the authors' weight gradient (updateBinaryGradWeight: the paper's formula "
        "times n(1 - 1/c)), without their centring and clamping",
        {"trainer": _weight_update("authors")},
    ),
    "xnor_resnet18-authors_update": (
        "xnor_resnet18",
        "XNOR-Net ResNet-18 trained with the authors' weight update: their gradient (the paper's formula times "
        "n(1 - 1/c)) and, before every step, the latent weights mean-centred over input channels and clamped to "
        "[-1, 1] (meancenterConvParms, clampConvParms)",
        {"trainer": _weight_update("authors", mean_center=True, clamp=True)},
    ),
    "xnor_resnet18-center_clamp": (
        "xnor_resnet18",
        "XNOR-Net ResNet-18 trained with the paper's weight gradient and the authors' mean-centring and clamping to "
        "[-1, 1] of the latent weights before every step",
        {"trainer": _weight_update("paper", mean_center=True, clamp=True)},
    ),
    "xnor_resnet18-affine_off": (
        "xnor_resnet18",
        "XNOR-Net ResNet-18 whose BatchNorms in front of the signs have no scale and shift (affine off, as in the "
        "authors' alexnetxnor.lua)",
        {"model": {"model_kwargs": {"norm_affine": False}}},
    ),
    "w1a2_resnet18": (
        "w1a2_resnet18",
        "ResNet-18 with binary weights and 2-bit inputs (the k-bit input quantizer of sec. 3.2), without the input "
        "scale K",
        {},
    ),
    "w1a4_resnet18": (
        "w1a4_resnet18",
        "ResNet-18 with binary weights and 4-bit inputs (the k-bit input quantizer of sec. 3.2), without the input "
        "scale K",
        {},
    ),
}
_ABLATION_SCHEMES = {"w1a2_resnet18": ("w1a2", "resnet18"), "w1a4_resnet18": ("w1a4", "resnet18")}

AUTHORS_CODE = "github.com/allenai/XNOR-Net"
# train.lua's 55-epoch table, rows (first epoch counted from 0, lr, weight decay); under Adam train.lua uses a tenth
# of each learning rate.
_SGD_REGIME = [[0, 1e-2, 5e-4], [18, 5e-3, 5e-4], [29, 1e-3, 0.0], [43, 5e-4, 0.0], [52, 1e-4, 0.0]]
_ADAM_REGIME = [[epoch, lr / 10, wd] for epoch, lr, wd in _SGD_REGIME]

# Each data set: what the header says about it, the command line's data arguments, notes (where the numbers come
# from; overrides add theirs) and choices (the settings we chose), then the recipe's sections for every model.
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {
        "about": "scikit-learn's digits at their native 8x8",
        "command": "",
        "notes": [],
        "choices": [],
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 25, "log_every_n_steps": 10},
        "model": {"small_input": True, "optimizer": "adam", "lr": 3e-3, "lr_schedule": "cosine"},
        "data": {
            "class_path": "zoo.data.DigitsDataModule",
            "init_args": {"image_size": 8, "batch_size": 64, "max_shift": 1},
        },
    },
    "cifar10": {
        "about": "CIFAR-10 at 32x32 (3x3 stride-1 stem), read from its binary version",
        "command": " --data.download true",
        "notes": [],
        "choices": [
            "Settings chosen for the zoo (the paper trains no CIFAR-10 model): Adam with a cosine schedule over 200 "
            "epochs, batch 128, lr 1e-3 (3e-3 where inputs are binary: binary networks want a larger learning rate), "
            "no weight decay; 5,000 training images held out for validation; a pad-4 random crop and a flip.",
            "--data.download true fetches cifar-10-binary.tar.gz (162 MB) into data/cifar10 once.",
        ],
        "trainer": {"accelerator": "auto", "devices": 1, "max_epochs": 200},
        "model": {"small_input": True, "optimizer": "adam", "lr": 1e-3, "lr_schedule": "cosine"},
        "data": {
            "class_path": "zoo.data.CIFAR10DataModule",
            "init_args": {"root": "data/cifar10", "batch_size": 128, "num_workers": 4, "val_size": 5000},
        },
    },
    "imagenet": {
        "about": "ImageNet (ILSVRC-2012) at 224x224 with the XNOR-Net authors' training settings",
        "command": " --data.root /path/to/imagenet",
        "notes": [
            f"Sources. Every number is from the authors' Torch code, {AUTHORS_CODE}, which the paper gives as its "
            "implementation; the paper's own text could not be consulted when this recipe was written.",
            "- 55 epochs: opts.lua (-nEpochs 55).",
            "- regime: train.lua's table: lr 1e-2, 5e-3, 1e-3, 5e-4, 1e-4 from its epochs 1, 19, 30, 44, 53 (0, 18, "
            "29, 43, 52 here, counting from 0), weight decay 5e-4 up to its epoch 29, then 0.",
            "- images resized to 256 on the shorter side, random 224 crop and flip for training, centre crop for "
            "evaluation: opts.lua (-imageSize 256 -cropSize 224) and donkey.lua.",
        ],
        "choices": [
            "Our choices: torchvision's ImageNet mean/std (donkey.lua estimates its own from 10,000 training images); "
            "the test split is ImageNet's validation set (its test labels are not public); one process: on N GPUs, "
            "--trainer.devices N --data.batch_size B/N keeps the total batch B and the images per epoch.",
        ],
        "trainer": {"accelerator": "auto", "devices": 1, "max_epochs": 55, "limit_train_batches": 2500},
        "model": {
            "small_input": False,
            "optimizer": "sgd",
            "lr": _SGD_REGIME[0][1],
            "weight_decay": _SGD_REGIME[0][2],
            "lr_schedule": "regime",
            "regime": _SGD_REGIME,
        },
        "data": {
            "class_path": "zoo.data.ImageNetDataModule",
            "init_args": {
                "root": "data/imagenet",
                "image_size": 224,
                "resize": 256,
                "batch_size": 128,
                "num_workers": 8,
                "train_crop": "random",
            },
        },
    },
}

_AUTHORS_UPDATE_NOTE = (
    "- weight update: the authors' (train.lua's trainBatch with util.lua): before every step the binary layers' latent "
    "weights are mean-centred over their input channels (meancenterConvParms) and clamped to [-1, 1] "
    "(clampConvParms), and the weight gradient is updateBinaryGradWeight's, the paper's formula times n(1 - 1/c); "
    "with it the authors' learning rates and weight decay give the authors' step sizes (the WeightUpdate callback)."
)
_IMAGENET_XNOR = {
    "notes": [
        "- batch 800, Adam, 1,500 batches an epoch (limit_train_batches): the README's command for XNOR-Networks "
        "(-batchSize 800 -optimType adam -epochSize 1500); under Adam, train.lua uses a tenth of each learning rate "
        "of the regime (1e-3 ... 1e-5) and the same weight decay.",
        _AUTHORS_UPDATE_NOTE,
    ],
    "trainer": {"limit_train_batches": 1500, **_weight_update("authors", mean_center=True, clamp=True)},
    "model": {"optimizer": "adam", "lr": _ADAM_REGIME[0][1], "regime": _ADAM_REGIME},
    "data": {"init_args": {"batch_size": 800}},
}
_IMAGENET_SGD_NOTE = (
    "- batch 128, SGD with momentum 0.9, 2,500 batches an epoch (limit_train_batches): the README's command for "
    "Binary-Weight-Networks (-batchSize 128) with opts.lua's defaults (-optimType sgd -momentum 0.9 -epochSize 2500)."
)
_BINARY_INPUTS_LR = {"model": {"lr": 1e-2}}

# Changes for one scheme or one model on one data set: (data set, scheme or model name) -> the same sections as
# DATASETS (with "notes" added to the header).
OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("digits", "xnor"): _BINARY_INPUTS_LR,
    ("digits", "xnor_nobeta"): _BINARY_INPUTS_LR,
    ("digits", "w1a2"): _BINARY_INPUTS_LR,
    ("digits", "w1a4"): _BINARY_INPUTS_LR,
    ("cifar10", "xnor"): {"model": {"lr": 3e-3}},
    ("cifar10", "xnor_nobeta"): {"model": {"lr": 3e-3}},
    ("imagenet", "fp"): {
        "notes": [
            _IMAGENET_SGD_NOTE,
            "- full precision is trained like the Binary-Weight-Network (the authors' code trains both with the same "
            "main.lua), so that the two differ only in binarization: our choice.",
        ],
    },
    ("imagenet", "bwn"): {
        "notes": [_IMAGENET_SGD_NOTE, _AUTHORS_UPDATE_NOTE],
        "trainer": _weight_update("authors", mean_center=True, clamp=True),
    },
    ("imagenet", "xnor"): _IMAGENET_XNOR,
    ("imagenet", "xnor_nobeta"): _IMAGENET_XNOR,
    ("imagenet", "fp_alexnet"): {
        "notes": ["- AlexNet: dropout 0.1, the README's BWN command (-dropout 0.1)."],
        "model": {"model_kwargs": {"drop_rate": 0.1}},
    },
    ("imagenet", "bwn_alexnet"): {
        "notes": ["- AlexNet: dropout 0.1, the README's BWN command (-dropout 0.1)."],
        "model": {"model_kwargs": {"drop_rate": 0.1}},
    },
    ("imagenet", "xnor_alexnet"): {
        "notes": ["- AlexNet: no dropout, as models/alexnetxnor.lua has none."],
        "model": {"model_kwargs": {"drop_rate": 0.0}},
    },
    ("imagenet", "xnor_nobeta_alexnet"): {
        "notes": ["- AlexNet: no dropout, as models/alexnetxnor.lua has none."],
        "model": {"model_kwargs": {"drop_rate": 0.0}},
    },
}


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: nested dicts merged key by key, lists (notes) extended, the rest replaced."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif key == "notes":
            out[key] = out.get(key, []) + list(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def settings(dataset: str, model: str) -> dict[str, Any]:
    """The merged table entries for one recipe: the data set's, then its scheme's override, then the model's."""
    scheme, _ = MODELS.get(model) or _ABLATION_SCHEMES[model]
    out = DATASETS[dataset]
    for key in (scheme, model):
        out = _merge(out, OVERRIDES.get((dataset, key), {}))
    return out


def recipe(dataset: str, model: str, ablation: str | None = None) -> dict[str, Any]:
    """The recipe of ``model`` on ``dataset`` (or of the named ablation) as the CLI reads it."""
    s = settings(dataset, model)
    if ablation is not None:
        s = _merge(s, ABLATIONS[ablation][2])
    run = f"runs/{dataset}/{ablation or model}"
    logger = {"project": "xnor-zoo", "name": f"{dataset}-{ablation or model}", "save_dir": run}
    trainer = {
        **s["trainer"],
        "default_root_dir": run,
        "logger": {"class_path": "zoo.training.loggers.ZooWandbLogger", "init_args": logger},
    }
    out = {"seed_everything": 0, "trainer": trainer, "model": {"model_name": model, **s["model"]}, "data": s["data"]}
    if ablation is not None:
        out["publish"] = {"name": f"{ablation}-{dataset}"}
    return out


def _comment(text: str) -> list[str]:
    indent = "#   " if text.startswith("- ") else "# "
    return textwrap.wrap(text, width=118, initial_indent="# ", subsequent_indent=indent, break_on_hyphens=False)


def header(dataset: str, model: str) -> str:
    """The comment that opens a recipe: what the model is, on what data, the command to run it, and the notes."""
    s, (scheme, arch) = settings(dataset, model), MODELS[model]
    what = SCHEMES[scheme].format(arch=ARCHITECTURES[arch])
    lines = _comment(f"{what} on {s['about']}.")
    lines.append(f"# Train and test:  zoo fit --config recipes/{dataset}/{model}.yaml{s['command']}")
    for note in s["notes"] + s["choices"]:
        lines += ([] if note.startswith("- ") else ["#"]) + _comment(note)
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of plain values (the regime's rows), which read best on one line."""

    def represent_list(self, data: list) -> yaml.Node:
        flow = all(not isinstance(item, (list, dict)) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


def ablation_header(dataset: str, name: str) -> str:
    lines = _comment(f"{ABLATIONS[name][1]} on {DATASETS[dataset]['about']}.")
    lines.append(f"# Train and test:  zoo fit --config recipes/{dataset}/ablations/{name}.yaml")
    return "\n".join(lines) + "\n"


def _dump(config: dict[str, Any]) -> str:
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def render() -> dict[str, str]:
    """Every recipe's text by path relative to ``recipes/`` (``"digits/xnor_resnet18.yaml"``)."""
    out = {
        f"{dataset}/{model}.yaml": header(dataset, model) + _dump(recipe(dataset, model))
        for dataset in DATASETS
        for model in sorted(MODELS)
    }
    for name, (model, _, _) in ABLATIONS.items():
        out[f"digits/ablations/{name}.yaml"] = ablation_header("digits", name) + _dump(recipe("digits", model, name))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a recipe differs")
    args = parser.parse_args(argv)
    stale = []
    for relative, text in render().items():
        path = RECIPES / relative
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(relative)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "differ from the tables" if args.check else "written"
    print(f"{len(stale)} recipe(s) {verb}" + "".join(f"\n  recipes/{p}" for p in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
