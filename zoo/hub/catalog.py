"""The table ``zoo models`` prints: each registered model with its scheme, bits and, where ``cards/`` has its digits
card, the card's packed size and top-1, and whether that card folder holds weights (``model.safetensors``).

Bits are ``weights/inputs`` of the binary layers as the scheme sets them: ``1`` for a binary quantizer (``scaled_sign``,
``ste_sign``, ``bin_activ``), ``k`` for ``kbit`` with ``input_bits = k``, ``32`` where the layer stays float. The first
conv and the classifier are float in every scheme (the paper's choice) and are not counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bench import split_name
from ..models import list_models
from ..schemes import BinarizeConfig, get_scheme
from .bundled import CARD_DATASET, default_cards_folder
from .cards import card_row
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, read_config

__all__ = ["CARD_DATASET", "bits_text", "default_cards_folder", "model_rows", "models_table"]

FLOAT_BITS = 32


def bits_text(scheme: BinarizeConfig) -> str:
    """``"<weight bits>/<input bits>"`` of the scheme's binary layers, e.g. ``"1/1"`` for XNOR, ``"1/32"`` for BWN."""
    weights = FLOAT_BITS if scheme.kernel_quantizer is None else 1
    if scheme.input_quantizer is None:
        inputs = FLOAT_BITS
    else:
        inputs = scheme.input_bits if scheme.input_quantizer == "kbit" else 1
    return f"{weights}/{inputs}"


def _card(cards: Path, name: str) -> tuple[dict[str, Any] | None, Path]:
    folder = cards / f"{name}-{CARD_DATASET}"
    path = folder / CONFIG_NAME
    if not path.is_file():
        return None, folder
    try:
        return read_config(path), folder
    except CheckpointError:
        return None, folder


def model_rows(pattern: str = "*", cards: Path | None = None) -> list[dict[str, Any]]:
    """One row per registered model matching ``pattern`` (shell-style, as :func:`zoo.list_models`)."""
    cards = default_cards_folder() if cards is None else Path(cards)
    rows = []
    for name in list_models(pattern):
        scheme_name, architecture = split_name(name)
        config, folder = _card(cards, name)
        card = card_row(config) if config is not None else {}
        rows.append({
            "name": name,
            "scheme": scheme_name,
            "architecture": architecture,
            "bits": bits_text(get_scheme(scheme_name)),
            "packed_bytes": card.get("packed_bytes"),
            "top1": card.get("top1"),
            "card": folder if config is not None else None,
            "weights": (folder / WEIGHTS_NAME) if (folder / WEIGHTS_NAME).is_file() else None,
        })
    return rows


def models_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned plain-text table (``-`` where there is no card or no figure)."""
    header = ["model", "scheme", "architecture", "bits w/a", f"packed ({CARD_DATASET})", f"top-1 ({CARD_DATASET})",
              "weights"]
    body = [
        [
            r["name"], r["scheme"], r["architecture"], r["bits"],
            "-" if r["packed_bytes"] is None else f"{r['packed_bytes'] / 1e6:.2f} MB",
            "-" if r["top1"] is None else f"{100 * r['top1']:.2f}%",
            "no" if r["weights"] is None else "yes",
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    return "\n".join(lines) + "\n"
