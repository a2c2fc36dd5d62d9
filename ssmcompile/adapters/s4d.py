"""S4D ↔ LTISystem: H single-input single-output systems, batched over channels.

read: A (H, N) complex128 (λ per channel), B (H, N, 1), C (H, 1, N), D (H, 1, 1).
rebuild: needs the same N = r for every channel (the layer stores (H, N) tensors), so a
reduction changes N uniformly. Each channel keeps its own step Δ_h; Λ = log(λ)/Δ_h and
B_c = B_d·Λ/(λ − 1) invert the ZOH exactly. Guards as for the LRU.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.s4d import S4D
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


class S4DAdapter:
    kind = "s4d"

    def state_dim(self, module: nn.Module) -> int:
        """N, the modes per channel."""
        require_type(module, S4D, self.kind)
        return int(module.state_dim)

    def read(self, module: nn.Module) -> LTISystem:
        require_type(module, S4D, self.kind)
        lam, scale = zoh.discretise(module, torch.exp(f64(module.log_step)).unsqueeze(-1))
        B = scale * torch.complex(f64(module.B_re), f64(module.B_im))
        C = torch.complex(f64(module.C_re), f64(module.C_im))
        D = f64(module.D).reshape(-1, 1, 1)
        return LTISystem(lam, B.unsqueeze(-1), C.unsqueeze(-2), D)

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        require_type(module, S4D, self.kind)
        H = module.d_model
        require_diagonal(system, (H,), 1, self.kind)
        lam = checked_modes(system.A)
        log_step = f64(module.log_step)
        new = fresh_like(module, H, lam.shape[-1], module.dt_min, module.dt_max)
        values = zoh.continuous_parameters(lam, torch.exp(log_step).unsqueeze(-1),
                                           system.B.detach().to(torch.complex128)[..., 0],
                                           system.C.detach().to(torch.complex128)[..., 0, :])
        values |= {"log_step": log_step,
                   "D": diag_feedthrough(system, module.D.reshape(-1, 1)).reshape(-1)}
        return assign(new, values, module)
