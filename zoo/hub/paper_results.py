"""XNOR-Net's reported ImageNet accuracies, and the card configs that show them next to what the zoo measures.

Rastegari et al. 2016 (arXiv:1603.05279) report top-1 / top-5 on the ImageNet validation set in Table 1 (AlexNet:
full precision, Binary-Weight-Network, XNOR-Net) and Table 2 (ResNet-18 and the paper's GoogLenet variant; no
XNOR-Net figure for GoogLenet). The zoo has not trained these networks on ImageNet, so their cards carry these
numbers labelled "reported in the paper, not reproduced here", next to figures the zoo does measure: the packed
checkpoint size of the architecture at 1000 classes and 224x224, and the CPU latency from a bench JSON.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import create_model, is_model
from .cards import PAPER_URL
from .checkpoint import CONFIG_NAME, read_config
from .model import pack_model

__all__ = ["PaperResult", "PAPER_RESULTS", "IMAGENET", "paper_result", "reported_accuracy", "paper_card_config",
           "paper_card_configs"]

IMAGENET = "imagenet"


@dataclass(frozen=True)
class PaperResult:
    """One top-1 / top-5 pair (fractions) the paper reports on ImageNet, and the zoo architecture it belongs to."""

    architecture: str
    network: str
    method: str
    top1: float
    top5: float
    table: str


PAPER_RESULTS: tuple[PaperResult, ...] = (
    PaperResult("fp_alexnet", "AlexNet", "full precision", 0.566, 0.802, "Table 1"),
    PaperResult("bwn_alexnet", "AlexNet", "Binary-Weight-Network", 0.568, 0.794, "Table 1"),
    PaperResult("xnor_alexnet", "AlexNet", "XNOR-Net", 0.442, 0.692, "Table 1"),
    PaperResult("fp_resnet18", "ResNet-18", "full precision", 0.693, 0.892, "Table 2"),
    PaperResult("bwn_resnet18", "ResNet-18", "Binary-Weight-Network", 0.608, 0.830, "Table 2"),
    PaperResult("xnor_resnet18", "ResNet-18", "XNOR-Net", 0.512, 0.732, "Table 2"),
    PaperResult("fp_googlenet", "GoogLenet", "full precision", 0.713, 0.900, "Table 2"),
    PaperResult("bwn_googlenet", "GoogLenet", "Binary-Weight-Network", 0.655, 0.861, "Table 2"),
)


def paper_result(architecture: str) -> PaperResult | None:
    """The paper's ImageNet result for a zoo architecture, or ``None`` when the paper reports none."""
    return next((r for r in PAPER_RESULTS if r.architecture == architecture), None)


def reported_accuracy(result: PaperResult) -> dict[str, Any]:
    """The ``config["reported"]`` block of a card: the paper's numbers with where they come from."""
    return {
        "dataset": IMAGENET,
        "split": "validation",
        "top1": result.top1,
        "top5": result.top5,
        "source": f"Rastegari et al. 2016, {result.table}: {result.network}, {result.method}",
        "url": PAPER_URL,
    }


def paper_card_config(result: PaperResult) -> dict[str, Any]:
    """The card config of ``result``'s architecture at ImageNet shape, with measured packed and float sizes.

    The network is built untrained with 1000 classes and saved packed exactly as a published checkpoint would be,
    so ``sizes`` are the real ``model.safetensors`` byte count and float32 weight bytes; the weights are discarded.
    """
    model = create_model(result.architecture, num_classes=1000)
    with tempfile.TemporaryDirectory() as folder:
        pack_model(model).save_pretrained(folder)
        config = read_config(Path(folder) / CONFIG_NAME)
    config["name"] = f"{result.architecture}-{IMAGENET}"
    config["reported"] = reported_accuracy(result)
    return config


def paper_card_configs() -> tuple[list[dict[str, Any]], list[str]]:
    """Card configs for every paper result whose architecture this zoo registers, and the architectures skipped."""
    configs, skipped = [], []
    for result in PAPER_RESULTS:
        if is_model(result.architecture):
            configs.append(paper_card_config(result))
        else:
            skipped.append(result.architecture)
    return configs, skipped
