"""The lint ``make lint`` runs, also in the suite: ruff over every Python folder, clang-format over the C++."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_FOLDERS = ("zoo", "kernels", "recipes", "tests")


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (it comes with the test extras: pip install -e '.[test]')")
    return path


def test_every_python_folder_passes_ruff():
    result = subprocess.run([_tool("ruff"), "check", *PYTHON_FOLDERS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cpp_is_clang_formatted():
    folder = ROOT / "kernels" / "zoo_kernels"
    sources = sorted(str(p.relative_to(ROOT)) for p in folder.iterdir() if p.suffix in (".cpp", ".h"))
    assert len(sources) > 10
    result = subprocess.run([_tool("clang-format"), "--dry-run", "--Werror", *sources], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[:2000]


def test_make_lint_runs_the_same_checks():
    makefile = (ROOT / "Makefile").read_text()
    assert f"ruff check {' '.join(PYTHON_FOLDERS)}" in makefile
    assert "clang-format --dry-run --Werror kernels/zoo_kernels/*.cpp kernels/zoo_kernels/*.h" in makefile
