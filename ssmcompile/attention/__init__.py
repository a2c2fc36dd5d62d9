"""Linear attention (RetNet, simple GLA, Gated DeltaNet) and the reduction of its key dimension.

Layers carry per head a state S_t ∈ R^{d_k×d_v}; reduction shrinks d_k from calibration data
(balanced key/query Gramians), written into the layer exactly at full rank. Importing this
package registers :class:`LinearAttention` with the compiler core, so the existing analysis,
truncation and verification passes match and rewrite it, and the ``"attention-lm"`` checkpoint
builder, so a reduced :class:`LinearAttentionLM` reloads at its reduced size.
"""

from ..adapters.base import register_block
from .adapters import KeyReductionOptions, LinearAttentionAdapter, reduce_key_dim
from .checkpoint import ATTENTION_LM_BUILDER, register_attention_builder
from .config import KINDS, LinearAttentionConfig
from .delta_rule import delta_rule_chunked, delta_rule_step
from .gramians import key_gramians
from .layer import Features, LinearAttention
from .lm import AttentionLMConfig, LinearAttentionLM, with_key_dim
from .reduction import METHODS, KeyMaps, apply_key_maps, key_maps, round_rank
from .reference import linear_attention_reference
from .scalar_decay import scalar_decay_chunked, scalar_decay_step


def register_attention_adapter(options: KeyReductionOptions | None = None) -> None:
    """Register the adapter (done on import; call again to change its options)."""
    register_block(LinearAttention, LinearAttentionAdapter(options))


register_attention_adapter()
register_attention_builder()

__all__ = [
    "ATTENTION_LM_BUILDER", "KINDS", "METHODS", "AttentionLMConfig", "Features", "KeyMaps",
    "KeyReductionOptions",
    "LinearAttention", "LinearAttentionAdapter", "LinearAttentionConfig", "LinearAttentionLM",
    "apply_key_maps", "delta_rule_chunked", "delta_rule_step", "key_gramians", "key_maps",
    "linear_attention_reference", "reduce_key_dim", "register_attention_adapter",
    "register_attention_builder",
    "round_rank", "scalar_decay_chunked", "scalar_decay_step", "with_key_dim",
]
