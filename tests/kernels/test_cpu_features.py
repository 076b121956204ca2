"""zoo_kernels.cpu_features against the kernel's own view of the CPU (/proc/cpuinfo's flags, on Linux x86-64)."""

import platform
from pathlib import Path

import pytest
from zoo_kernels import cpu_features as cf

# torch's cpuinfo names -> /proc/cpuinfo flags
PROC_FLAGS = {"avx2": "avx2", "avx512_f": "avx512f", "avx512_bw": "avx512bw", "avx512_vl": "avx512vl",
              "avx512_vpopcntdq": "avx512_vpopcntdq", "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16",
              "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}


@pytest.mark.skipif(platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(),
                    reason="needs /proc/cpuinfo of an x86-64 Linux machine")
def test_features_agree_with_proc_cpuinfo():
    line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    flags = set(line.split(":", 1)[1].split())
    for name, flag in PROC_FLAGS.items():
        assert cf.has_feature(name) == (flag in flags), name


def test_class_follows_the_features():
    f = cf.cpu_features()
    expected = ("amx" if f["amx_int8"] and f["amx_tile"] else "avx512_vpopcntdq" if f["avx512_vpopcntdq"]
                and f["avx512_bw"] else "avx2" if f["avx2"] else "generic")
    assert cf.cpu_class() == expected
    assert cf.has_native_bf16() == (f["avx512_bf16"] or f["amx_bf16"])
    assert set(cf.FEATURES) <= set(f) and isinstance(f["cpu_name"], str)


def test_unknown_feature_is_an_error():
    with pytest.raises(ValueError, match="unknown CPU feature 'sse9'"):
        cf.has_feature("sse9")
