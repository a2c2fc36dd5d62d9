"""Options of a linear-attention layer (one frozen dataclass, validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass

from ..layers.spec import SpecError

__all__ = ["KINDS", "LinearAttentionConfig"]

# "retnet": fixed per-head scalar decay γ_h; "gla": data-dependent scalar decay per head (simple
# GLA); "gated_delta": Gated DeltaNet's α_t (I − β_t k_t k_tᵀ) transition.
KINDS = ("retnet", "gla", "gated_delta")


@dataclass(frozen=True)
class LinearAttentionConfig:
    """Sizes and structure of :class:`~ssmcompile.attention.layer.LinearAttention`.

    - ``heads`` × ``key_dim`` (d_k, what reduction shrinks) and ``value_dim`` (d_v) per head.
    - ``conv_size``: taps of the short causal depthwise convolution (then SiLU) on q, k and v,
      as in flash-linear-attention; 0 disables it (and the SiLU).
    - ``qk_norm``: L2-normalise q and k per head; ``None`` means on for ``gated_delta`` (its
      transition is a contraction only for ‖k‖ ≤ 1) and off otherwise.
    - ``output_gate``: per-head RMSNorm of the read-out times SiLU(W_g x), as fla's layers do.
    - ``scale``: the query scale; ``None`` resolves to ``key_dim ** -0.5`` here, once, so that a
      reduced layer (``dataclasses.replace(config, key_dim=r)``) keeps the original scale and
      computes the same function at full rank.
    - ``gate_normalizer``: GLA's log-decay is logsigmoid(W x) / this (fla uses 16).
    - ``chunk_size``: chunk length of the parallel (training) form.
    """

    d_model: int
    heads: int = 4
    key_dim: int = 64
    value_dim: int = 16
    kind: str = "gla"
    conv_size: int = 4
    qk_norm: bool | None = None
    output_gate: bool = True
    scale: float | None = None
    gate_normalizer: float = 16.0
    chunk_size: int = 64

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("d_model", "heads", "key_dim", "value_dim", "chunk_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(f"LinearAttentionConfig.{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.conv_size, int) or self.conv_size < 0 or self.conv_size == 1:
            raise SpecError(f"conv_size must be 0 (off) or >= 2, got {self.conv_size!r}")
        if self.qk_norm is None:
            object.__setattr__(self, "qk_norm", self.kind == "gated_delta")
        if self.scale is None:
            object.__setattr__(self, "scale", float(self.key_dim) ** -0.5)
        if not self.scale > 0 or not self.gate_normalizer > 0:
            raise SpecError("scale and gate_normalizer must be positive")

    @property
    def scalar_decay(self) -> bool:
        """True when the state transition is a scalar per head (it commutes with any T)."""
        return self.kind != "gated_delta"

    @property
    def reduction_method(self) -> str:
        """How a key-dimension reduction can be written into this layer exactly at full rank.

        - ``"fold"``: any invertible T folds into W_k (Tinv·W_k) and W_q (Tᵀ·W_q): nothing acts
          per key channel between the projections and the state, and a scalar decay commutes.
        - ``"orthogonal"``: only an orthogonal T is exact: it preserves ‖k‖ and ‖q‖ (the L2
          norms) and commutes with the delta rule's I − β k kᵀ.
        - ``"select"``: a depthwise convolution acts per key channel; only keeping a subset of
          channels (axis-aligned) leaves the kept channels' computation unchanged.
        """
        if self.conv_size:
            return "select"
        if self.scalar_decay and not self.qk_norm:
            return "fold"
        return "orthogonal"
