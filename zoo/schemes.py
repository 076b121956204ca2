"""Binarization schemes, registered by name: what ``zoo.binarize_(model, "xnor")`` does to each layer.

A scheme is a small frozen dataclass that round-trips through JSON (it is stored in checkpoint configs).
Adding a scheme is one ``register_scheme(...)`` call in this file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ._unknown_name import UnknownNameError

__all__ = ["BinarizeConfig", "register_scheme", "get_scheme", "list_schemes"]


@dataclass(frozen=True)
class BinarizeConfig:
    """How the registry converts eligible ``nn.Conv2d`` / ``nn.Linear`` layers.

    Attributes:
        name: the scheme's registered name.
        kernel_quantizer: quantizer name for weights (``"scaled_sign"``: ``alpha * sign(W)``), None keeps float.
        input_quantizer: quantizer name for inputs (``"bin_activ"``: ``sign(I)``, ``"kbit"``), None keeps float.
        input_bits: bits of the ``"kbit"`` input quantizer.
        input_scale: multiply by the XNOR input scale ``K = A * k`` (sec. 3.2).
        binary_gradient: binarize the gradient flowing into each binary layer (sec. 3.2, off by default).
        block_relu: keep the float network's ReLU in front of each binary block where its output only feeds that
            block (timm ResNet's ``act1``, Bi-Real-Net's ``act1`` / ``act2``, GoogLeNet's and AlexNet's post-conv
            ReLUs). Off: the paper's block ``BatchNorm -> BinActiv -> BinConv`` (fig. 3) with nothing between the
            previous layer and the BatchNorm but pooling; on: the block after a ReLU, which feeds the sign a
            BatchNorm of a half-zero input. Only schemes with binarized inputs look at it.
        norm_affine: the BatchNorm in front of each sign learns a scale and a shift (torch's default). The authors'
            ``alexnetxnor.lua`` has ``affine = false`` there; ``xnor_alexnet`` follows it.
        version: format version of this config, bumped when its fields change meaning.
    """

    name: str
    kernel_quantizer: str | None = None
    input_quantizer: str | None = None
    input_bits: int | None = None
    input_scale: bool = False
    binary_gradient: bool = False
    block_relu: bool = False
    norm_affine: bool = True
    version: int = 1

    @property
    def is_float(self) -> bool:
        return self.kernel_quantizer is None and self.input_quantizer is None

    @property
    def binarizes_inputs(self) -> bool:
        return self.input_quantizer is not None

    def layer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``BinaryConv2d`` / ``BinaryLinear``."""
        return {
            "kernel_quantizer": self.kernel_quantizer,
            "input_quantizer": self.input_quantizer,
            "input_bits": self.input_bits,
            "input_scale": self.input_scale,
            "binary_gradient": self.binary_gradient,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BinarizeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown BinarizeConfig field(s) {sorted(unknown)}; known fields: {sorted(known)}")
        return cls(**d)


_SCHEMES: dict[str, BinarizeConfig] = {}


def register_scheme(config: BinarizeConfig) -> BinarizeConfig:
    _SCHEMES[config.name] = config
    return config


def list_schemes() -> list[str]:
    return sorted(_SCHEMES)


def get_scheme(scheme: str | BinarizeConfig, **overrides: Any) -> BinarizeConfig:
    """A registered scheme by name (or a config as given), with fields replaced by ``overrides``."""
    if isinstance(scheme, BinarizeConfig):
        config = scheme
    elif scheme in _SCHEMES:
        config = _SCHEMES[scheme]
    else:
        raise UnknownNameError("binarization scheme", scheme, _SCHEMES, "schemes")
    return dataclasses.replace(config, **overrides) if overrides else config


# Full precision: the reference every binary model is compared with.
register_scheme(BinarizeConfig("fp"))
# Binary-Weight-Networks (sec. 3.1): W ~ alpha * sign(W), float inputs.
register_scheme(BinarizeConfig("bwn", kernel_quantizer="scaled_sign"))
# XNOR-Networks (sec. 3.2): binary weights and inputs, inputs scaled by K = A * k.
register_scheme(BinarizeConfig("xnor", kernel_quantizer="scaled_sign", input_quantizer="bin_activ", input_scale=True))
# The paper's ablation of XNOR-Networks without the input scale K (its "beta" in fig. 4b).
register_scheme(BinarizeConfig("xnor_nobeta", kernel_quantizer="scaled_sign", input_quantizer="bin_activ"))
# Binary weights with k-bit inputs (sec. 3.2, "k-bit Quantization"), without the input scale K.
register_scheme(BinarizeConfig("w1a2", kernel_quantizer="scaled_sign", input_quantizer="kbit", input_bits=2))
register_scheme(BinarizeConfig("w1a4", kernel_quantizer="scaled_sign", input_quantizer="kbit", input_bits=4))
