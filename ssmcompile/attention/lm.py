"""A small character-level language model of linear-attention layers (for the benchmark).

embedding → ``n_layers`` × (x + attn(RMSNorm x); x + MLP(RMSNorm x)) → RMSNorm → linear head.
The mixers live at ``layers.{i}.attn`` so a reduction swaps exactly them; ``step`` runs one
token through every layer's recurrent step (state: one (conv window, S) pair per layer).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any

from torch import Tensor, nn

from ..errors import ShapeError
from ..layers.spec import SpecError
from .config import LinearAttentionConfig
from .layer import LinearAttention, State

__all__ = ["AttentionLMConfig", "LinearAttentionLM", "with_key_dim"]


@dataclass(frozen=True)
class AttentionLMConfig:
    """``attention`` sizes every layer (its ``d_model`` is the model width);
    ``mlp_expand``: hidden width of the GELU MLP as a multiple of d_model.
    ``layer_key_dims``: per-layer d_k (empty: every layer has ``attention.key_dim``), so a
    model whose layers were reduced to different sizes can be described and rebuilt; the
    query scale stays ``attention``'s (resolved once, as a reduced layer keeps it)."""

    vocab_size: int
    attention: LinearAttentionConfig
    n_layers: int = 2
    mlp_expand: int = 2
    layer_key_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layers", "mlp_expand"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(f"AttentionLMConfig.{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.attention, LinearAttentionConfig):
            raise SpecError("AttentionLMConfig.attention must be a LinearAttentionConfig")
        dims = self.layer_key_dims
        if dims and len(dims) != self.n_layers:
            raise SpecError(f"layer_key_dims has {len(dims)} entries for {self.n_layers} layers")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in dims):
            raise SpecError(f"layer_key_dims must be ints >= 1, got {list(dims)}")

    @property
    def state_dims(self) -> tuple[int, ...]:
        """d_k of each layer."""
        return self.layer_key_dims or (self.attention.key_dim,) * self.n_layers

    def layer_config(self, layer: int) -> LinearAttentionConfig:
        return replace(self.attention, key_dim=self.state_dims[layer])  # scale kept

    def with_state_dims(self, dims: tuple[int, ...]) -> AttentionLMConfig:
        return replace(self, layer_key_dims=tuple(dims))

    def canonical(self) -> AttentionLMConfig:
        """Per-layer d_k spelled out (equal architectures compare equal)."""
        return self.with_state_dims(self.state_dims)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict that ``from_dict`` accepts."""
        d = asdict(self)
        d["layer_key_dims"] = list(self.layer_key_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttentionLMConfig:
        """Inverse of ``to_dict``; SpecError on unknown keys, missing or badly typed values."""
        d = dict(_checked_keys(cls, d))
        d["attention"] = LinearAttentionConfig(**_checked_keys(
            LinearAttentionConfig, d.get("attention"), _ATTENTION_TYPES))
        dims = d.get("layer_key_dims", ())
        if not isinstance(dims, (list, tuple)):
            raise SpecError(f"layer_key_dims must be a list of ints, got {dims!r}")
        d["layer_key_dims"] = tuple(dims)
        return cls(**d)


def _checked_keys(cls: type, d: Any, types: dict[str, Any] | None = None) -> dict[str, Any]:
    """``d`` when it is a dict holding every required field of ``cls`` and no other key, and
    each field named in ``types`` passes its check (``__post_init__`` checks the sizes)."""
    if not isinstance(d, dict):
        raise SpecError(f"{cls.__name__} spec must be a dict, got {type(d).__name__}")
    fields_ = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(fields_))
    missing = sorted(n for n, f in fields_.items() if n not in d
                     and f.default is MISSING)
    if unknown or missing:
        raise SpecError(f"{cls.__name__} spec: unknown keys {unknown}, missing keys {missing}")
    for name, ok in (types or {}).items():
        if name in d and not ok(d[name]):
            raise SpecError(f"{cls.__name__}.{name} has a bad value {d[name]!r}")
    return d


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# JSON types of the attention fields that are not sizes (a str where a bool belongs would
# otherwise pass: the layer only tests truthiness).
_ATTENTION_TYPES = {
    "kind": lambda v: isinstance(v, str),
    "qk_norm": lambda v: v is None or isinstance(v, bool),
    "output_gate": lambda v: isinstance(v, bool),
    "scale": lambda v: v is None or _finite(v),
    "gate_normalizer": _finite,
}


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

    # Names of each layer's two state tensors in an exported step graph (``export.step``):
    # ``state_{i}_conv`` (the conv window) and ``state_{i}_kv`` (S = Σ decay·k vᵀ).
    step_state_names = ("conv", "kv")

    def __init__(self, config: AttentionLMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.attention.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        self.layers = nn.ModuleList(_Layer(config.layer_config(i), config.mlp_expand)
                                    for i in range(config.n_layers))
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

    @property
    def current_config(self) -> AttentionLMConfig:
        """The config of this model as it is now: per-layer d_k read from the mixers (a
        reduction swaps them and leaves ``config`` as built). What a checkpoint stores."""
        return self.config.with_state_dims(self.key_dims)

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
