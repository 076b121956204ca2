"""``binarize_``: convert a timm model in place to a binarization scheme.

Rules (XNOR-Net, arXiv:1603.05279, sec. 3.2 and 4):
- Layers whose type is exactly ``nn.Conv2d`` or ``nn.Linear`` are swapped for binary layers. Subclasses
  (timm's ``Conv2dSame``, ``StdConv2d``...) change the forward in ways a swap would lose, so they are refused
  with an error naming the layer unless kept in full precision with ``keep=``.
- The first conv and the classifier stay in full precision; timm's ``pretrained_cfg`` names them. A zoo backbone
  may name more in ``pretrained_cfg["keep_full_precision"]`` (Bi-Real-Net's real-valued downsample shortcuts).
- A layer whose inputs are binarized becomes the paper's block ``BatchNorm -> BinActiv -> BinConv``: a fresh
  BatchNorm right before the sign (affine unless the scheme's ``norm_affine`` is off). In timm's ResNets a conv's
  input follows the residual sum's ReLU, where ``sign()`` would be +1 almost everywhere; the BatchNorm centres it so
  that both signs occur.
- Inside known blocks, an activation whose only consumer is a binary conv is removed: in the paper's block BinActiv
  takes the activation's place (``BatchNorm -> BinActiv -> BinConv``). For timm's ResNet ``BasicBlock`` that is
  ``act1`` (``conv1 -> bn1 -> [act1] -> conv2``); ``act2`` follows the residual sum and stays (it also feeds the
  shortcut). Model families add their blocks with :func:`register_binary_activations`; the scheme's ``block_relu``
  keeps them all (an ablation).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from .layers import BinaryConv2d, BinaryConvBlock, BinaryLinear, FeatureBatchNorm
from .schemes import BinarizeConfig, get_scheme

__all__ = ["binarize_", "full_precision_layer_names", "register_binary_activations"]


# Block type -> (activation, the conv it alone feeds): the activation gives way to BinActiv when that conv's
# inputs are binarized.
ACTIVATIONS_BEFORE_BINARY_CONV: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    BasicBlock: (("act1", "conv2"),),
    Bottleneck: (("act1", "conv2"), ("act2", "conv3")),
}


def register_binary_activations(block: type[nn.Module], pairs: tuple[tuple[str, str], ...]) -> None:
    """Declare that in ``block``, each ``(activation, conv)`` activation only feeds that conv, so BinActiv replaces it
    when the conv's inputs are binarized."""
    ACTIVATIONS_BEFORE_BINARY_CONV[block] = tuple(pairs)


def _as_names(value: str | Iterable[str] | None) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    return set(value)


def full_precision_layer_names(model: nn.Module) -> set[str]:
    """The first conv and classifier (and ``keep_full_precision``), from timm's ``pretrained_cfg`` or, without one,
    by module order."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = _as_names(cfg.get("first_conv")) | _as_names(cfg.get("classifier"))
    names |= _as_names(cfg.get("keep_full_precision"))
    if names:
        return names
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return set(convs[:1]) | set(linears[-1:])


def _is_kept(name: str, keep: set[str]) -> bool:
    return any(name == k or name.startswith(k + ".") for k in keep)


def _binary_layer(module: nn.Module, config: BinarizeConfig) -> nn.Module:
    like = {"device": module.weight.device, "dtype": module.weight.dtype, "affine": config.norm_affine}
    if isinstance(module, nn.Conv2d):
        layer = BinaryConv2d.from_float(module, **config.layer_kwargs())
        norm = nn.BatchNorm2d(module.in_channels, **like)
    else:
        layer = BinaryLinear.from_float(module, **config.layer_kwargs())
        norm = FeatureBatchNorm(module.in_features, **like)  # over the last dimension, as the Linear reads it
    return BinaryConvBlock(norm, layer) if config.binarizes_inputs else layer


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def binarize_(
    model: nn.Module,
    scheme: str | BinarizeConfig = "xnor",
    *,
    keep: str | Iterable[str] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Convert ``model`` in place to ``scheme`` and return it.

    Args:
        model: a float model, typically from ``timm.create_model``.
        scheme: a registered scheme name (``zoo.list_schemes()``) or a ``BinarizeConfig``.
        keep: names of extra modules to keep in full precision (the first conv and classifier always are).
        overrides: fields of the scheme to replace, e.g. ``binary_gradient=True``, ``block_relu=True``,
            ``norm_affine=False``.

    The chosen config is stored as ``model.binarize_config`` and the ``keep`` names as ``model.binarize_keep`` (what
    a packed checkpoint records to rebuild the model). Nothing is modified if any layer is refused.
    """
    config = get_scheme(scheme, **overrides)
    previous = getattr(model, "binarize_config", None)
    if previous is not None and not previous.is_float:
        raise ValueError(f"model is already binarized with scheme {previous.name!r}")

    modules = dict(model.named_modules())
    kept = full_precision_layer_names(model) | _as_names(keep)
    missing = sorted(k for k in kept if k not in modules)
    if missing:
        raise KeyError(f"layers to keep in full precision not found in the model: {missing}")

    targets = []
    for name, module in modules.items():
        if _is_kept(name, kept) or isinstance(module, (BinaryConv2d, BinaryLinear)):
            continue
        if type(module) in (nn.Conv2d, nn.Linear):
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise TypeError(f"cannot binarize layer {name!r}: padding_mode={module.padding_mode!r} (zeros only)")
            if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
                raise TypeError(f"cannot binarize layer {name!r}: padding={module.padding!r} (integers only)")
            targets.append(name)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            raise TypeError(
                f"cannot binarize layer {name!r} of type {type(module).__module__}.{type(module).__name__}: it "
                f"subclasses {'nn.Conv2d' if isinstance(module, nn.Conv2d) else 'nn.Linear'} with its own forward, "
                f"which a binary swap would lose; keep it in full precision with keep=[{name!r}]"
            )

    if not config.is_float:
        for name in targets:
            _set_submodule(model, name, _binary_layer(modules[name], config))
    if config.binarizes_inputs and not config.block_relu:
        for name, module in modules.items():
            for act, conv in ACTIVATIONS_BEFORE_BINARY_CONV.get(type(module), ()):
                if f"{name}.{conv}" in targets:
                    setattr(module, act, nn.Identity())
    model.binarize_config = config
    model.binarize_keep = sorted(_as_names(keep))
    return model
