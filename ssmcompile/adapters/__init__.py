"""Adapters between SSM layers and ``LTISystem``; the four built-in layers are pre-registered."""

from ..layers import LRU, S4D, S5, DenseLTI
from ..thirdparty import register_bundled
from .base import BlockAdapter, adapter_for, register_block, register_lazy_block
from .dense import DenseAdapter
from .lru import LRUAdapter
from .s4d import S4DAdapter
from .s5 import S5Adapter

register_block(LRU, LRUAdapter())
register_block(S5, S5Adapter())
register_block(S4D, S4DAdapter())
register_block(DenseLTI, DenseAdapter())
register_bundled()  # third-party layers, resolved lazily by class name

__all__ = [
    "BlockAdapter",
    "adapter_for",
    "register_block",
    "register_lazy_block",
    "LRUAdapter",
    "S5Adapter",
    "S4DAdapter",
    "DenseAdapter",
]
