"""Black-box LTI identification: layers written in plain PyTorch (no ssmcompile ops) are found,
identified to rounding, rebuilt as a canonical layer, and truncated within their bound; modules
that are not LTI state-space blocks are refused with a reason naming the property."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from ssmcompile.compiler.canonical import CanonicalSSM
from ssmcompile.compiler.lti_probe import IdentifiedLTI, LTIProbeAdapter, identify_lti
from ssmcompile.errors import MatchError, ShapeError
from ssmcompile.numerics import truncate


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class S4DConv(nn.Module):
    """S4D-style: per channel K_k = Re(Σ_n C_n λ_n^k B_n), applied by FFT, plus a skip D ⊙ u."""

    def __init__(self, channels: int, modes: int, seed: int = 0):
        super().__init__()
        g = _gen(seed)
        self.log_radius = nn.Parameter(torch.log(0.5 + 0.4 * torch.rand(channels, modes,
                                                                        generator=g)))
        self.angle = nn.Parameter(math.pi * torch.rand(channels, modes, generator=g))
        self.b = nn.Parameter(torch.randn(channels, modes, 2, generator=g))
        self.c = nn.Parameter(torch.randn(channels, modes, 2, generator=g))
        self.skip = nn.Parameter(torch.randn(channels, generator=g))

    def kernel(self, length: int) -> torch.Tensor:
        k = torch.arange(length, dtype=self.angle.dtype)
        powers = torch.polar(torch.exp(self.log_radius[..., None] * k), self.angle[..., None] * k)
        cb = torch.view_as_complex(self.c.contiguous()) * torch.view_as_complex(
            self.b.contiguous())
        return (cb[..., None] * powers).sum(dim=1).real  # (H, L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        L = u.shape[1]
        uf = torch.fft.rfft(u.transpose(1, 2), n=2 * L)
        kf = torch.fft.rfft(self.kernel(L), n=2 * L)
        y = torch.fft.irfft(uf * kf, n=2 * L)[..., :L].transpose(1, 2)
        return y + u * self.skip


class LoopRecurrence(nn.Module):
    """x_t = A x_{t-1} + B u_t, y_t = C x_t + D u_t in a Python loop, with its own names."""

    def __init__(self, m: int = 3, n: int = 5, p: int = 2, seed: int = 1, rho: float = 0.85):
        super().__init__()
        g = _gen(seed)
        A = torch.randn(n, n, generator=g)
        self.transition = nn.Parameter(rho * A / torch.linalg.eigvals(A).abs().max())
        self.inject = nn.Parameter(torch.randn(n, m, generator=g))
        self.readout = nn.Parameter(torch.randn(p, n, generator=g))
        self.bypass = nn.Parameter(torch.randn(p, m, generator=g))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        A, B, C, D = self.transition, self.inject, self.readout, self.bypass
        x = u.new_zeros(u.shape[0], A.shape[0])
        ys = []
        for t in range(u.shape[1]):
            x = x @ A.T + u[:, t] @ B.T
            ys.append(x @ C.T + u[:, t] @ D.T)
        return torch.stack(ys, dim=1)


class Wrap(nn.Module):
    def __init__(self, inner: nn.Module, how):
        super().__init__()
        self.inner, self.how = inner, how

    def forward(self, u):
        return self.how(self.inner, u)


@dataclasses.dataclass
class Out:
    extra: str
    hidden: torch.Tensor


class HasLogits:
    def __init__(self, logits):
        self.logits = logits


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def run(module: nn.Module, u: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(u)


CASES = {
    "s4d-fft": (lambda: S4DConv(3, 4).double(), 3, 64, 24),
    "python-loop": (lambda: LoopRecurrence().double(), 3, 40, 5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_identifies_and_rebuilds_exactly(name):
    make, m, T, order = CASES[name]
    layer = make()
    adapter = LTIProbeAdapter(m, T)
    found = adapter.identify(layer)
    assert isinstance(found, IdentifiedLTI)
    assert found.order == order == adapter.state_dim(layer) == found.system.state_dim
    assert found.horizon == T and f"first {T} impulse-response taps" in found.caveat
    assert found.system.A.dtype == torch.float64 and not found.system.is_diagonal
    assert torch.all(found.hankel_sv[:-1] >= found.hankel_sv[1:])
    u = torch.randn(2, T, m, generator=_gen(2), dtype=torch.float64)
    y = run(layer, u)
    assert found.residual <= 1e-9 * float(y.abs().max())
    layer.train()
    rebuilt = adapter.rebuild(layer, adapter.read(layer))
    assert isinstance(rebuilt, CanonicalSSM) and rebuilt.training and not rebuilt.diagonal
    assert rebuilt.D.dtype == torch.float64
    for length in (T, T // 2 + 3):
        assert rel_err(run(rebuilt, u[:, :length]), y[:, :length]) <= 1e-6


@pytest.mark.parametrize("name, rank", [("s4d-fft", 12), ("python-loop", 2)])
def test_truncation_error_within_bound_plus_residual(name, rank):
    make, m, T, _ = CASES[name]
    layer = make()
    adapter = LTIProbeAdapter(m, T)
    found = adapter.identify(layer)
    result = truncate(found.system, rank)
    reduced = adapter.rebuild(layer, result.system)
    assert reduced.state_dim == rank
    u = torch.randn(16, T, m, generator=_gen(3), dtype=torch.float64)
    err = (run(layer, u) - run(reduced, u)).flatten(1).norm(dim=1)
    gain = float((err / u.flatten(1).norm(dim=1)).max())
    bound = float(result.bound) + found.residual
    assert 0.0 < gain <= bound, (gain, bound)


def test_causal_fir_conv1d_is_identified_exactly():
    # A nilpotent (finite-memory) block: the case plain ERA-plus-least-squares would miss.
    conv = nn.Conv1d(3, 3, kernel_size=4, groups=3, padding=3, bias=False).double()
    layer = Wrap(conv, lambda c, u: c(u.transpose(1, 2))[..., : u.shape[1]].transpose(1, 2))
    found = identify_lti(layer, 3, 24)
    assert found.order <= 12 and found.residual < 1e-10
    u = torch.randn(2, 24, 3, generator=_gen(4), dtype=torch.float64)
    rebuilt = LTIProbeAdapter(3, 24).rebuild(layer, found.system)
    assert rel_err(run(rebuilt, u), run(layer, u)) <= 1e-8


@pytest.mark.parametrize("how", [
    lambda f, u: (f(u), "aux"),
    lambda f, u: [f(u)],
    lambda f, u: HasLogits(f(u)),
    lambda f, u: Out("x", f(u)),
    lambda f, u: {"y": f(u)},
])
def test_structured_outputs_use_their_first_tensor(how):
    layer = Wrap(LoopRecurrence().double(), how)
    assert identify_lti(layer, 3, 16).order == 5


def test_float32_layer_that_casts_its_input():
    class Float32Loop(LoopRecurrence):
        def forward(self, u):
            return super().forward(u.to(torch.float32))

    layer = Float32Loop()
    with pytest.raises(MatchError, match="^raised RuntimeError"):
        identify_lti(layer, 3, 32)  # float64 probes meet float32 arithmetic
    found = identify_lti(layer, 3, 32, dtype=torch.float32)
    assert found.order == 5 and found.system.A.dtype == torch.float64
    u = torch.randn(2, 32, 3, generator=_gen(5))
    y = run(layer, u)
    assert found.residual <= 1e-4 * float(y.abs().max())
    rebuilt = LTIProbeAdapter(3, 32, torch.float32).rebuild(layer, found.system)
    assert rebuilt.D.dtype == torch.float32
    assert rel_err(run(rebuilt, u), y) <= 1e-4


def test_memoryless_maps_are_not_state_space_blocks():
    for layer in (nn.Linear(3, 3), nn.Linear(3, 2, bias=False)):
        with pytest.raises(MatchError, match="memory"):
            identify_lti(layer.double(), 3, 16)


def _ramp(f, u):
    return f(u) * (1.0 + torch.arange(u.shape[1], dtype=u.dtype)[:, None] / u.shape[1])


@pytest.mark.parametrize("how, reason", [
    (lambda f, u: torch.tanh(f(u)), "^not linear: superposition error"),
    (lambda f, u: f(u) + 0.5, "^not linear: zero input"),
    (lambda f, u: f(u.flip(1)).flip(1), "^not causal"),
    (_ramp, "^not time-invariant"),
    (lambda f, u: f(u)[:, 1:], "^not shape-preserving in length"),
    (lambda f, u: f(u) + f(u).mean(0, keepdim=True), "^not LTI"),
])
def test_non_lti_layers_are_refused_with_the_property(how, reason):
    with pytest.raises(MatchError, match=reason):
        identify_lti(Wrap(LoopRecurrence().double(), how), 3, 16)


def test_exceptions_inside_the_module_become_match_errors():
    class Broken(nn.Module):
        def forward(self, u):
            raise ValueError("boom\nsecond line")

    with pytest.raises(MatchError, match="^raised ValueError: boom$"):
        identify_lti(Broken(), 3, 16)
    with pytest.raises(MatchError, match="^raised RuntimeError"):
        identify_lti(nn.Linear(5, 5), 3, 16)  # wrong width
    with pytest.raises(MatchError, match="not a tensor"):
        identify_lti(Wrap(nn.Identity(), lambda f, u: "nope"), 3, 16)


def test_unstable_block_is_refused():
    layer = LoopRecurrence(m=1, n=1, p=1).double()
    with torch.no_grad():
        layer.transition.fill_(1.05)
    with pytest.raises(MatchError, match="unstable"):
        identify_lti(layer, 1, 20)


def test_bad_arguments_raise_shape_error():
    layer = LoopRecurrence().double()
    for args, dtype in (((3, 2), torch.float64), ((0, 16), torch.float64),
                        ((3, 16), torch.int64)):
        with pytest.raises(ShapeError):
            identify_lti(layer, *args, dtype=dtype)


def test_adapter_surface():
    adapter = LTIProbeAdapter(3, 16)
    assert adapter.kind == "lti-probe" and adapter.certified is True
    layer = LoopRecurrence()  # float32 parameters
    system = adapter.read(layer)
    rebuilt = adapter.rebuild(layer.eval(), system)
    assert rebuilt.D.dtype == torch.float32 and not rebuilt.training
    assert rebuilt.state_dim == adapter.state_dim(layer) == 5
    assert adapter.rebuild(nn.Identity(), system).D.dtype == torch.float32  # no parameters
    assert adapter.identify(layer).caveat.startswith("identified from its first 16")
