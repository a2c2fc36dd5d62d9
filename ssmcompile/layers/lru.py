"""The Linear Recurrent Unit (Orvieto et al. 2023) exactly as CompreSSM trains it.

Recurrence (the current input is already in the state at the step it arrives)::

    x_k = λ ⊙ x_{k-1} + B u_k,    y_k = Re(C x_k) + D ⊙ u_k,    x_{-1} = 0
    λ = exp(−exp(ν_log) + i·exp(θ_log)),    B = (B_re + i B_im)·diag(γ),  γ = exp(γ_log)

Everything is computed in real arithmetic (see ``_real``); the complex system is only ever
materialised by the adapter (``ssmcompile.adapters.lru``) for analysis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..ops import diagonal_ssm
from ._real import Pair, cmul, factory


class LRU(nn.Module):
    """Diagonal complex LRU with ``state_dim`` complex modes, input/output width ``d_model``.

    Parameters (all real): ``nu_log``, ``theta_log``, ``gamma_log`` (n,); ``B_re``, ``B_im``
    (n, H); ``C_re``, ``C_im`` (H, n); ``D`` (H,).

    Init (the paper's): |λ| uniform on the ring area between ``r_min`` and ``r_max``, phase
    uniform in [0, ``max_phase``); γ = √(1−|λ|²); B ~ N(0, 1/(2H)) per part; C ~ N(0, 1/n) per
    part; D ~ N(0, 1).
    """

    def __init__(
        self,
        d_model: int,
        state_dim: int,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = factory(device, dtype)
        H, n = d_model, state_dim
        self.d_model = H
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        u1, u2 = torch.rand(n, **kw), torch.rand(n, **kw)
        # Uniform on the ring *area*: |λ|² uniform in [r_min², r_max²].
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        # A zero phase would make θ_log = −inf; the clamp moves it by at most 1e-7·max_phase.
        theta = max_phase * u2.clamp_min(1e-7)
        mod = torch.exp(-nu)
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(theta))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - mod**2)))
        self.B_re = nn.Parameter(torch.randn(n, H, **kw) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(n, H, **kw) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, n, **kw) / math.sqrt(n))
        self.C_im = nn.Parameter(torch.randn(H, n, **kw) / math.sqrt(n))
        self.D = nn.Parameter(torch.randn(H, **kw))

    @property
    def state_dim(self) -> int:
        """Number of complex modes n."""
        return int(self.nu_log.shape[0])

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, state_dim={self.state_dim}"

    def eigenvalues(self) -> tuple[Tensor, Tensor]:
        """λ as ``(re, im)``, each (n,)."""
        mod = torch.exp(-torch.exp(self.nu_log))
        phase = torch.exp(self.theta_log)
        return mod * torch.cos(phase), mod * torch.sin(phase)

    def input_matrix(self) -> tuple[Tensor, Tensor]:
        """B = (B_re + i B_im)·diag(γ) as ``(re, im)``, each (n, H)."""
        gamma = torch.exp(self.gamma_log).unsqueeze(-1)
        return self.B_re * gamma, self.B_im * gamma

    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, L, H) → y: (batch, L, H)."""
        lam_re, lam_im = self.eigenvalues()
        b_re, b_im = self.input_matrix()
        return diagonal_ssm(lam_re, lam_im, b_re, b_im, self.C_re, self.C_im, u) + u * self.D

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Zero state ``(x_re, x_im)``, each (batch, n)."""
        z = self.nu_log.new_zeros(batch_size, self.state_dim)
        return z, z.clone()

    def step(self, u_k: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Pair]:
        """One time step. u_k: (batch, H), state as ``initial_state`` → (y_k (batch, H), state)."""
        lam_re, lam_im = self.eigenvalues()
        b_re, b_im = self.input_matrix()
        x_re, x_im = cmul(lam_re, lam_im, *state)
        x_re, x_im = x_re + u_k @ b_re.T, x_im + u_k @ b_im.T
        y = x_re @ self.C_re.T - x_im @ self.C_im.T + u_k * self.D
        return y, (x_re, x_im)
