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

__all__ = ["PreboundPlan", "keep", "keep_unplanned", "plan_for", "signature", "unplanned"]

MAX_PLANS = 4  # input signatures kept per module


def signature(x: torch.Tensor) -> tuple:
    """What a prebound call assumes of its input."""
    return type(x), x.shape, x.stride(), x.dtype, x.device, x.requires_grad


_KERNEL_CHECKED = "weight_bits"  # the buffer whose contents the compiled kernel checks on every call


def _tensors(modules: tuple[nn.Module, ...]) -> list[torch.Tensor | None]:
    return [t for m in modules for d in (m._parameters, m._buffers) for t in d.values()]


def _flags(modules: tuple[nn.Module, ...]) -> list[tuple[bool, object]]:
    return [(m.training, m.__dict__.get("eps")) for m in modules]


class PreboundPlan:
    """``run(x)`` for inputs of one signature, valid while :meth:`matches` holds."""

    __slots__ = ("flags", "fingerprint", "modules", "read", "routes", "run", "sig", "tensors")

    def __init__(self, x: torch.Tensor, modules: tuple[nn.Module, ...], run: Callable[[torch.Tensor], torch.Tensor]):
        self.sig, self.modules, self.run = signature(x), modules, run
        self.routes = routes.state()
        self.tensors = _tensors(modules)  # the objects themselves: a replaced tensor is another object
        names = [n for m in modules for d in (m._parameters, m._buffers) for n in d]
        self.read = [t is not None and n != _KERNEL_CHECKED for t, n in zip(self.tensors, names, strict=True)]
        self.flags = _flags(modules)
        self.fingerprint = self._fingerprint(self.tensors)

    def _fingerprint(self, tensors: list[torch.Tensor | None]) -> int:
        return fingerprint(*[t for t, r in zip(tensors, self.read, strict=True) if r])

    def matches(self, x: torch.Tensor) -> bool:
        if signature(x) != self.sig or self.routes is None or routes.state() != self.routes or not prebound_usable():
            return False
        tensors = _tensors(self.modules)
        if len(tensors) != len(self.tensors) or any(a is not b for a, b in zip(tensors, self.tensors, strict=True)):
            return False
        return _flags(self.modules) == self.flags and self._fingerprint(tensors) == self.fingerprint


def plan_for(owner: nn.Module, x: torch.Tensor) -> PreboundPlan | None:
    """The plan ``owner`` keeps for ``x``'s signature, if it still matches (a stale one is dropped); None while
    compiling (the compiled graph calls the ops itself, and guards on nothing the plans change)."""
    if torch.compiler.is_compiling():
        return None
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


def keep_unplanned(owner: nn.Module, x: torch.Tensor) -> None:
    """Remember that no plan could be built for ``x``'s signature (a layer on the int8 route, say), so that the
    ordinary forward does not try again on every call while the route choices stay as they are."""
    unplanned_ = owner.__dict__.setdefault("_prebound_unplanned", {})
    unplanned_[signature(x)] = routes.state()
    while len(unplanned_) > MAX_PLANS:
        del unplanned_[next(iter(unplanned_))]


def unplanned(owner: nn.Module, x: torch.Tensor) -> bool:
    """Whether building a plan for ``x``'s signature failed under the present route choices."""
    seen = owner.__dict__.get("_prebound_unplanned")
    sig = signature(x)
    return bool(seen) and sig in seen and seen[sig] == routes.state()
