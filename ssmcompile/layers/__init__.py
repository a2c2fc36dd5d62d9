"""SSM layers (real arithmetic), the paper's residual block and deep model, and ModelSpec."""

from .block import SSMBlock
from .dense import DenseLTI
from .lru import LRU
from .model import SSMModel, build_model, make_layer
from .s4d import S4D
from .s5 import S5
from .spec import LAYER_KINDS, ModelSpec, SpecError

__all__ = [
    "LRU",
    "S5",
    "S4D",
    "DenseLTI",
    "SSMBlock",
    "SSMModel",
    "ModelSpec",
    "SpecError",
    "LAYER_KINDS",
    "build_model",
    "make_layer",
]
