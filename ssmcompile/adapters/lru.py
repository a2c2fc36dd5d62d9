"""LRU ↔ LTISystem: the complex n-state system (λ, B·diag(γ), C, diag(D)) and its inverse map.

Mapping back (the paper's): ν_log = log(−log|λ|), θ_log = log(arg λ mod 2π), γ reset to
√(1−|λ|²), stored B = B_d/γ, D from ``system.D`` (unchanged by truncation) or kept.

Guards: |λ| ≥ 1 or non-finite λ raise ``UnstableSystemError``; |λ| < 1e-30 is raised to 1e-30
(same one-step memory); arg λ = 0 (a real positive mode) would give θ_log = −inf, so the phase
is clamped to ``MIN_PHASE`` — it moves λ by ≤ |λ|·1e-12, but that mode's θ_log then gets
vanishing gradients.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.lru import LRU
from ..numerics.system import LTISystem
from .base import (
    assign,
    checked_modes,
    diag_feedthrough,
    f64,
    fresh_like,
    require_diagonal,
    require_type,
)

MIN_PHASE = 1e-12


class LRUAdapter:
    kind = "lru"

    def state_dim(self, module: nn.Module) -> int:
        require_type(module, LRU, self.kind)
        return int(module.state_dim)

    def read(self, module: nn.Module) -> LTISystem:
        """A (n,) complex128, B (n, H), C (H, n) complex128, D (H, H) float64."""
        require_type(module, LRU, self.kind)
        lam = torch.exp(
            torch.complex(-torch.exp(f64(module.nu_log)), torch.exp(f64(module.theta_log)))
        )
        gamma = torch.exp(f64(module.gamma_log))
        B = torch.complex(f64(module.B_re), f64(module.B_im)) * gamma.unsqueeze(-1)
        C = torch.complex(f64(module.C_re), f64(module.C_im))
        return LTISystem(lam, B, C, torch.diag(f64(module.D)))

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        require_type(module, LRU, self.kind)
        H = module.d_model
        require_diagonal(system, (), H, self.kind)
        lam = checked_modes(system.A)
        mod = lam.abs()
        phase = torch.remainder(torch.angle(lam), 2 * math.pi).clamp_min(MIN_PHASE)
        gamma = torch.sqrt(1 - mod**2)
        B = system.B.detach().to(torch.complex128) / gamma.unsqueeze(-1)
        C = system.C.detach().to(torch.complex128)
        new = fresh_like(module, H, lam.shape[0], module.r_min, module.r_max, module.max_phase)
        values = {
            "nu_log": torch.log(-torch.log(mod)),
            "theta_log": torch.log(phase),
            "gamma_log": torch.log(gamma),
            "B_re": B.real,
            "B_im": B.imag,
            "C_re": C.real,
            "C_im": C.imag,
            "D": diag_feedthrough(system, module.D),
        }
        return assign(new, values, module)
