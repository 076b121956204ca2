"""XNOR-Net's box filter ``k`` (arXiv:1603.05279, sec. 3.2, fig. 2): the one float implementation of ``K = A * k``.

``K = conv2d(A, k)`` with ``A = mean_c |I|`` (N, 1, H, W) and ``k`` a ``kh x kw`` box of ``1 / (kh * kw)``, with the
binary conv's stride, padding and dilation, so that ``K`` has the conv's output shape (N, 1, Ho, Wo); zero padding
counts as 0 in the average, as the padded zeros add nothing to the conv. The training layers, the kernels' fallback
and the benchmark's reference all call :func:`box_filter`; the compiled CPU kernel computes the same sums in C++.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["box_filter"]


def box_filter(
    a: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int] | int = 1,
    padding: Sequence[int] | int = 0,
    dilation: Sequence[int] | int = 1,
) -> torch.Tensor:
    """``conv2d(a, box of 1 / (kh * kw))`` for ``a`` (N, 1, H, W), in ``a``'s dtype and device (differentiable)."""
    kh, kw = kernel_size
    box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=a.dtype, device=a.device)
    return F.conv2d(a, box, None, stride, padding, dilation)
