"""zoo_kernels.gpu_compile: the GPU path of the Triton kernels compiled ahead of time (PTX and cubin, no GPU needed).

The compile runs in a subprocess without TRITON_INTERPRET (tests/conftest.py sets it for this process, where the
kernels are interpreted functions).
"""

import json
import os
import subprocess
import sys

import pytest
from zoo_kernels import gpu_compile
from zoo_kernels.triton_xnor import AUTOTUNE_CONFIGS


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_compile") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "zoo_kernels.gpu_compile", "--json", str(path)], env=env,
                         capture_output=True, text=True, timeout=900)
    if run.returncode == 2:
        pytest.skip(run.stderr.strip())
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(path.read_text())["kernels"]


def test_every_autotune_config_compiles_with_its_instructions(report):
    by_name = {(k["arch"], k["name"]): k for k in report}
    for arch in gpu_compile.ARCHS:
        for c in AUTOTUNE_CONFIGS:
            k = by_name[(arch, f"xnor_conv2d {c.route} {c.block_m}x{c.block_n}x{c.block_k} w{c.num_warps} "
                               f"s{c.num_stages}")]
            assert k["ok"] and k["problems"] == []
            if c.route == "popcount":
                assert k["instructions"] == ["popc.b32"]  # the hardware popcount, not the SWAR fallback
            else:
                mma = "wgmma.mma_async" if arch >= 90 else "mma.sync"
                assert k["instructions"] and all(i.startswith(mma) and ".s8.s8" in i for i in k["instructions"])
            assert 0 < k["registers"] <= 255 and k["local_bytes"] == 0


def test_every_packing_variant_compiles(report):
    names = {(k["arch"], k["name"]) for k in report if k["name"].startswith("pack_signs")}
    expected = {(arch, f"pack_signs {d}" + a + m) for arch in gpu_compile.ARCHS
                for d in ("float32", "float16", "bfloat16") for a in ("", " affine") for m in ("", " absmean")}
    assert names == expected
    for k in report:
        if k["name"].startswith("pack_signs"):
            assert k["ok"] and 0 < k["registers"] <= 255 and k["local_bytes"] == 0


def test_interpreted_kernels_cannot_be_compiled(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "TRITON_INTERPRET" in gpu_compile.cannot_run()
    assert gpu_compile.main([]) == 2
    assert "cannot run" in capsys.readouterr().err
