"""A small character-level language model of linear-attention layers (for the benchmark).

embedding → ``n_layers`` × (x + attn(RMSNorm x); x + MLP(RMSNorm x)) → RMSNorm → linear head.
The mixers live at ``layers.{i}.attn`` so a reduction swaps exactly them; ``step`` runs one
token through every layer's recurrent step (state: one (conv window, S) pair per layer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor, nn

from ..errors import ShapeError
from .config import LinearAttentionConfig
from .layer import LinearAttention, State

__all__ = ["AttentionLMConfig", "LinearAttentionLM", "with_key_dim"]


@dataclass(frozen=True)
class AttentionLMConfig:
    """``attention`` sizes every layer (its ``d_model`` is overridden by this one's);
    ``mlp_expand``: hidden width of the GELU MLP as a multiple of d_model."""

    vocab_size: int
    attention: LinearAttentionConfig
    n_layers: int = 2
    mlp_expand: int = 2


class _Layer(nn.Module):
    def __init__(self, config: LinearAttentionConfig, mlp_expand: int) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.RMSNorm(d)
        self.attn = LinearAttention(config)
        self.norm2 = nn.RMSNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_expand * d), nn.GELU(),
                                 nn.Linear(mlp_expand * d, d))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def step(self, x_k: Tensor, state: State) -> tuple[Tensor, State]:
        y_k, state = self.attn.step(self.norm1(x_k), state)
        x_k = x_k + y_k
        return x_k + self.mlp(self.norm2(x_k)), state


class LinearAttentionLM(nn.Module):
    """Shapes: ids (batch, L) int64 → logits (batch, L, vocab)."""

    def __init__(self, config: AttentionLMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.attention.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        self.layers = nn.ModuleList(_Layer(config.attention, config.mlp_expand)
                                    for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, config.vocab_size, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))

    @property
    def key_dims(self) -> tuple[int, ...]:
        return tuple(layer.attn.state_dim for layer in self.layers)

    def initial_state(self, batch_size: int) -> tuple[State, ...]:
        return tuple(layer.attn.initial_state(batch_size) for layer in self.layers)

    def step(self, ids_k: Tensor, state: tuple[State, ...]) -> tuple[Tensor, tuple[State, ...]]:
        """ids_k (batch,) → (logits_k (batch, vocab), next state)."""
        if len(state) != len(self.layers):
            raise ShapeError(f"state has {len(state)} groups for {len(self.layers)} layers")
        x, out = self.embed(ids_k), []
        for layer, s in zip(self.layers, state, strict=True):
            x, s = layer.step(x, s)
            out.append(s)
        return self.head(self.norm(x)), tuple(out)

    def state_floats_per_sequence(self) -> int:
        """Recurrent-state floats one sequence carries (S and conv windows, all layers)."""
        return sum(t[0].numel() for s in self.initial_state(1) for t in s)


def with_key_dim(config: AttentionLMConfig, key_dim: int) -> AttentionLMConfig:
    """The same LM with every layer at ``key_dim`` (a from-scratch model of the reduced size)."""
    return replace(config, attention=replace(config.attention, key_dim=key_dim, scale=None))
