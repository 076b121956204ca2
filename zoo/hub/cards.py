"""Model cards, generated from a checkpoint's ``config.json`` (never written by hand).

The card's YAML header is huggingface_hub's ``ModelCardData`` with a ``model-index`` of eval results (top-1 and
top-5 on the named dataset and split) for accuracies measured here; its body gives the packed and float sizes, the
compression ratio, the CPU latency at the card's own input size (``card_latency.py``) and, labelled with its input
size, the architecture's ``zoo bench`` figure at ImageNet shape (``latency.py``), the recipe that produced the model
(for a card published by ``zoo test --ckpt_path``, the one stored in the checkpoint, and which checkpoint was
evaluated), the training time and hardware, and the paper reference.

A card may instead carry an accuracy the paper reports (``config["reported"]``, see ``paper_results.py``): its body,
the index and the leaderboard label it "reported in the paper, not reproduced here", and it is left out of the
``model-index``, which tools read as the model's own evaluation.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .latency import has_bench_settings

__all__ = [
    "model_card",
    "card_name",
    "card_row",
    "row_text",
    "index_table",
    "latency_text",
    "evaluation_text",
    "bench_latency_label",
    "reproduction_text",
    "PAPER_URL",
    "CITATION",
    "MEASURED",
    "REPORTED",
    "ACCURACY_SOURCE_TEXT",
]

PAPER_URL = "https://arxiv.org/abs/1603.05279"
CITATION = """@inproceedings{rastegari2016xnor,
  title={XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks},
  author={Rastegari, Mohammad and Ordonez, Vicente and Redmon, Joseph and Farhadi, Ali},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2016}
}"""

MEASURED = "measured"
REPORTED = "paper"
ACCURACY_SOURCE_TEXT = {MEASURED: "measured here", REPORTED: "reported in the paper, not reproduced here"}


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.3f} MB"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _shape(size: list[int] | None) -> str:
    return "x".join(str(d) for d in size) if size else "n/a"


def card_name(config: dict[str, Any]) -> str:
    """A card's name: its folder under ``cards/`` and its key among the cards (the architecture when unnamed)."""
    return config.get("name", config["architecture"])


def card_row(config: dict[str, Any]) -> dict[str, Any]:
    """The figures a card shows, flat: for the index table, the leaderboard and the card body.

    ``accuracy_source`` is ``MEASURED`` when ``config["training"]`` holds a top-1 or top-5 from our own run,
    ``REPORTED`` when the accuracy comes from ``config["reported"]`` (the paper), ``None`` when there is none.
    """
    sizes = config.get("sizes", {})
    training = config.get("training", {})
    reported = config.get("reported", {})
    latency = config.get("cpu_latency") or {}
    bench = config.get("bench_latency") or (latency if has_bench_settings(config) else {})
    packed, full = sizes.get("packed_bytes"), sizes.get("float_bytes")
    if training.get("top1") is not None or training.get("top5") is not None:
        accuracy, source = training, MEASURED
    elif reported.get("top1") is not None or reported.get("top5") is not None:
        accuracy, source = reported, REPORTED
    else:
        accuracy, source = {}, None
    return {
        "name": card_name(config),
        "architecture": config["architecture"],
        "scheme": config["scheme"]["name"],
        "dataset": training.get("dataset") or reported.get("dataset") or "n/a",
        "split": accuracy.get("split", training.get("split", "test")),
        "top1": accuracy.get("top1"),
        "top5": accuracy.get("top5"),
        "accuracy_source": source,
        "packed_bytes": packed,
        "float_bytes": full,
        "compression": (full / packed) if packed and full else None,
        "cpu_ms": latency.get("packed_ms"),
        "bench_ms": bench.get("packed_ms"),
        "bench_input": bench.get("input_size"),
        "fit_seconds": training.get("fit_seconds"),
        "hardware": training.get("hardware", "n/a"),
        "rerun_top1": (config.get("reproduction") or {}).get("top1"),
    }


def row_text(row: dict[str, Any]) -> dict[str, str]:
    """The display text of a :func:`card_row`'s figures ("n/a" where missing), shared by every view of the cards."""
    return {
        "top1": _pct(row["top1"]),
        "top5": _pct(row["top5"]),
        "source": ACCURACY_SOURCE_TEXT.get(row["accuracy_source"], "n/a"),
        "packed": _mb(row["packed_bytes"]),
        "float": _mb(row["float_bytes"]),
        "compression": "n/a" if row["compression"] is None else f"{row['compression']:.1f}x",
        "latency": "n/a" if row["cpu_ms"] is None else f"{row['cpu_ms']:.1f} ms",
        "bench": "n/a" if row["bench_ms"] is None else f"{row['bench_ms']:.1f} ms at {_shape(row['bench_input'])}",
        "fit": "n/a" if row["fit_seconds"] is None else f"{row['fit_seconds']:.0f} s",
        "rerun": "n/a" if row["rerun_top1"] is None else _pct(row["rerun_top1"]),
    }


def latency_text(latency: dict[str, Any] | None) -> str:
    """One line saying what the CPU latency is and what it was measured on, or "n/a"."""
    if not latency or latency.get("packed_ms") is None:
        return "n/a"
    kind = "float32" if latency.get("float") else "packed"
    text = (
        f"{latency['packed_ms']:.1f} ms {kind} at batch {latency.get('batch', 1)}, "
        f"input {_shape(latency.get('input_size'))}, {latency.get('threads', '?')} threads, "
        f"{latency.get('hardware', 'unknown hardware')}, torch {latency.get('torch', '?')}"
    )
    if latency.get("float") and latency.get("measured_with"):
        text += f"; timed as `{latency['baseline']}`, the float baseline of `{latency['measured_with']}`"
    elif latency.get("float_ms") is not None:
        baseline = f"float `{latency['baseline']}`" if latency.get("baseline") else "float"
        text += f"; {baseline} {latency['float_ms']:.1f} ms"
        if latency.get("speedup") is not None:
            text += f" ({latency['speedup']:.1f}x)"
    return text


def _own_latency_text(config: dict[str, Any]) -> str:
    if config.get("cpu_latency") or not config.get("input_size"):
        return latency_text(config.get("cpu_latency"))
    return f"n/a (not measured at input {_shape(config['input_size'])})"


def bench_latency_label(latency: dict[str, Any]) -> str:
    """The card's row label of the architecture's ``zoo bench`` figure: its input size and classes, not the card's."""
    return f"CPU latency at {_shape(latency.get('input_size'))}, 1000 classes (the architecture at ImageNet shape)"


def evaluation_text(evaluation: dict[str, Any]) -> str:
    """One line for a card published by ``zoo test --ckpt_path``: which checkpoint the figures above evaluate."""
    where = f"checkpoint `{evaluation.get('checkpoint')}`"
    if evaluation.get("global_step") is not None:
        where += f" (epoch {evaluation.get('epoch')}, step {evaluation['global_step']})"
    text = f"`{evaluation.get('command', 'zoo test')}` of {where}"
    if evaluation.get("hardware"):
        text += f", {evaluation['hardware']}"
    return text


def reproduction_text(record: dict[str, Any] | None) -> str:
    """One line for the card: the rerun's top-1, the difference and whether it is within the tolerance."""
    if not record:
        return "not rerun yet"
    verdict = "within" if record["within_tolerance"] else "outside"
    return (
        f"rerun of the recipe: {100 * record['top1']:.2f}% top-1 ({record['delta_points']:+.2f} points, {verdict} "
        f"{record['tolerance_points']:g}), {record.get('hardware') or 'unknown hardware'}"
    )


def _eval_results(config: dict[str, Any]) -> list[EvalResult]:
    """The ``model-index`` entries: only accuracies measured here (a paper's numbers are not this model's eval)."""
    training = config.get("training", {})
    results = []
    for key, metric in (("top1", "top-1 accuracy"), ("top5", "top-5 accuracy")):
        if training.get(key) is not None:
            results.append(
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
    return results


def _accuracy_lines(row: dict[str, Any], text: dict[str, str], config: dict[str, Any]) -> list[str]:
    if row["accuracy_source"] != REPORTED:
        return [f"| top-1 | {text['top1']} |", f"| top-5 | {text['top5']} |"]
    source = config["reported"].get("source", "the paper")
    label = f"{ACCURACY_SOURCE_TEXT[REPORTED]} ({source})"
    return [f"| top-1 | {text['top1']}, {label} |", f"| top-5 | {text['top5']}, {label} |"]


def _use_lines(row: dict[str, Any], config: dict[str, Any], weights_shipped: bool) -> list[str]:
    if row["accuracy_source"] == REPORTED and not config.get("training"):
        return [
            "## Use",
            "",
            "No trained weights come with this card: the zoo has not trained this network on "
            f"{row['dataset']}. The top-1 and top-5 above are the paper's figures for its own network "
            f"({config['reported'].get('source', 'see the paper')}): {ACCURACY_SOURCE_TEXT[REPORTED]}. "
            f"`{row['architecture']}` follows that network but may differ from it in details. The sizes are "
            "measured on the zoo's architecture itself, saved packed. To build it (untrained) or train it:",
            "",
            "```python",
            "import zoo",
            f'model = zoo.create_model("{row["architecture"]}", num_classes={config.get("num_classes", 1000)})',
            "```",
        ]
    if not weights_shipped:
        from .bundled import train_command

        name = row["name"]
        train = (train_command(name)
                 or f"zoo fit --config <the recipe below> --publish.name {name} --publish.enabled true")
        return [
            "## Use",
            "",
            f"No weights ship with this card{_not_shipped_reason(config)}. Train them with the recipe (it writes "
            f"`hub/{name}/`), then load that folder:",
            "",
            "```bash",
            train,
            "```",
            "",
            "```python",
            "import zoo",
            f'model = zoo.from_pretrained("hub/{name}")',
            "logits = model(images)  # normalised with the mean and std above",
            "```",
        ]
    name = config.get("repo_id", "path/to/this/folder")
    return [
        "## Use",
        "",
        "```python",
        "import zoo",
        f'model = zoo.from_pretrained("{name}")',
        "logits = model(images)  # normalised with the mean and std above",
        "```",
    ]


def _not_shipped_reason(config: dict[str, Any]) -> str:
    from .bundled import BUNDLED_LIMIT_MB

    if config.get("scheme", {}).get("name") == "fp":
        return (f" (float32 weights, {_mb(config.get('sizes', {}).get('packed_bytes'))}: the weights bundled with the "
                f"zoo stay under {BUNDLED_LIMIT_MB} MB in all)")
    return (f" (the zoo bundles at most {BUNDLED_LIMIT_MB} MB of weights in all: those of the cards that `zoo models` "
            "marks with weights)")


def model_card(config: dict[str, Any], weights_shipped: bool = True) -> ModelCard:
    """The README.md of a checkpoint folder, or of a card folder (``weights_shipped``: whether the card folder
    holds the weights, which decides its "Use" lines)."""
    row = card_row(config)
    text = row_text(row)
    training = config.get("training", {})
    data = ModelCardData(
        library_name="xnor-zoo",
        license="apache-2.0",
        pipeline_tag="image-classification",
        tags=["binary-neural-network", "xnor-net", "image-classification", row["scheme"]],
        model_name=row["name"],
        eval_results=_eval_results(config) or None,
    )
    recipe = training.get("recipe")
    evaluation = config.get("evaluation")
    storage = (
        "the full-precision baseline, stored in float32" if row["scheme"] == "fp"
        else "stored bit-packed: 1 bit per binary weight"
    )
    lines = [
        f"# {row['name']}",
        "",
        f"`{row['architecture']}` with the `{row['scheme']}` binarization scheme of XNOR-Net "
        f"([Rastegari et al., 2016]({PAPER_URL})), {storage}.",
        "",
        "| | |",
        "|---|---|",
        f"| dataset | {row['dataset']} ({row['split']} split) |",
        *_accuracy_lines(row, text, config),
        f"| packed size (model.safetensors) | {text['packed']} |",
        f"| float size (float32 weights) | {text['float']} |",
        f"| compression | {text['compression']} |",
        f"| CPU latency | {_own_latency_text(config)} |",
        *([f"| {bench_latency_label(config['bench_latency'])} | {latency_text(config['bench_latency'])} |"]
          if config.get("bench_latency") else []),
        f"| training time | {text['fit']} |",
        f"| hardware | {row['hardware']} |",
        *([f"| evaluated | {evaluation_text(evaluation)} |"] if evaluation else []),
        *([f"| reproduced | {reproduction_text(config.get('reproduction'))} |"]
          if row["accuracy_source"] == MEASURED else []),
        f"| input | {tuple(config.get('input_size', ()))}, mean {config.get('mean')}, std {config.get('std')} |",
        "",
        *_use_lines(row, config, weights_shipped),
    ]
    if recipe:
        source = (f"the config stored in the checkpoint `{evaluation.get('checkpoint')}`" if evaluation
                  else "this recipe")
        lines += ["", "## Recipe", "", f"Trained with `zoo fit --config` on {source}:", "", "```yaml", recipe.strip(),
                  "```"]
    elif evaluation:
        lines += ["", "## Recipe", "", f"The checkpoint `{evaluation.get('checkpoint')}` stores no training config: "
                  "the recipe it was trained with is unknown."]
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines))


def index_table(configs: list[dict[str, Any]]) -> str:
    """A Markdown table of the given checkpoints, best top-1 first within each dataset."""
    rows = sorted((card_row(c) for c in configs), key=lambda r: (r["dataset"], -(r["top1"] or 0.0), r["name"]))
    out = [
        "| model | scheme | dataset | top-1 | top-5 | accuracy | packed | float | compression | CPU latency "
        "| architecture at ImageNet shape | training time | rerun top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = row_text(r)
        out.append(
            f"| {r['name']} | {r['scheme']} | {r['dataset']} | {t['top1']} | {t['top5']} | {t['source']} | "
            f"{t['packed']} | {t['float']} | {t['compression']} | {t['latency']} | {t['bench']} | {t['fit']} | "
            f"{t['rerun']} |"
        )
    return "\n".join(out) + "\n"
