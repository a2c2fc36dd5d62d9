"""The ``"selective-lm"`` checkpoint builder: :class:`SelectiveLM` rebuilt from its LMConfig.

The spec stored in a checkpoint is ``LMConfig.to_dict()`` (canonical: ``layer_d_states``
spelled out); a reduction event on block ``layers.{i}.mixer`` sets that layer's state
dimension. Importing :mod:`ssmcompile.selective` registers it; ``ssmcompile.io`` imports this
package by itself (a fixed allow-list entry) when a file names ``"selective-lm"``.

A spec comes from a file: ``n_layers`` is capped before anything expands it per layer, and
``sizes`` names every size that is a tensor dimension, for the checks of ``ssmcompile.io``.
"""

from __future__ import annotations

from ..errors import CheckpointError
from ..io.builders import per_block_builder, register_builder
from ..io.limits import MAX_BLOCKS
from .lm import LMConfig, SelectiveLM

BUILDER_NAME = "selective-lm"


def parse_spec(spec: dict) -> LMConfig:
    """``LMConfig.from_dict`` with ``n_layers`` at most ``MAX_BLOCKS``."""
    config = LMConfig.from_dict(spec)
    if config.n_layers > MAX_BLOCKS:
        raise CheckpointError(f"selective-lm spec: n_layers = {config.n_layers} exceeds "
                              f"{MAX_BLOCKS}")
    return config


def tensor_sizes(c: LMConfig) -> dict[str, int]:
    """Sizes that are each a dimension of a stored tensor."""
    sizes = {"vocab_size": c.vocab_size, "d_model": c.d_model, "d_conv": c.d_conv,
             "expand * d_model": c.expand * c.d_model}
    sizes.update({f"d_state of layer {i}": n for i, n in enumerate(c.state_dims)})
    if c.structure == "mamba2":
        sizes.update(head_dim=c.head_dim, n_groups=c.n_groups)
    return sizes


SELECTIVE_LM_BUILDER = per_block_builder(
    parse_spec, SelectiveLM, "layers.{}.mixer",
    canonical=lambda cfg: cfg.canonical().to_dict(),  # per-layer sizes always spelled out
    sizes=tensor_sizes,
    meta_safe=True,
)


def register_selective_builder() -> None:
    """Allow checkpoints to name ``"selective-lm"`` (done on import of the package)."""
    register_builder(BUILDER_NAME, SELECTIVE_LM_BUILDER)


__all__ = ["BUILDER_NAME", "SELECTIVE_LM_BUILDER", "parse_spec", "tensor_sizes",
           "register_selective_builder"]
