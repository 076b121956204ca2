"""Ahead-of-time compilation of the Triton kernels for NVIDIA GPUs, on a machine without one:
``python -m zoo_kernels.gpu_compile [--arch 80 90] [--json PATH]``.

Triton compiles a ``@triton.jit`` kernel for a named target (``GPUTarget("cuda", capability, 32)``) to PTX and, with
the ``ptxas`` its wheel bundles, to a cubin; neither step needs a driver or a device. The tests run the kernels in
Triton's interpreter, which never reaches the compiler; this takes the GPU path of :mod:`zoo_kernels.triton_xnor` and
:mod:`zoo_kernels.triton_pack` through the whole of it wherever no GPU is lent (CI included):

* the XNOR conv with every :data:`~zoo_kernels.triton_xnor.AUTOTUNE_CONFIGS` entry (both routes, with ``scale``,
  ``bias`` and the hardware ``popc``);
* the sign packing of float32, float16 and bfloat16 inputs, with and without the fused affine and ``mean_c |y|``;

for sm_80 (A100) and sm_90 (H100, H200) by default, specialised as a launch on contiguous tensors specialises them
(pointers 16-byte aligned, unit strides constant). For each kernel it checks the instructions the route is about --
``popc.b32`` in the popcount route, int8 tensor-core MMAs in the dot route (``mma.sync`` on sm_80, ``wgmma`` on sm_90,
``.s8`` operands) -- and reads the cubin's registers, spill memory (``LOCAL``) and shared memory from
``cuobjdump -res-usage``.

Exit status: 0 when every kernel compiles with its instructions and without spills, 1 when one does not, 2 when the
check cannot run (no Triton CUDA backend, or ``TRITON_INTERPRET=1``, under which the kernels are interpreted
functions that Triton cannot compile).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field

__all__ = ["ARCHS", "CompiledKernel", "cannot_run", "compile_all", "compile_pack", "compile_xnor", "main"]

ARCHS = (80, 90)  # A100; H100 and H200

# The launch's specialisation for contiguous tensors: Triton treats an int argument equal to 1 as a constant, and
# marks pointers that are multiples of 16 bytes (every fresh torch allocation is).
_XNOR_POINTERS = {"x_ptr": "*i32", "w_ptr": "*i32", "alpha_ptr": "*fp32", "scale_ptr": "*fp32", "bias_ptr": "*fp32",
                  "out_ptr": "*fp32"}
_XNOR_UNIT_STRIDES = ("sx_c", "sw_c", "ss_w", "so_w")
_PACK_UNIT_STRIDES = ("sx_w",)
_PACK_DTYPES = {"float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16"}


@dataclass
class CompiledKernel:
    """One kernel compiled for one GPU: what it is, the instructions found in its PTX, its cubin's resources, and
    what failed (empty when nothing did)."""

    name: str
    arch: int
    instructions: list[str] = field(default_factory=list)  # the checked instructions found in the PTX
    registers: int = -1
    local_bytes: int = -1  # spill memory per thread
    shared_bytes: int = -1
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def cannot_run() -> str | None:
    """Why the kernels cannot be compiled here, or None."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "TRITON_INTERPRET is set: the kernels are interpreted functions, not compilable ones"
    try:
        import triton  # noqa: F401
        from triton import knobs
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except ImportError as e:
        return f"triton is not importable ({e})"
    for tool in ("ptxas", "cuobjdump"):
        path = getattr(knobs.nvidia, tool).path
        if not path or not os.path.exists(path):
            return f"Triton's {tool} was not found"
    return None


def _signature(fn, pointers: dict[str, str], constants: dict[str, object]) -> tuple[dict, dict]:
    """The compiler's signature (type per argument; "constexpr" for the constants) and the pointers' alignment."""
    sig = {a: pointers.get(a, "constexpr" if a in constants else "i32") for a in fn.arg_names}
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in pointers}
    return sig, attrs


def _compile(name: str, fn, pointers: dict[str, str], constants: dict[str, object], arch: int,
             options: dict[str, int], expect: list[str]) -> CompiledKernel:
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    result = CompiledKernel(name, arch)
    sig, attrs = _signature(fn, pointers, constants)
    try:
        compiled = triton.compile(ASTSource(fn, sig, constants, attrs), target=GPUTarget("cuda", arch, 32),
                                  options=options)
    except Exception as e:  # noqa: BLE001 - a compile error is the finding
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # ptxas' own first error ("ptxas FILE, line N; error : ..."), else the first line that names an error
        errors = [line for line in lines if line.startswith("ptxas ") and "error" in line]
        errors += [line for line in lines if "error" in line.lower()]
        result.problems.append(f"does not compile: {type(e).__name__}: {(errors or lines or [''])[0][:300]}")
        return result
    ptx = compiled.asm["ptx"]
    for pattern in expect:
        found = sorted(set(re.findall(pattern, ptx)))
        if found:
            result.instructions += found
        else:
            result.problems.append(f"no instruction matching {pattern!r} in the PTX")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
    try:
        usage = subprocess.run([knobs.nvidia.cuobjdump.path, "-res-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
    finally:
        os.unlink(f.name)
    match = re.search(r"REG:(\d+) STACK:\d+ SHARED:(\d+) LOCAL:(\d+)", usage)
    if match is None:
        result.problems.append(f"no resource usage in cuobjdump's output: {usage.strip()[:200]!r}")
    else:
        result.registers, result.shared_bytes, result.local_bytes = (int(g) for g in match.groups())
        if result.local_bytes:
            result.problems.append(f"spills {result.local_bytes} bytes per thread to local memory")
    return result


def _xnor_expected(route: str, arch: int) -> list[str]:
    if route == "popcount":
        return [r"popc\.b32"]
    mma = r"wgmma\.mma_async[\w.]*\.s8\.s8" if arch >= 90 else r"mma\.sync[\w.]*\.s8\.s8[\w.]*"
    return [mma]


def compile_xnor(config, arch: int) -> CompiledKernel:
    """The XNOR conv with one :class:`~zoo_kernels.triton_xnor.TritonXnorConfig` (scale, bias and popc on)."""
    from . import triton_xnor as tx

    constants = {"HAS_SCALE": True, "HAS_BIAS": True, "POPC_ASM": True, **config.meta(),
                 **dict.fromkeys(_XNOR_UNIT_STRIDES, 1)}
    name = (f"xnor_conv2d {config.route} {config.block_m}x{config.block_n}x{config.block_k} "
            f"w{config.num_warps} s{config.num_stages}")
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    return _compile(name, tx._xnor_conv2d_kernel, _XNOR_POINTERS, constants, arch, options,
                    _xnor_expected(config.route, arch))


def compile_pack(dtype: str, affine: bool, absmean: bool, arch: int) -> CompiledKernel:
    """The sign packing of a ``dtype`` input, with or without the fused affine and ``mean_c |y|``."""
    from . import triton_pack as tp

    pointers = {"x_ptr": _PACK_DTYPES[dtype], "scale_ptr": "*fp32", "shift_ptr": "*fp32", "words_ptr": "*i32",
                "absmean_ptr": "*fp32"}
    constants = {"HAS_AFFINE": affine, "ABSMEAN": absmean, "BLOCK_P": tp.GPU_BLOCK_P,
                 **dict.fromkeys(_PACK_UNIT_STRIDES, 1)}
    name = f"pack_signs {dtype}" + (" affine" if affine else "") + (" absmean" if absmean else "")
    return _compile(name, tp._pack_signs_kernel, pointers, constants, arch, {}, [])  # launched with the defaults


def compile_all(archs: tuple[int, ...] = ARCHS) -> list[CompiledKernel]:
    """Every kernel of the GPU path, for each of ``archs``."""
    from .triton_xnor import AUTOTUNE_CONFIGS

    results = []
    for arch in archs:
        results += [compile_xnor(c, arch) for c in AUTOTUNE_CONFIGS]
        results += [compile_pack(d, a, m, arch) for d in _PACK_DTYPES for a in (False, True) for m in (False, True)]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo_kernels.gpu_compile", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities, e.g. 80 90")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    reason = cannot_run()
    if reason is not None:
        print(f"gpu_compile: cannot run: {reason}", file=sys.stderr)
        return 2
    import triton

    print(f"gpu_compile: triton {triton.__version__}, targets {', '.join(f'sm_{a}' for a in args.arch)}")
    results = compile_all(tuple(args.arch))
    for r in results:
        status = "PASS" if r.ok else "FAIL"
        print(f"  [{status}] sm_{r.arch} {r.name:<42} regs {r.registers:>3}  local {r.local_bytes:>3} B  shared "
              f"{r.shared_bytes:>6} B  {' '.join(r.instructions)}" + "".join(f"\n         {p}" for p in r.problems))
    failures = sum(not r.ok for r in results)
    print(f"gpu_compile: {len(results) - failures} of {len(results)} kernels compiled with their instructions and "
          "no spills")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triton": triton.__version__, "kernels": [{**asdict(r), "ok": r.ok} for r in results]}, f,
                      indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
