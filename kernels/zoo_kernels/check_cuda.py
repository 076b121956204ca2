"""GPU self-check of the Triton XNOR-popcount conv: ``python -m zoo_kernels.check_cuda [--quick]``.

For each shape of :data:`CASES` (ResNet-18's binary convs at a 224x224 input, batch 8, and odd ones: channels not a
multiple of 32, an odd number of filters, stride 2, dilation 2, batch 1), the compiled kernel runs on CUDA

* with every tile config the autotuner would time for the shape, forced one at a time,
* autotuned within each route ("popcount", "dot"), and autotuned over both (what ``zoo_xnor::xnor_conv2d`` runs),

and each result is compared with the exact int64 reference (:func:`zoo_kernels.reference.xnor_conv2d_reference`)
through the epilogue ``alpha[o] * scale[n, 0, y, x] * int + bias[o]``, with powers of two for ``alpha`` and ``scale``
and integers for ``bias``: every output is then exact in float32, so the check is equality (max |err| = 0). The
autotuned kernel is also checked with random float ``alpha``, ``scale``, ``bias`` against float64 (max relative error
<= 1e-5) and timed next to a cuDNN float16 conv of the same shape, for scale.

Then the Triton sign packing (:mod:`zoo_kernels.triton_pack`) is checked against the CPU definition.

Prints one line per check; exit status 0 when every check passes, 1 when one fails, 2 when the check cannot run
(no CUDA device, triton missing, or ``TRITON_INTERPRET=1``). Most of its time (about a minute) is Triton compiling
the configs, once per kind of shape; ``--quick`` runs the first three cases only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .packing import pack_signs, pack_weight_signs
from .reference import conv_output_size, xnor_conv2d_reference

__all__ = ["CASES", "Case", "check_case", "check_packing", "main"]

FLOAT_RTOL = 1e-5


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    channels: int
    filters: int
    size: tuple[int, int]
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    def __str__(self) -> str:
        return (f"{self.name}: N={self.batch} C={self.channels} O={self.filters} {self.size[0]}x{self.size[1]} "
                f"k={self.kernel} s={self.stride} p={self.padding} d={self.dilation}")


CASES = (
    Case("resnet18 layer1 conv", 8, 64, 64, (56, 56), 3, 1, 1),
    Case("resnet18 layer4 conv", 8, 512, 512, (7, 7), 3, 1, 1),
    Case("odd channels, stride and dilation", 3, 70, 37, (13, 11), 3, 2, 2, 2),
    Case("resnet18 layer2.0 conv1", 8, 64, 128, (56, 56), 3, 2, 1),
    Case("resnet18 layer2.0 downsample", 8, 64, 128, (56, 56), 1, 2, 0),
    Case("resnet18 layer2 conv", 8, 128, 128, (28, 28), 3, 1, 1),
    Case("resnet18 layer3 conv", 8, 256, 256, (14, 14), 3, 1, 1),
    Case("3 channels, batch 1", 1, 3, 5, (9, 8), 3, 1, 1),
)


@dataclass
class Operands:
    """A case's packed operands on ``device``, its exact integer conv, and exact / float epilogue parameters."""

    x_packed: torch.Tensor
    w_packed: torch.Tensor
    reference: torch.Tensor  # int64 (N, O, Ho, Wo)
    exact: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # alpha, scale, bias: products and sums exact in float32
    floats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # random alpha, scale, bias

    def expected(self, alpha: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``alpha[o] * scale[n, 0, y, x] * int + bias[o]`` in float64."""
        return alpha.double().view(1, -1, 1, 1) * scale.double() * self.reference.double() + bias.double().view(
            1, -1, 1, 1)


def make_operands(case: Case, device: torch.device | str, seed: int = 0) -> Operands:
    g = torch.Generator().manual_seed(seed)
    h, w = case.size
    x = torch.randn(case.batch, case.channels, h, w, generator=g)
    wt = torch.randn(case.filters, case.channels, case.kernel, case.kernel, generator=g)
    ho = conv_output_size(h, case.kernel, case.stride, case.padding, case.dilation)
    wo = conv_output_size(w, case.kernel, case.stride, case.padding, case.dilation)
    o, n = case.filters, case.batch
    exact = (2.0 ** torch.randint(-1, 3, (o,), generator=g), 2.0 ** torch.randint(-2, 2, (n, 1, ho, wo), generator=g),
             torch.randint(-8, 9, (o,), generator=g).float())
    floats = (torch.rand(o, generator=g) + 0.5, torch.rand(n, 1, ho, wo, generator=g) + 0.5,
              torch.randn(o, generator=g))
    xp, wp = pack_signs(x).to(device), pack_weight_signs(wt).to(device)
    ref = xnor_conv2d_reference(xp, wp, case.channels, case.stride, case.padding, case.dilation)
    return Operands(xp, wp, ref, tuple(t.to(device) for t in exact), tuple(t.to(device) for t in floats))


def check_case(
    case: Case,
    launches: list[tuple[str, dict]],
    device: torch.device | str = "cuda",
    kernel: Callable[..., torch.Tensor] | None = None,
    operands: Operands | None = None,
) -> list[tuple[str, bool, str]]:
    """Run ``kernel`` (default :func:`zoo_kernels.triton_xnor.xnor_conv2d_triton`) once per ``(label, keyword
    arguments)`` of ``launches`` on the exact epilogue; return ``(label, passed, detail)`` per launch. A launch that
    raises fails with the error as its detail."""
    if kernel is None:
        from .triton_xnor import xnor_conv2d_triton as kernel
    ops = operands or make_operands(case, device)
    expected = ops.expected(*ops.exact)
    geometry = (case.channels, [case.stride] * 2, [case.padding] * 2, [case.dilation] * 2)
    results = []
    for label, kwargs in launches:
        try:
            out = kernel(ops.x_packed, ops.w_packed, *ops.exact, *geometry, **kwargs)
            if out.shape != expected.shape or out.dtype != torch.float32:
                results.append((label, False, f"got {out.dtype} {tuple(out.shape)}, expected {tuple(expected.shape)}"))
                continue
            err = (out.double() - expected).abs()
            bad = int((err > 0).sum())
            results.append((label, bad == 0, f"max |err| {err.max().item():.3g}, {bad} of {err.numel()} wrong"))
        except Exception as e:  # noqa: BLE001 - report the failure and go on with the other checks
            results.append((label, False, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"))
    return results


def _float_check(case: Case, ops: Operands) -> tuple[bool, str]:
    from .triton_xnor import xnor_conv2d_triton

    geometry = (case.channels, [case.stride] * 2, [case.padding] * 2, [case.dilation] * 2)
    out = xnor_conv2d_triton(ops.x_packed, ops.w_packed, *ops.floats, *geometry)
    expected = ops.expected(*ops.floats)
    rel = ((out.double() - expected).abs().max() / expected.abs().max()).item()
    return rel <= FLOAT_RTOL, f"max relative error {rel:.2e} (limit {FLOAT_RTOL:g})"


def _timings(case: Case, ops: Operands) -> str:
    import triton.testing

    from .triton_xnor import xnor_conv2d_triton

    geometry = (case.channels, [case.stride] * 2, [case.padding] * 2, [case.dilation] * 2)
    xnor_ms = triton.testing.do_bench(lambda: xnor_conv2d_triton(ops.x_packed, ops.w_packed, *ops.floats, *geometry),
                                      warmup=5, rep=50)
    h, w = case.size
    x = torch.randn(case.batch, case.channels, h, w, device=ops.x_packed.device, dtype=torch.float16)
    wt = torch.randn(case.filters, case.channels, case.kernel, case.kernel, device=x.device, dtype=torch.float16)
    fp16_ms = triton.testing.do_bench(lambda: F.conv2d(x, wt, None, case.stride, case.padding, case.dilation),
                                      warmup=5, rep=50)
    return f"{xnor_ms * 1e3:.1f} us (cuDNN float16 conv: {fp16_ms * 1e3:.1f} us)"


def check_packing(device: str = "cuda") -> list[tuple[str, bool, str]]:
    """The Triton packing on ``device`` against :func:`zoo_kernels.packing.pack_signs` on the CPU: identical words (with
    the fused affine: on the pixels whose float32 rounding cannot flip a sign) and ``mean_c |y|`` within 1e-5."""
    from .triton_pack import pack_signs_absmean_triton

    results = []
    gen = torch.Generator().manual_seed(0)
    for label, shape, layout, affine in (
        ("packing 8x64x56x56 NCHW", (8, 64, 56, 56), torch.contiguous_format, False),
        ("packing 8x64x56x56 channels_last", (8, 64, 56, 56), torch.channels_last, False),
        ("packing 3x70x13x11 + affine", (3, 70, 13, 11), torch.contiguous_format, True),
    ):
        try:
            x = torch.randn(shape, generator=gen)
            scale, shift = (torch.randn(shape[1], generator=gen), torch.randn(shape[1], generator=gen)) if affine \
                else (None, None)
            y = x.double() if scale is None else x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(
                1, -1, 1, 1)
            xc = x.to(device).contiguous(memory_format=layout)
            words, mean = pack_signs_absmean_triton(xc, *(None if t is None else t.to(device) for t in (scale, shift)))
            clear = (y.abs() > 1e-5).all(dim=1)
            same = torch.equal(words.cpu()[clear], pack_signs(y)[clear])
            err = ((mean.cpu().double() - y.abs().mean(dim=1, keepdim=True)).abs().max()).item()
            ok = same and err <= 1e-5
            results.append((label, ok, f"words {'equal' if same else 'DIFFER'}, mean max |err| {err:.1e}"))
        except Exception as e:  # noqa: BLE001 - report the failure and go on with the other checks
            results.append((label, False, f"{type(e).__name__}: {e}"))
    return results


def _cannot_run() -> str | None:
    import os

    if not torch.cuda.is_available():
        return "no CUDA device: this check runs the compiled Triton kernel on a GPU"
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return "TRITON_INTERPRET=1 is set: unset it to check the compiled kernel"
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not importable ({e})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo_kernels.check_cuda", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the first three cases")
    args = parser.parse_args(argv)
    reason = _cannot_run()
    if reason is not None:
        print(f"check_cuda: cannot run: {reason}", file=sys.stderr)
        return 2

    import triton

    from . import triton_xnor as tx

    torch.backends.cudnn.allow_tf32 = False
    print(f"check_cuda: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    start, failures, total = time.time(), 0, 0
    for case in CASES[:3] if args.quick else CASES:
        t0 = time.time()
        print(f"\n{case}")
        ops = make_operands(case, "cuda")
        cw = ops.x_packed.shape[-1]
        launches = [(f"config {c.route} {c.block_m}x{c.block_n}x{c.block_k} w{c.num_warps} s{c.num_stages}",
                     {"config": c}) for c in tx.candidate_configs(cw)]
        launches += [(f"autotuned {route}", {"route": route}) for route in tx.ROUTES]
        launches.append(("autotuned (both routes)", {}))
        results = check_case(case, launches, "cuda", operands=ops)
        try:
            results.append(("autotuned, float epilogue", *_float_check(case, ops)))
        except Exception as e:  # noqa: BLE001
            results.append(("autotuned, float epilogue", False, f"{type(e).__name__}: {e}"))
        for label, ok, detail in results:
            print(f"  [{'PASS' if ok else 'FAIL'}] {label:<34} {detail}")
        failures += sum(not ok for _, ok, _ in results)
        total += len(results)
        best = getattr(tx._AUTOTUNED[None], "best_config", None)
        try:
            timing = _timings(case, ops)
        except Exception as e:  # noqa: BLE001 - a timing problem is not a correctness failure
            timing = f"not timed ({type(e).__name__}: {e})"
        print(f"  autotuned pick: {best} | {timing} | case took {time.time() - t0:.1f} s")
    print("\nsign packing (zoo_kernels.triton_pack) against zoo_kernels.packing on the CPU")
    for label, ok, detail in check_packing():
        print(f"  [{'PASS' if ok else 'FAIL'}] {label:<34} {detail}")
        failures += not ok
        total += 1
    verdict = "ALL PASS" if failures == 0 else f"{failures} FAILED"
    print(f"\ncheck_cuda: {verdict}: {total - failures} of {total} checks passed in {time.time() - start:.0f} s")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
