"""A complete adapter for a layer ssmcompile has never seen, and a reduction through it.

``LoopSSM`` keeps a dense real transition ``A`` (n, n), input map ``B`` (n, H), readout ``C``
(H, n) and skip ``D`` (H,), and runs its recurrence as a Python loop (which torch.fx cannot
trace and ONNX would unroll). The adapter tells ssmcompile how to read the layer as an LTI
system and how to write a (reduced) system back into a NEW layer of the same class: with it,
the layer is reduced in its own parameterisation, with the certified bound, and the reduced
model is still made of ``LoopSSM`` layers. (Without it, the black-box ``lti-probe`` rule would
still find the layer, from its impulse response, but emit ssmcompile's canonical layer.)

    python examples/bring_your_own_layer.py
"""

from __future__ import annotations

import torch
from torch import nn

import ssmcompile
from ssmcompile.errors import ShapeError
from ssmcompile.numerics import LTISystem


class LoopSSM(nn.Module):
    """x_k = A x_{k-1} + B u_k,  y_k = C x_k + D ⊙ u_k: (batch, L, H) → (batch, L, H)."""

    def __init__(self, width: int, n: int):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(n, n))
        self.A = nn.Parameter(q * torch.linspace(0.2, 0.95, n))  # stable: ‖A‖ < 1
        self.B = nn.Parameter(torch.randn(n, width) / width**0.5)
        self.C = nn.Parameter(torch.randn(width, n) / n**0.5)
        self.D = nn.Parameter(torch.randn(width))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = u.new_zeros(u.shape[0], self.A.shape[0])
        ys = []
        for t in range(u.shape[1]):
            x = x @ self.A.T + u[:, t] @ self.B.T
            ys.append(x @ self.C.T + self.D * u[:, t])
        return torch.stack(ys, dim=1)


class LoopSSMAdapter:
    kind = "loop-ssm"

    def state_dim(self, module: LoopSSM) -> int:
        return int(module.A.shape[0])

    def read(self, module: LoopSSM) -> LTISystem:
        """Dense A (n, n), B (n, H), C (H, n), D (H, H): detached float64 copies."""
        f64 = {k: getattr(module, k).detach().double() for k in "ABCD"}
        return LTISystem(f64["A"], f64["B"], f64["C"], torch.diag(f64["D"]))

    def rebuild(self, module: LoopSSM, system: LTISystem) -> LoopSSM:
        """A NEW layer realising ``system`` (the original is left as it is)."""
        if system.is_diagonal or system.A.is_complex():
            raise ShapeError("LoopSSM holds a real dense system")
        new = LoopSSM(module.B.shape[1], system.state_dim).to(module.A.dtype)
        D = module.D.detach() if system.D is None else torch.diagonal(system.D)
        with torch.no_grad():
            for name, value in (("A", system.A), ("B", system.B), ("C", system.C), ("D", D)):
                getattr(new, name).copy_(value)
                getattr(new, name).requires_grad_(getattr(module, name).requires_grad)
        return new.train(module.training)


def main() -> None:
    ssmcompile.register_block(LoopSSM, LoopSSMAdapter())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), LoopSSM(4, 16), nn.Tanh(), nn.Linear(4, 3))
    x = torch.randn(8, 64, 2)
    print(ssmcompile.analyze(model, x))
    small, report = ssmcompile.reduce(model, x, rank=6)
    print(report)
    print(f"state dims: {model[1].A.shape[0]} -> {small[1].A.shape[0]} "
          f"({type(small[1]).__name__})")


if __name__ == "__main__":
    main()
