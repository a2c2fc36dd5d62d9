"""lru-pytorch's ``LRU_pytorch.LRU.LRU`` ↔ LTISystem, in the package's own parameterisation.

The layer (lru-pytorch 0.1.3) stores ``nu_log``, ``theta_log``, ``gamma_log`` (n,) real,
``B`` (n, in) and ``C`` (out, n) complex, ``D`` (out, in) real, and runs

    x_k = λ ⊙ x_{k-1} + γ ⊙ (B u_k),    y_k = Re(C x_k) + D u_k,    λ = exp(−e^ν + i·e^θ),

from ``self.state`` (zeros after every call) — the paper's LRU with a full feedthrough matrix
and independent input/output widths. ``read`` gives (λ, diag(γ)·B, C, D) in complex128/float64.

``rebuild`` maps back the paper's way: ν_log = log(−log|λ|), θ_log = log(arg λ mod 2π), γ reset
to √(1−|λ|²), stored B = B_d/γ, D from ``system.D`` (truncation keeps it) or the layer's own.
The new layer is constructed with ``state_features = r`` inside ``torch.random.fork_rng`` (its
constructor draws its random init from the global generator; a rebuild mid-training must not
shift the user's random stream), then every parameter is replaced by one with the original's
dtype, device and ``requires_grad``; its ``state`` attribute is reset to r complex zeros.
Guards as for our LRU: |λ| ≥ 1 or non-finite λ → ``UnstableSystemError``; |λ| < 1e-30 raised to
1e-30; arg λ = 0 clamped to ``MIN_PHASE`` (θ_log would be −inf).

Precision: the package's forward writes its outputs into ``torch.empty`` buffers of the global
default dtype, so the layer computes in float32 unless ``torch.get_default_dtype()`` is float64,
whatever its parameters' dtype.
"""

from __future__ import annotations

import math

import torch
from LRU_pytorch.LRU import LRU
from torch import Tensor, nn

from ..adapters.base import checked_modes, f64, install_parameters, require_type
from ..adapters.lru import MIN_PHASE
from ..errors import ShapeError
from ..numerics.system import LTISystem


def real_feedthrough(system: LTISystem, fallback: Tensor, shape: tuple[int, int]) -> Tensor:
    """``system.D`` as a real (p, m) float64 matrix (``fallback`` when it is None)."""
    if system.D is None:
        return f64(fallback)
    D = system.D.detach()
    if tuple(D.shape) != shape:
        raise ShapeError(f"the layer holds a feedthrough of shape {shape}, got {tuple(D.shape)}")
    if D.is_complex():
        if float(D.imag.abs().max()) > 1e-8 * (1.0 + float(D.abs().max())):
            raise ShapeError("the layer only holds a real feedthrough D")
        D = D.real
    return D.to(torch.float64)


class LRUPytorchAdapter:
    """Adapter for ``LRU_pytorch.LRU.LRU`` (kind ``"lru-pytorch"``)."""

    kind = "lru-pytorch"

    def state_dim(self, module: nn.Module) -> int:
        require_type(module, LRU, self.kind)
        return int(module.nu_log.shape[0])

    def read(self, module: nn.Module) -> LTISystem:
        """A (n,) complex128, B (n, in), C (out, n) complex128, D (out, in) float64."""
        require_type(module, LRU, self.kind)
        lam = torch.exp(
            torch.complex(-torch.exp(f64(module.nu_log)), torch.exp(f64(module.theta_log))))
        gamma = torch.exp(f64(module.gamma_log))
        B = module.B.detach().to(torch.complex128) * gamma.unsqueeze(-1)
        C = module.C.detach().to(torch.complex128).clone()
        return LTISystem(lam, B, C, f64(module.D))

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        require_type(module, LRU, self.kind)
        n_out, n_in = (int(s) for s in module.D.shape)
        if not system.is_diagonal:
            raise ShapeError(f"{self.kind} layer needs a diagonal system, "
                             f"got dense A{tuple(system.A.shape)}")
        if system.batch_shape or system.n_inputs != n_in or system.n_outputs != n_out:
            raise ShapeError(f"{self.kind} layer needs {n_in} inputs and {n_out} outputs; "
                             f"got B{tuple(system.B.shape)}, C{tuple(system.C.shape)}")
        lam = checked_modes(system.A)
        r = int(lam.shape[0])
        mod = lam.abs()
        phase = torch.remainder(torch.angle(lam), 2 * math.pi).clamp_min(MIN_PHASE)
        gamma = torch.sqrt(1 - mod**2)
        values = {
            "D": real_feedthrough(system, module.D, (n_out, n_in)),
            "nu_log": torch.log(-torch.log(mod)),
            "theta_log": torch.log(phase),
            "gamma_log": torch.log(gamma),
            "B": system.B.detach().to(torch.complex128) / gamma.unsqueeze(-1),
            "C": system.C.detach().to(torch.complex128),
        }
        with torch.random.fork_rng(devices=[]):
            new = type(module)(n_in, n_out, r)
        install_parameters(new, values, module)
        # The recurrence starts from ``self.state``; the package leaves it at zeros after every
        # call, in the dtype its last forward computed in.
        old_state = getattr(module, "state", None)
        cdtype = old_state.dtype if isinstance(old_state, Tensor) and old_state.is_complex() \
            else module.B.dtype
        new.state = torch.zeros(r, dtype=cdtype, device=module.B.device)
        return new.train(module.training)


__all__ = ["LRUPytorchAdapter", "real_feedthrough"]
