"""S5 (Smith et al. 2023): one continuous-time diagonal MIMO system, discretised by zero-order hold.

    Λ = −exp(Λ_log_neg_re) + i·Λ_im  (n,),  Δ = exp(log_step)  (n,),  λ = exp(ΛΔ)
    x_k = λ ⊙ x_{k-1} + ((λ − 1)/Λ ⊙ B_c) u_k,    y_k = Re(C x_k) + D ⊙ u_k

Conjugate-pair symmetry: like the S5 paper we store only n modes, one per conjugate pair, but we
fold the paper's factor 2 into C, so the output is ``Re(C x)`` — the same convention as the LRU.
The complex n-state system the adapter reads is therefore (λ, B_d, C, D) with C as stored.

Re Λ < 0 is enforced by the parameterisation, so every discrete mode has |λ| < 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..ops import diagonal_ssm
from ._real import Pair, cmul, factory, zoh


class S5(nn.Module):
    """Continuous-time diagonal MIMO SSM with ``state_dim`` complex modes and width ``d_model``.

    Parameters (all real): ``lam_log_neg_re``, ``lam_im``, ``log_step`` (n,); ``B_re``, ``B_im``
    (n, H) — the continuous-time B_c; ``C_re``, ``C_im`` (H, n); ``D`` (H,).

    Init: S4D-Lin eigenvalues Λ_j = −1/2 + iπj; per-mode Δ log-uniform in [dt_min, dt_max];
    B_c ~ N(0, 1/(2H)) per part; C ~ N(0, 1/n) per part; D ~ N(0, 1).
    """

    def __init__(
        self,
        d_model: int,
        state_dim: int,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = factory(device, dtype)
        H, n = d_model, state_dim
        self.d_model = H
        self.dt_min, self.dt_max = dt_min, dt_max
        self.lam_log_neg_re = nn.Parameter(torch.full((n,), math.log(0.5), **kw))
        self.lam_im = nn.Parameter(math.pi * torch.arange(n, **kw))
        u = torch.rand(n, **kw)
        self.log_step = nn.Parameter(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))
        self.B_re = nn.Parameter(torch.randn(n, H, **kw) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(n, H, **kw) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, n, **kw) / math.sqrt(n))
        self.C_im = nn.Parameter(torch.randn(H, n, **kw) / math.sqrt(n))
        self.D = nn.Parameter(torch.randn(H, **kw))

    @property
    def state_dim(self) -> int:
        """Number of complex modes n (one per conjugate pair)."""
        return int(self.lam_im.shape[0])

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, state_dim={self.state_dim}"

    def discretize(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """ZOH: ``(λ_re, λ_im)`` (n,) and ``(B_d re, B_d im)`` (n, H)."""
        ld_re, ld_im, f_re, f_im = zoh(
            -torch.exp(self.lam_log_neg_re), self.lam_im, torch.exp(self.log_step)
        )
        b_re, b_im = cmul(f_re.unsqueeze(-1), f_im.unsqueeze(-1), self.B_re, self.B_im)
        return ld_re, ld_im, b_re, b_im

    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, L, H) → y: (batch, L, H)."""
        lam_re, lam_im, b_re, b_im = self.discretize()
        return diagonal_ssm(lam_re, lam_im, b_re, b_im, self.C_re, self.C_im, u) + u * self.D

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Zero state ``(x_re, x_im)``, each (batch, n)."""
        z = self.lam_im.new_zeros(batch_size, self.state_dim)
        return z, z.clone()

    def step(self, u_k: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Pair]:
        """One time step. u_k: (batch, H) → (y_k (batch, H), state)."""
        lam_re, lam_im, b_re, b_im = self.discretize()
        x_re, x_im = cmul(lam_re, lam_im, *state)
        x_re, x_im = x_re + u_k @ b_re.T, x_im + u_k @ b_im.T
        y = x_re @ self.C_re.T - x_im @ self.C_im.T + u_k * self.D
        return y, (x_re, x_im)
