"""The canonical LTI layer a user's scan-calling module is lowered to when it is reduced.

We cannot know how a user's module parameterises its system, so a reduced user block is
emitted as this layer: the same input → output map class (x_k = A x_{k-1} + B u_k,
y = Re(C x) + D u), with the reduced (A, B, C, D) as plain trainable parameters, in real
arithmetic so it compiles and exports. It has its own adapter, so it is matched by rule (1) the
next time the pipeline runs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ShapeError
from ..numerics.system import LTISystem
from ..ops import dense_scan, diagonal_ssm


class CanonicalSSM(nn.Module):
    """y_k = Re(C x_k) + D u_k, x_k = A x_{k-1} + B u_k.

    Diagonal form (``diagonal=True``): parameters ``lam_re, lam_im`` (n,), ``B_re, B_im`` (n, m),
    ``C_re, C_im`` (p, n), ``D`` (p, m). Dense real form: ``A`` (n, n), ``B`` (n, m), ``C`` (p, n),
    ``D`` (p, m). Input (batch, L, m) → output (batch, L, p).
    """

    def __init__(self, system: LTISystem, dtype: torch.dtype = torch.float32):
        super().__init__()
        s = system
        self.diagonal = s.is_diagonal
        if s.batch_shape:
            raise ShapeError("CanonicalSSM takes one system, not a batch")
        D = s.D if s.D is not None else torch.zeros(s.n_outputs, s.n_inputs)

        def param(t: torch.Tensor) -> nn.Parameter:
            return nn.Parameter(t.detach().to(dtype).clone())

        if self.diagonal:
            self.lam_re, self.lam_im = param(s.A.real), param(s.A.imag)
            self.B_re, self.B_im = param(s.B.real), param(s.B.imag)
            self.C_re, self.C_im = param(s.C.real), param(s.C.imag)
        else:
            if s.A.is_complex() or s.B.is_complex() or s.C.is_complex():
                raise ShapeError("a dense canonical layer needs a real system")
            self.A, self.B, self.C = param(s.A), param(s.B), param(s.C)
        self.D = param(D.real if D.is_complex() else D)

    @property
    def state_dim(self) -> int:
        return int((self.lam_re if self.diagonal else self.A).shape[0])

    def system(self) -> LTISystem:
        """The layer's system in float64 / complex128 (detached)."""
        with torch.no_grad():
            D = self.D.double().clone()
            if self.diagonal:
                A = torch.complex(self.lam_re.double(), self.lam_im.double())
                B = torch.complex(self.B_re.double(), self.B_im.double())
                C = torch.complex(self.C_re.double(), self.C_im.double())
                return LTISystem(A, B, C, D)
            return LTISystem(self.A.double().clone(), self.B.double().clone(),
                             self.C.double().clone(), D)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.diagonal:
            y = diagonal_ssm(self.lam_re, self.lam_im, self.B_re, self.B_im, self.C_re,
                             self.C_im, u)
            return y + u @ self.D.T
        return dense_scan(self.A, u @ self.B.T) @ self.C.T + u @ self.D.T

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        ref = self.D
        z = torch.zeros(batch_size, self.state_dim, dtype=ref.dtype, device=ref.device)
        return (z, z.clone()) if self.diagonal else (z,)

    def step(self, u_k: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """One time step: u_k (batch, m) → y_k (batch, p), with the explicit state."""
        if self.diagonal:
            x_re, x_im = state
            b_re, b_im = u_k @ self.B_re.T, u_k @ self.B_im.T
            x_re, x_im = (self.lam_re * x_re - self.lam_im * x_im + b_re,
                          self.lam_re * x_im + self.lam_im * x_re + b_im)
            return x_re @ self.C_re.T - x_im @ self.C_im.T + u_k @ self.D.T, (x_re, x_im)
        (x,) = state
        x = x @ self.A.T + u_k @ self.B.T
        return x @ self.C.T + u_k @ self.D.T, (x,)


class CanonicalAdapter:
    """Adapter of :class:`CanonicalSSM` (reads and rebuilds its plain parameters)."""

    kind = "canonical"

    def read(self, module: CanonicalSSM) -> LTISystem:
        return module.system()

    def state_dim(self, module: CanonicalSSM) -> int:
        return module.state_dim

    def rebuild(self, module: CanonicalSSM, system: LTISystem) -> CanonicalSSM:
        if system.is_diagonal != module.diagonal:
            raise ShapeError("a canonical layer keeps its form (diagonal or dense) when rebuilt")
        new = CanonicalSSM(system, dtype=module.D.dtype).to(module.D.device)
        return new.train(module.training)
