"""s5-pytorch's ``s5.s5_model.S5`` ↔ LTISystem, in the package's own parameterisation.

``S5(width, state_width)`` (s5-pytorch 0.2.1) holds an ``S5SSM`` at ``.seq`` with continuous-time
``Lambda`` (P,) complex (unconstrained), ``B`` (P, H, 2) real (B̃ = B[..., 0] + i·B[..., 1], cast
to complex64 in every forward), ``C`` (H, P) complex, ``D`` (H,) real and ``log_step`` (P,): one
step Δ per mode. Its forward discretises (ZOH by default: λ = exp(ΛΔ), B̄ = (λ − 1)/Λ · B̃; the
bilinear map when ``seq.discretize`` is ``discretize_bilinear``) and runs

    x_k = λ ⊙ x_{k-1} + B̄ u_k,    y_k = Re(C x_k) + D ⊙ u_k,

all P complex modes stored: the package does NOT use the S5 paper's conjugate-symmetric half
(P/2 modes, output 2·Re). Its HiPPO init puts the modes in conjugate pairs, but B̃ and C are
free per mode, so training does not keep the pairs. ``read`` therefore gives the full complex
P-state system (λ, B̄, C, diag D) — the same convention as our own S5 — and truncation keeps r
complex modes; the bound 2·Σ tail of that complex system also bounds the real output's error
(|Re z| ≤ |z|).

Mapping back: a reduced system's modes are mixtures of the old ones, so the old per-mode steps
belong to none of them; every new mode gets one Δ, the geometric mean of the original's steps,
and the discretisation is inverted exactly: ZOH Λ = log(λ)/Δ (principal log), B̃ = Λ/(λ − 1)·B̄;
bilinear Λ = (2/Δ)(λ − 1)/(λ + 1), B̃ = 2/(Δ(λ + 1))·B̄. The reduced layer is exact at
``step_scale = 1`` (the forward's default), which is where the system was read; at another
``step_scale`` it re-discretises its r modes with the shared Δ, which need not match the
original's behaviour at that scale.

What the layer cannot hold (``ShapeError`` from ``rebuild``): a dense A, a feedthrough that is
not diagonal, other input/output widths, a mode within 1e-12 of λ = −1 under the bilinear
map (|λ| ≥ 1 itself is ``UnstableSystemError``). Configurations that are
not a causal LTI system are refused at match time (``MatchError`` from ``state_dim``/``read``):
``bidir=True`` (an anticausal backward scan), ``liquid=True`` (input-dependent transition),
``degree != 1`` (B̄ raised elementwise and required square) and the ``factorized`` B/C init
(which the package itself cannot construct). Guards as for our adapters: |λ| ≥ 1 or non-finite
λ → ``UnstableSystemError``; |λ| < 1e-30 raised to 1e-30.

Precision: whatever dtype ``B`` has, the forward casts B̃ to complex64, so the layer's input map
carries float32 precision even in a float64 copy.
"""

from __future__ import annotations

import torch
from s5.s5_model import S5, discretize_bilinear, discretize_zoh
from torch import Tensor, nn

from ..adapters.base import (
    checked_modes,
    diag_feedthrough,
    f64,
    install_parameters,
    require_diagonal,
    require_type,
)
from ..errors import MatchError, ShapeError
from ..numerics.system import LTISystem

_SUPPORTED_INITS = ("dense", "dense_columns", "complex_normal")


def _method(seq: nn.Module) -> str:
    fn = getattr(seq, "discretize", None)
    if fn is discretize_zoh:
        return "zoh"
    if fn is discretize_bilinear:
        return "bilinear"
    raise MatchError(f"unknown discretisation {getattr(fn, '__name__', fn)!r} "
                     "(only the package's discretize_zoh and discretize_bilinear are read)")


def _check_lti(module: nn.Module) -> nn.Module:
    """The layer's ``S5SSM`` when it is a causal LTI system we can read, else MatchError."""
    seq = module.seq
    if getattr(seq, "bidir", False):
        raise MatchError("bidir=True adds an anticausal backward scan: not a causal LTI system")
    if getattr(seq, "liquid", False):
        raise MatchError("liquid=True makes the transition input-dependent: not LTI")
    if getattr(seq, "degree", 1) != 1:
        raise MatchError(f"degree={seq.degree} raises B̄ elementwise and needs it square "
                         "(P = H), which no reduced state can keep")
    if getattr(seq, "bcInit", None) not in _SUPPORTED_INITS:
        raise MatchError(f"bcInit={seq.bcInit!r} is not read (supported: "
                         f"{', '.join(_SUPPORTED_INITS)})")
    _method(seq)
    return seq


def discretise(method: str, Lam: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """(λ, B-scale): λ and the per-mode factor with B̄ = scale·B̃, complex128."""
    if method == "zoh":
        lam = torch.exp(Lam * step)
        return lam, (lam - 1) / Lam
    inv = 1 / (1 - (step / 2) * Lam)
    return inv * (1 + (step / 2) * Lam), inv * step


def continuous(method: str, lam: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse: (Λ, B-scale) with B̃ = scale·B̄ realising the discrete modes ``lam``."""
    if method == "zoh":
        Lam = torch.log(lam) / step
        return Lam, Lam / (lam - 1)
    if bool(((lam + 1).abs() < 1e-12).any()):
        raise ShapeError("a mode at λ = −1 has no bilinear (Tustin) continuous-time preimage")
    return (2 / step) * (lam - 1) / (lam + 1), 2 / (step * (lam + 1))


class S5PytorchAdapter:
    """Adapter for ``s5.s5_model.S5`` (kind ``"s5-pytorch"``); ``S5Block`` holds one at ``.s5``."""

    kind = "s5-pytorch"

    def state_dim(self, module: nn.Module) -> int:
        require_type(module, S5, self.kind)
        return int(_check_lti(module).Lambda.shape[0])

    def read(self, module: nn.Module) -> LTISystem:
        """A (P,) complex128, B (P, H), C (H, P) complex128, D (H, H) float64 — at
        ``step_scale = 1``."""
        require_type(module, S5, self.kind)
        seq = _check_lti(module)
        Lam = seq.Lambda.detach().to(torch.complex128)
        lam, scale = discretise(_method(seq), Lam, torch.exp(f64(seq.log_step)))
        B_tilde = torch.complex(f64(seq.B[..., 0]), f64(seq.B[..., 1]))
        C = seq.C.detach().to(torch.complex128).clone()
        return LTISystem(lam, scale.unsqueeze(-1) * B_tilde, C, torch.diag(f64(seq.D)))

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        require_type(module, S5, self.kind)
        seq = _check_lti(module)
        H = int(seq.D.shape[0])
        require_diagonal(system, (), H, self.kind)
        method = _method(seq)
        lam = checked_modes(system.A)
        r = int(lam.shape[0])
        log_step = f64(seq.log_step).mean().expand(r).clone()
        Lam, scale = continuous(method, lam, torch.exp(log_step))
        B_tilde = scale.unsqueeze(-1) * system.B.detach().to(torch.complex128)
        values = {
            "seq.Lambda": Lam,
            "seq.C": system.C.detach().to(torch.complex128),
            "seq.B": torch.stack((B_tilde.real, B_tilde.imag), dim=-1),
            "seq.D": diag_feedthrough(system, seq.D),
            "seq.log_step": log_step,
        }
        with torch.random.fork_rng(devices=[]):
            new = type(module)(int(module.width), state_width=r, bcInit=seq.bcInit)
        new.seq.discretize = seq.discretize
        install_parameters(new, values, module)
        return new.train(module.training)


__all__ = ["S5PytorchAdapter", "discretise", "continuous"]
