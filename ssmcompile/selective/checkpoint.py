"""The ``"selective-lm"`` checkpoint builder: :class:`SelectiveLM` rebuilt from its LMConfig.

The spec stored in a checkpoint is ``LMConfig.to_dict()`` (canonical: ``layer_d_states``
spelled out); a reduction event on block ``layers.{i}.mixer`` sets that layer's state
dimension. Importing :mod:`ssmcompile.selective` registers it; ``ssmcompile.io`` imports this
package by itself (a fixed allow-list entry) when a file names ``"selective-lm"``.
"""

from __future__ import annotations

from ..io.builders import per_block_builder, register_builder
from .lm import LMConfig, SelectiveLM

BUILDER_NAME = "selective-lm"

SELECTIVE_LM_BUILDER = per_block_builder(
    LMConfig.from_dict, SelectiveLM, "layers.{}.mixer",
    canonical=lambda cfg: cfg.canonical().to_dict(),  # per-layer sizes always spelled out
)


def register_selective_builder() -> None:
    """Allow checkpoints to name ``"selective-lm"`` (done on import of the package)."""
    register_builder(BUILDER_NAME, SELECTIVE_LM_BUILDER)


__all__ = ["BUILDER_NAME", "SELECTIVE_LM_BUILDER", "register_selective_builder"]
