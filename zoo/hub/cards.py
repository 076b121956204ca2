"""Model cards, generated from a checkpoint's ``config.json`` (never written by hand).

The card's YAML header is huggingface_hub's ``ModelCardData`` with a ``model-index`` of eval results (top-1 and
top-5 on the named dataset and split); its body gives the packed and float sizes, the compression ratio, the
recipe that produced the model, the training time and hardware, and the paper reference.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ["model_card", "card_row", "index_table", "PAPER_URL", "CITATION"]

PAPER_URL = "https://arxiv.org/abs/1603.05279"
CITATION = """@inproceedings{rastegari2016xnor,
  title={XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks},
  author={Rastegari, Mohammad and Ordonez, Vicente and Redmon, Joseph and Farhadi, Ali},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2016}
}"""


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.3f} MB"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def card_row(config: dict[str, Any]) -> dict[str, Any]:
    """The figures a card shows, flat: for the index table and the card body."""
    sizes = config.get("sizes", {})
    training = config.get("training", {})
    packed, full = sizes.get("packed_bytes"), sizes.get("float_bytes")
    return {
        "name": config.get("name", config["architecture"]),
        "architecture": config["architecture"],
        "scheme": config["scheme"]["name"],
        "dataset": training.get("dataset", "n/a"),
        "top1": training.get("top1"),
        "top5": training.get("top5"),
        "packed_bytes": packed,
        "float_bytes": full,
        "compression": (full / packed) if packed and full else None,
        "fit_seconds": training.get("fit_seconds"),
        "hardware": training.get("hardware", "n/a"),
    }


def model_card(config: dict[str, Any]) -> ModelCard:
    """The README.md of a checkpoint folder."""
    row = card_row(config)
    training = config.get("training", {})
    eval_results = []
    for key, metric in (("top1", "top-1 accuracy"), ("top5", "top-5 accuracy")):
        if training.get(key) is not None:
            eval_results.append(
                EvalResult(
                    task_type="image-classification",
                    dataset_type=training.get("dataset", "unknown"),
                    dataset_name=training.get("dataset_name", training.get("dataset", "unknown")),
                    dataset_split=training.get("split", "test"),
                    metric_type="accuracy",
                    metric_name=metric,
                    metric_value=round(100 * float(training[key]), 2),
                )
            )
    data = ModelCardData(
        library_name="xnor-zoo",
        license="apache-2.0",
        pipeline_tag="image-classification",
        tags=["binary-neural-network", "xnor-net", "image-classification", row["scheme"]],
        model_name=row["name"],
        eval_results=eval_results or None,
    )
    compression = "n/a" if row["compression"] is None else f"{row['compression']:.1f}x"
    fit = "n/a" if row["fit_seconds"] is None else f"{row['fit_seconds']:.0f} s"
    recipe = training.get("recipe")
    lines = [
        f"# {row['name']}",
        "",
        f"`{row['architecture']}` with the `{row['scheme']}` binarization scheme of XNOR-Net "
        f"([Rastegari et al., 2016]({PAPER_URL})), stored bit-packed: 1 bit per binary weight.",
        "",
        "| | |",
        "|---|---|",
        f"| dataset | {row['dataset']} ({training.get('split', 'test')} split) |",
        f"| top-1 | {_pct(row['top1'])} |",
        f"| top-5 | {_pct(row['top5'])} |",
        f"| packed size (model.safetensors) | {_mb(row['packed_bytes'])} |",
        f"| float size (float32 weights) | {_mb(row['float_bytes'])} |",
        f"| compression | {compression} |",
        f"| training time | {fit} |",
        f"| hardware | {row['hardware']} |",
        f"| input | {tuple(config.get('input_size', ()))}, mean {config.get('mean')}, std {config.get('std')} |",
        "",
        "## Use",
        "",
        "```python",
        "import zoo",
        f'model = zoo.from_pretrained("{config.get("repo_id", "path/to/this/folder")}")',
        "logits = model(images)  # normalised with the mean and std above",
        "```",
    ]
    if recipe:
        lines += ["", "## Recipe", "", "Trained with `zoo fit --config` on this recipe:", "", "```yaml", recipe.strip(),
                  "```"]
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines))


def index_table(configs: list[dict[str, Any]]) -> str:
    """A Markdown table of the given checkpoints, best top-1 first within each dataset."""
    rows = sorted((card_row(c) for c in configs), key=lambda r: (r["dataset"], -(r["top1"] or 0.0)))
    out = [
        "| model | scheme | dataset | top-1 | top-5 | packed | float | compression | training time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        compression = "n/a" if r["compression"] is None else f"{r['compression']:.1f}x"
        fit = "n/a" if r["fit_seconds"] is None else f"{r['fit_seconds']:.0f} s"
        out.append(
            f"| {r['name']} | {r['scheme']} | {r['dataset']} | {_pct(r['top1'])} | {_pct(r['top5'])} | "
            f"{_mb(r['packed_bytes'])} | {_mb(r['float_bytes'])} | {compression} | {fit} |"
        )
    return "\n".join(out) + "\n"
