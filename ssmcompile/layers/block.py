"""The paper's residual block: norm → SSM → GELU → dropout → GLU → dropout → residual."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class SSMBlock(nn.Module):
    """Residual block around any SSM layer with the layer protocol
    (``forward``, ``step``, ``initial_state``, ``state_dim``).

    ``norm="batch"``: BatchNorm over H without affine (the paper's); ``"layer"``: LayerNorm.
    ``step`` normalises with the BatchNorm running statistics — what eval-mode ``forward`` uses —
    so step and sequence outputs agree in eval mode only (train-mode batch statistics span the
    whole sequence, which a step cannot see).
    """

    def __init__(self, ssm: nn.Module, d_model: int, dropout: float = 0.0, norm: str = "batch"):
        super().__init__()
        self.norm: nn.Module = (
            nn.BatchNorm1d(d_model, affine=False) if norm == "batch" else nn.LayerNorm(d_model)
        )
        self.ssm = ssm
        self.drop = nn.Dropout(dropout)
        self.glu_w1 = nn.Linear(d_model, d_model)
        self.glu_w2 = nn.Linear(d_model, d_model)

    @property
    def state_dim(self) -> int:
        return int(self.ssm.state_dim)

    def _norm_seq(self, x: Tensor) -> Tensor:
        if isinstance(self.norm, nn.BatchNorm1d):
            # Statistics over (batch, time) per channel: the same as BatchNorm1d on (B, H, L),
            # without strided transposes.
            return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        return self.norm(x)

    def _norm_step(self, x_k: Tensor) -> Tensor:
        n = self.norm
        if isinstance(n, nn.BatchNorm1d):
            return F.batch_norm(x_k, n.running_mean, n.running_var, None, None, False, 0.0, n.eps)
        return n(x_k)

    def _tail(self, z: Tensor) -> Tensor:
        z = self.drop(F.gelu(z))
        z = self.glu_w1(z) * self.glu_w2(z).sigmoid()
        return self.drop(z)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, L, H) → (batch, L, H)."""
        return x + self._tail(self.ssm(self._norm_seq(x)))

    def initial_state(self, batch_size: int) -> tuple[Any, ...]:
        return tuple(self.ssm.initial_state(batch_size))

    def step(self, x_k: Tensor, state: tuple[Any, ...]) -> tuple[Tensor, tuple[Any, ...]]:
        """x_k: (batch, H) → (y_k (batch, H), state)."""
        z, state = self.ssm.step(self._norm_step(x_k), state)
        return x_k + self._tail(z), tuple(state)
