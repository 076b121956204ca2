"""pyproject.toml lists its packages by hand (kernels/zoo_kernels/ installs as zoo_kernels): every package must be
listed, and each package's folder has its import name."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "zoo").rglob("__init__.py")}
    assert set(config["packages"]) == found | {"zoo_kernels"}
    assert config["package-dir"] == {"zoo_kernels": "kernels/zoo_kernels"}
    assert (ROOT / "kernels" / "zoo_kernels" / "__init__.py").is_file()
    assert not (ROOT / "kernels" / "__init__.py").exists()  # kernels/ is a folder, not the package
    assert not (ROOT / "kernels.py").exists()  # nothing may shadow the unrelated PyPI package `kernels`
