"""A dense real LTI layer: the general (non-diagonal) state-space block.

x_k = A x_{k-1} + B u_k,    y_k = C x_k + D ⊙ u_k,    x_{-1} = 0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..ops import dense_scan
from ._real import factory


class DenseLTI(nn.Module):
    """Real dense SSM with ``state_dim`` real states and width ``d_model``.

    Parameters: ``A`` (n, n), ``B`` (n, H), ``C`` (H, n), ``D`` (H,).

    Init: A = Q·diag(s) with Q a random orthogonal matrix and s uniform in [r_min, r_max], so
    ‖A‖₂ ≤ r_max < 1 and the spectral radius is below 1; B ~ N(0, 1/H); C ~ N(0, 1/n);
    D ~ N(0, 1). Stability is not enforced during training (A is a free matrix).
    """

    def __init__(
        self,
        d_model: int,
        state_dim: int,
        r_min: float = 0.9,
        r_max: float = 0.999,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = factory(device, dtype)
        H, n = d_model, state_dim
        self.d_model = H
        self.r_min, self.r_max = r_min, r_max
        g = torch.randn(n, n, **kw)
        q = torch.linalg.qr(g)[0]
        s = r_min + (r_max - r_min) * torch.rand(n, **kw)
        self.A = nn.Parameter(q * s)
        self.B = nn.Parameter(torch.randn(n, H, **kw) / math.sqrt(H))
        self.C = nn.Parameter(torch.randn(H, n, **kw) / math.sqrt(n))
        self.D = nn.Parameter(torch.randn(H, **kw))

    @property
    def state_dim(self) -> int:
        """Number of real states n."""
        return int(self.A.shape[0])

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, state_dim={self.state_dim}"

    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, L, H) → y: (batch, L, H)."""
        x = dense_scan(self.A, u @ self.B.T)
        return x @ self.C.T + u * self.D

    def initial_state(self, batch_size: int) -> tuple[Tensor]:
        """Zero state ``(x,)`` with x (batch, n)."""
        return (self.A.new_zeros(batch_size, self.state_dim),)

    def step(self, u_k: Tensor, state: tuple[Tensor]) -> tuple[Tensor, tuple[Tensor]]:
        """One time step. u_k: (batch, H) → (y_k (batch, H), state)."""
        x = state[0] @ self.A.T + u_k @ self.B.T
        return x @ self.C.T + u_k * self.D, (x,)
