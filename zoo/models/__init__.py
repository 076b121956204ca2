from . import alexnet, bireal, googlenet, resnet
from ._registry import create_model, is_model, list_models, register_model
