"""S4D (Gu et al. 2022): H independent single-input single-output diagonal systems (multi-SISO).

Channel h has its own N complex modes Λ_h (conjugate-pair symmetric: one mode per pair, the
factor 2 folded into C so the output is ``Re``), its own step Δ_h, and ZOH discretisation::

    λ_h = exp(Λ_h Δ_h),  x_{h,k} = λ_h ⊙ x_{h,k-1} + ((λ_h − 1)/Λ_h ⊙ B_h) u_{h,k}
    y_{h,k} = Re(C_h · x_{h,k}) + D_h u_{h,k}

State-dimension semantics: ``state_dim`` is N, the number of modes **per channel** (the total
state is H·N complex numbers). Reduction changes N for all channels uniformly, because the
parameters are stored as (H, N) tensors; the adapter reads a system batched over channels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..ops import diagonal_scan_real
from ._real import Pair, cmul, factory, zoh


class S4D(nn.Module):
    """Multi-SISO diagonal SSM: ``d_model`` channels, ``state_dim`` = N modes per channel.

    Parameters (all real): ``lam_log_neg_re``, ``lam_im``, ``B_re``, ``B_im``, ``C_re``,
    ``C_im`` (H, N); ``log_step`` (H,); ``D`` (H,).

    Init (S4D-Lin): Λ_{h,j} = −1/2 + iπj; Δ_h log-uniform in [dt_min, dt_max]; B = 1;
    C ~ N(0, 1/2) per part; D ~ N(0, 1).
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
        H, N = d_model, state_dim
        self.d_model = H
        self.dt_min, self.dt_max = dt_min, dt_max
        self.lam_log_neg_re = nn.Parameter(torch.full((H, N), math.log(0.5), **kw))
        self.lam_im = nn.Parameter(math.pi * torch.arange(N, **kw).expand(H, N).clone())
        u = torch.rand(H, **kw)
        self.log_step = nn.Parameter(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))
        self.B_re = nn.Parameter(torch.ones(H, N, **kw))
        self.B_im = nn.Parameter(torch.zeros(H, N, **kw))
        self.C_re = nn.Parameter(torch.randn(H, N, **kw) * math.sqrt(0.5))
        self.C_im = nn.Parameter(torch.randn(H, N, **kw) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(H, **kw))

    @property
    def state_dim(self) -> int:
        """Modes per channel N (the same for every channel)."""
        return int(self.lam_im.shape[-1])

    @property
    def total_state_dim(self) -> int:
        """Complex modes over all channels, H·N."""
        return self.d_model * self.state_dim

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, state_dim={self.state_dim} (per channel)"

    def discretize(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """ZOH per channel: ``(λ_re, λ_im, B_d re, B_d im)``, each (H, N)."""
        ld_re, ld_im, f_re, f_im = zoh(
            -torch.exp(self.lam_log_neg_re), self.lam_im, torch.exp(self.log_step).unsqueeze(-1)
        )
        b_re, b_im = cmul(f_re, f_im, self.B_re, self.B_im)
        return ld_re, ld_im, b_re, b_im

    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, L, H) → y: (batch, L, H)."""
        lam_re, lam_im, b_re, b_im = self.discretize()
        batch, length, H = u.shape
        # All H·N modes are independent, so one flat diagonal scan covers every channel.
        uu = u.unsqueeze(-1)
        x_re, x_im = diagonal_scan_real(
            lam_re.reshape(-1),
            lam_im.reshape(-1),
            (uu * b_re).reshape(batch, length, -1),
            (uu * b_im).reshape(batch, length, -1),
        )
        x_re, x_im = x_re.reshape(batch, length, H, -1), x_im.reshape(batch, length, H, -1)
        return (x_re * self.C_re - x_im * self.C_im).sum(-1) + u * self.D

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Zero state ``(x_re, x_im)``, each (batch, H, N)."""
        z = self.lam_im.new_zeros(batch_size, self.d_model, self.state_dim)
        return z, z.clone()

    def step(self, u_k: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Pair]:
        """One time step. u_k: (batch, H) → (y_k (batch, H), state)."""
        lam_re, lam_im, b_re, b_im = self.discretize()
        x_re, x_im = cmul(lam_re, lam_im, *state)
        uu = u_k.unsqueeze(-1)
        x_re, x_im = x_re + uu * b_re, x_im + uu * b_im
        y = (x_re * self.C_re - x_im * self.C_im).sum(-1) + u_k * self.D
        return y, (x_re, x_im)
