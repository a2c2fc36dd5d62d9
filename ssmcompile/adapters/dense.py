"""DenseLTI ↔ LTISystem: a direct copy, A (n, n), B (n, H), C (H, n) float64, D (H, H).

rebuild accepts a dense system, or a diagonal one with real eigenvalues (embedded as diag(A));
complex systems must be real up to 1e-8 relative, since the layer is real (ShapeError else).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ShapeError
from ..layers.dense import DenseLTI
from ..numerics.system import LTISystem
from .base import assign, diag_feedthrough, f64, fresh_like, require_type


def _real(t: Tensor, name: str) -> Tensor:
    t = t.detach()
    if t.is_complex():
        scale = 1.0 + float(t.abs().max()) if t.numel() else 1.0
        if t.numel() and float(t.imag.abs().max()) > 1e-8 * scale:
            raise ShapeError(f"DenseLTI is real; {name} has an imaginary part")
        t = t.real
    return t.to(torch.float64)


class DenseAdapter:
    kind = "dense"

    def state_dim(self, module: nn.Module) -> int:
        require_type(module, DenseLTI, self.kind)
        return int(module.state_dim)

    def read(self, module: nn.Module) -> LTISystem:
        require_type(module, DenseLTI, self.kind)
        return LTISystem(f64(module.A), f64(module.B), f64(module.C), torch.diag(f64(module.D)))

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        require_type(module, DenseLTI, self.kind)
        H = module.d_model
        if system.batch_shape != () or system.n_inputs != H or system.n_outputs != H:
            shape = tuple(system.B.shape)
            raise ShapeError(f"DenseLTI needs an unbatched system with {H} inputs; got B{shape}")
        A = _real(system.A, "A")
        if system.is_diagonal:
            A = torch.diag(A)
        n = A.shape[0]
        new = fresh_like(module, H, n, module.r_min, module.r_max)
        values = {
            "A": A,
            "B": _real(system.B, "B"),
            "C": _real(system.C, "C"),
            "D": diag_feedthrough(system, module.D),
        }
        return assign(new, values, module)
