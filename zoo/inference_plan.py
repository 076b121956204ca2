"""A packed module's inference forward as prebound kernel calls (:func:`zoo_kernels.ops.prebound_conv2d`).

At batch 1 the Python around a binary conv (argument checks, route lookup, the BatchNorm folding's cache, the
fusion tests of each block) costs a third as much again as the kernel itself. A :class:`PreboundPlan` is a module's
forward for one input signature (type, shape, strides, dtype, device), made of calls bound once; each call checks,
in one pass, that nothing it was built from changed:

- the input's signature;
- the modules' tensors: the same objects (a replaced parameter or child) with the same contents (one
  :func:`zoo_kernels.cpu.fingerprint` over all of them: also a write through ``.data``, which no version counter
  records; but the packed weight words, ``weight_bits``, which the compiled kernel fingerprints itself on every call
  and re-lays out when they change), and the modules' ``training`` flags and BatchNorm ``eps``;
- the route choices (:func:`zoo_kernels.routes.state`: none made, cleared or forced since, no ``record`` block
  open) and :func:`zoo_kernels.ops.prebound_usable` (nothing traces, the CPU kernels are the registered ones).

Where anything differs the module runs its ordinary forward (and may build a new plan). A module keeps a few plans,
one per input signature, so alternating batch sizes do not rebuild them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from zoo_kernels import routes
from zoo_kernels.cpu import fingerprint
from zoo_kernels.ops import prebound_usable

__all__ = ["PreboundPlan", "plan_for", "signature"]

MAX_PLANS = 4  # input signatures kept per module


def signature(x: torch.Tensor) -> tuple:
    """What a prebound call assumes of its input."""
    return type(x), x.shape, x.stride(), x.dtype, x.device, x.requires_grad


_KERNEL_CHECKED = "weight_bits"  # the buffer whose contents the compiled kernel checks on every call


def _state(modules: tuple[nn.Module, ...]) -> tuple:
    tensors = tuple(t for m in modules for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)
    read = tuple(t for m in modules for name, t in (*m._parameters.items(), *m._buffers.items())
                 if t is not None and name != _KERNEL_CHECKED)
    flags = tuple((m.training, m.__dict__.get("eps")) for m in modules)
    return routes.state(), prebound_usable(), tuple(map(id, modules)), tuple(map(id, tensors)), flags, \
        fingerprint(*read)


class PreboundPlan:
    """``run(x)`` for inputs of one signature, valid while :meth:`matches` holds."""

    __slots__ = ("modules", "run", "sig", "state")

    def __init__(self, x: torch.Tensor, modules: tuple[nn.Module, ...], run: Callable[[torch.Tensor], torch.Tensor]):
        self.sig, self.modules, self.run = signature(x), modules, run
        self.state = _state(modules)

    def matches(self, x: torch.Tensor) -> bool:
        return signature(x) == self.sig and self.state[0] is not None and _state(self.modules) == self.state


def plan_for(owner: nn.Module, x: torch.Tensor) -> PreboundPlan | None:
    """The plan ``owner`` keeps for ``x``'s signature, if it still matches (a stale one is dropped)."""
    plans: dict[tuple, PreboundPlan] | None = owner.__dict__.get("_prebound_plans")
    if not plans:
        return None
    sig = signature(x)
    plan = plans.get(sig)
    if plan is None:
        return None
    if plan.matches(x):
        return plan
    del plans[sig]
    return None


def keep(owner: nn.Module, plan: PreboundPlan) -> None:
    """Keep ``plan`` on ``owner`` (a plain attribute: nothing enters the state dict), the oldest dropped past
    :data:`MAX_PLANS`."""
    plans = owner.__dict__.setdefault("_prebound_plans", {})
    plans[plan.sig] = plan
    while len(plans) > MAX_PLANS:
        del plans[next(iter(plans))]
