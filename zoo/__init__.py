"""zoo: binary neural networks (XNOR-Net, Rastegari et al. 2016, arXiv:1603.05279) on timm, Lightning and the Hub."""

from ._unknown_name import UnknownNameError
from .convert import binarize_, full_precision_layer_names
from .hub import BinaryModel, CheckpointError, from_pretrained, pack_model
from .layers import BinaryConv2d, BinaryConvBlock, BinaryLinear, BwnConv2d, XnorConv2d
from .models import create_model, is_model, list_models, register_model
from .packing import pack, unpack
from .quantizers import BinActiv, BinaryGradient, KBit, ScaledSign, SteSign, get_quantizer, list_quantizers
from .schemes import BinarizeConfig, get_scheme, list_schemes, register_scheme

__version__ = "0.1.0"
