"""S5 ↔ LTISystem: the ZOH-discretised complex n-state system (λ, B_d, C, diag(D)).

The layer outputs Re(C x) (the conjugate-pair factor 2 lives in C), so C is read as stored.

Mapping back: a reduced system's modes are re-diagonalised mixtures of the old ones, so the old
per-mode steps no longer belong to any mode. Every new mode gets the same step Δ, the geometric
mean of the original's steps; then Λ = log(λ)/Δ (principal log; Re Λ < 0 ⇔ |λ| < 1) and
B_c = B_d·Λ/(λ − 1) invert the ZOH exactly. Guards as for the LRU (``UnstableSystemError`` for
|λ| ≥ 1, |λ| raised to at least 1e-30).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.s5 import S5
from ..numerics.system import LTISystem
from . import zoh
from .base import (
    assign,
    checked_modes,
    diag_feedthrough,
    f64,
    fresh_like,
    require_diagonal,
    require_type,
)


class S5Adapter:
    kind = "s5"

    def state_dim(self, module: nn.Module) -> int:
        require_type(module, S5, self.kind)
        return int(module.state_dim)

    def read(self, module: nn.Module) -> LTISystem:
        """A (n,) complex128, B (n, H), C (H, n) complex128, D (H, H) float64."""
        require_type(module, S5, self.kind)
        lam, scale = zoh.discretise(module, torch.exp(f64(module.log_step)))
        B = scale.unsqueeze(-1) * torch.complex(f64(module.B_re), f64(module.B_im))
        C = torch.complex(f64(module.C_re), f64(module.C_im))
        return LTISystem(lam, B, C, torch.diag(f64(module.D)))

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        require_type(module, S5, self.kind)
        H = module.d_model
        require_diagonal(system, (), H, self.kind)
        lam = checked_modes(system.A)
        r = lam.shape[0]
        log_step = f64(module.log_step).mean().expand(r)
        new = fresh_like(module, H, r, module.dt_min, module.dt_max)
        values = zoh.continuous_parameters(lam, torch.exp(log_step),
                                           system.B.detach().to(torch.complex128),
                                           system.C.detach().to(torch.complex128))
        values |= {"log_step": log_step, "D": diag_feedthrough(system, module.D)}
        return assign(new, values, module)
