"""README.md: a user document of at most 150 lines, whose install line is there, whose loading example runs as
pasted, and whose model table is the one the cards give."""

import re
from pathlib import Path

import torch

from zoo.hub.cards import index_table
from zoo.hub.publish import collect_cards

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _code(title: str, language: str) -> str:
    (block,) = re.findall(rf"```{language}\n(.*?)```", _section(title), flags=re.S)
    return block


def test_readme_is_at_most_150_lines():
    assert len(README.splitlines()) <= 150


def test_install_is_pip_install_in_a_clone():
    assert "pip install -e ." in _code("Install", "bash").splitlines()[0]
    assert "clone" in _section("Install")


def test_the_loading_example_runs_as_pasted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _code("Use a model", "python")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["logits"].shape == (1, 10) and torch.isfinite(namespace["logits"]).all()
    assert {p.name for p in (tmp_path / "my-xnor").iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert type(namespace["trainable"]).__name__ == "ResNet"
    first, dots, last = re.search(r'zoo\.list_models\("xnor_\*"\)\s+# \[(.*)\]', code).group(1).split(", ")
    listed = namespace["zoo"].list_models("xnor_*")
    assert (f"'{listed[0]}'", dots, f"'{listed[-1]}'") == (first, "...", last)


def test_the_model_table_is_the_digits_cards_index():
    configs = [c for c in collect_cards(ROOT / "cards") if c["name"] == f"{c['architecture']}-digits"]
    assert len(configs) == 22
    assert index_table(configs) in _section("Models")
