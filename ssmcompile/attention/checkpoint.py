"""The ``"attention-lm"`` checkpoint builder: :class:`LinearAttentionLM` from its config.

The spec stored in a checkpoint is ``AttentionLMConfig.to_dict()`` with ``layer_key_dims``
spelled out (``model.current_config``); a reduction event on block ``layers.{i}.attn`` sets that
layer's d_k. Importing :mod:`ssmcompile.attention` registers it; ``ssmcompile.io`` imports this
package by itself (a fixed allow-list entry) when a file names ``"attention-lm"``.

A spec comes from a file, so its sizes are bounded before anything is allocated: each size at
most ``MAX_SIZE`` (layers at most ``MAX_LAYERS``), and the model at most ``MAX_PARAMETERS``
parameters, counted on a meta-device build (no memory, no second formula for the count).
"""

from __future__ import annotations

import torch

from ..errors import CheckpointError
from ..io.builders import per_block_builder, register_builder
from .lm import AttentionLMConfig, LinearAttentionLM

__all__ = ["BUILDER_NAME", "ATTENTION_LM_BUILDER", "MAX_PARAMETERS", "tensor_sizes",
           "register_attention_builder"]

BUILDER_NAME = "attention-lm"
MAX_SIZE = 1 << 20
MAX_LAYERS = 1024  # the meta build walks every layer: keep it short for a hostile spec
MAX_PARAMETERS = 1 << 31  # 8 GiB of float32

_SIZES = ("d_model", "heads", "key_dim", "value_dim", "conv_size", "chunk_size")


def parse_spec(spec: dict) -> AttentionLMConfig:
    """``AttentionLMConfig.from_dict`` with every size bounded (CheckpointError otherwise)."""
    config = AttentionLMConfig.from_dict(spec)
    sizes = {"vocab_size": config.vocab_size, "mlp_expand": config.mlp_expand,
             **{n: getattr(config.attention, n) for n in _SIZES},
             **{f"layer_key_dims[{i}]": n for i, n in enumerate(config.layer_key_dims)}}
    for name, v in sizes.items():
        if v > MAX_SIZE:
            raise CheckpointError(f"attention-lm spec: {name} = {v} exceeds {MAX_SIZE}")
    if config.n_layers > MAX_LAYERS:
        raise CheckpointError(f"attention-lm spec: n_layers = {config.n_layers} exceeds "
                              f"{MAX_LAYERS}")
    return config


def build(config: AttentionLMConfig) -> LinearAttentionLM:
    with torch.device("meta"):
        count = sum(p.numel() for p in LinearAttentionLM(config).parameters())
    if count > MAX_PARAMETERS:
        raise CheckpointError(f"attention-lm spec: {count} parameters exceed {MAX_PARAMETERS}")
    return LinearAttentionLM(config)


def tensor_sizes(config: AttentionLMConfig) -> dict[str, int]:
    """Sizes that are each a dimension of a stored tensor (for ``ssmcompile.io``'s checks:
    none may exceed the file's largest tensor)."""
    a = config.attention
    sizes = {"vocab_size": config.vocab_size, "d_model": a.d_model,
             "mlp_expand * d_model": config.mlp_expand * a.d_model,
             "heads * value_dim": a.heads * a.value_dim}
    sizes.update({f"heads * d_k of layer {i}": a.heads * n
                  for i, n in enumerate(config.state_dims)})
    if a.conv_size:
        sizes["conv_size"] = a.conv_size
    return sizes


ATTENTION_LM_BUILDER = per_block_builder(
    parse_spec, build, "layers.{}.attn",
    canonical=lambda cfg: cfg.canonical().to_dict(),  # per-layer d_k always spelled out
    sizes=tensor_sizes,
    meta_safe=True,
)


def register_attention_builder() -> None:
    """Allow checkpoints to name ``"attention-lm"`` (done on import of the package)."""
    register_builder(BUILDER_NAME, ATTENTION_LM_BUILDER)
