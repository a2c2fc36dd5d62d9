"""Adapters: read() is the layer's system; rebuild() writes any (truncated, permuted) one back."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssmcompile.adapters import BlockAdapter, adapter_for, register_block
from ssmcompile.errors import MatchError, ShapeError, UnstableSystemError
from ssmcompile.layers import LRU, S4D, S5, DenseLTI
from ssmcompile.numerics.system import LTISystem

LAYERS = [LRU, S5, S4D, DenseLTI]
F64 = torch.float64


def impulse(sys: LTISystem, length: int) -> torch.Tensor:
    """Real impulse response Re(C A^k B) + D δ_k from powers of A: (..., L, p, m)."""
    A, B, C = (t.to(torch.complex128) for t in (sys.A, sys.B, sys.C))
    hs = []
    for k in range(length):
        if sys.is_diagonal:
            hs.append((C * (A**k).unsqueeze(-2)) @ B)
        else:
            hs.append(C @ torch.linalg.matrix_power(A, k) @ B)
    h = torch.stack(hs, dim=-3).real.clone()
    if sys.D is not None:
        h[..., 0, :, :] += sys.D.real if sys.D.is_complex() else sys.D
    return h


def simulate(sys: LTISystem, u: torch.Tensor) -> torch.Tensor:
    """y = h * u by explicit convolution; u (batch, L, width) float64 → y (batch, L, width)."""
    length = u.shape[1]
    h = impulse(sys, length)
    ys = []
    for t in range(length):
        if sys.batch_shape == ():  # MIMO
            ys.append(sum(u[:, s] @ h[t - s].T for s in range(t + 1)))
        else:  # S4D: one SISO system per channel, h (H, L, 1, 1)
            ys.append(sum(u[:, s] * h[:, t - s, 0, 0] for s in range(t + 1)))
    return torch.stack(ys, dim=1)


def truncated(sys: LTISystem, idx: torch.Tensor) -> LTISystem:
    """Keep states ``idx`` (in that order): modal truncation/permutation, or the leading
    principal block of a dense system."""
    if sys.is_diagonal:
        A = sys.A[..., idx]
    else:
        A = sys.A[idx][:, idx]
    return LTISystem(A, sys.B[..., idx, :], sys.C[..., idx], sys.D)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("cls", LAYERS)
def test_read_matches_impulse_response(cls):
    torch.manual_seed(10)
    H, n, length = 3, 5, 9
    layer = cls(H, n, dtype=F64)
    sys = adapter_for(layer).read(layer)
    assert sys.A.dtype in (torch.complex128, F64) and sys.B.dtype in (torch.complex128, F64)
    assert sys.A.requires_grad is False and sys.state_dim == n
    h = impulse(sys, length)
    with torch.no_grad():
        if isinstance(layer, S4D):
            u = torch.zeros(1, length, H, dtype=F64)
            u[0, 0] = 1.0
            y = layer(u)[0]  # (L, H)
            expected = h[:, :, 0, 0].T
        else:
            u = torch.zeros(H, length, H, dtype=F64)
            u[:, 0] = torch.eye(H, dtype=F64)
            y = layer(u)  # y[j, k, :] = h_k[:, j]
            expected = h.permute(2, 0, 1)
    assert max_rel(y, expected) <= 1e-10
    assert float(h[1:].abs().max()) > 1e-3  # not just feedthrough


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cls", LAYERS)
def test_round_trip_keeps_outputs_float32(cls, seed):
    torch.manual_seed(seed)
    layer = cls(6, 16)
    adapter = adapter_for(layer)
    new = adapter.rebuild(layer, adapter.read(layer))
    assert type(new) is cls and new is not layer and new.state_dim == 16
    u = torch.randn(2, 33, 6)
    with torch.no_grad():
        assert max_rel(new(u), layer(u)) <= 1e-6


def test_lru_round_trip_restores_parameters():
    torch.manual_seed(3)
    layer = LRU(4, 12, dtype=F64)
    adapter = adapter_for(layer)
    new = adapter.rebuild(layer, adapter.read(layer))
    for name, p in layer.named_parameters():
        assert torch.allclose(getattr(new, name), p, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("cls", LAYERS)
def test_rebuild_truncated_and_permuted_system(cls):
    torch.manual_seed(11)
    H, n, r = 3, 8, 5
    layer = cls(H, n, dtype=F64)
    adapter = adapter_for(layer)
    sys = adapter.read(layer)
    u = torch.randn(2, 11, H, dtype=F64)
    perm = torch.randperm(n)
    # Permuted: the same system, so the same outputs.
    same = adapter.rebuild(layer, truncated(sys, perm))
    with torch.no_grad():
        assert max_rel(same(u), layer(u)) <= 1e-10
    # Truncated to r states: a smaller layer realising exactly the truncated system.
    sys_r = truncated(sys, perm[:r])
    small = adapter.rebuild(layer, sys_r)
    assert small.state_dim == r and adapter.state_dim(small) == r
    with torch.no_grad():
        y_small, y_full = small(u), layer(u)
    y_ref = simulate(sys_r, u)
    assert max_rel(y_small, y_ref) <= 1e-10
    assert max_rel(y_small, y_full) > 1e-6  # the truncation really changed the system
    # The rebuilt layer reads back as the system it was given.
    back = adapter.read(small)
    assert max_rel(impulse(back, 6), impulse(sys_r, 6)) <= 1e-10


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("cls", LAYERS)
def test_rebuild_keeps_module_properties(cls, dtype):
    torch.manual_seed(12)
    layer = cls(3, 6, dtype=dtype).eval()
    layer.D.requires_grad_(False)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    adapter = adapter_for(layer)
    sys = adapter.read(layer)
    rng = torch.random.get_rng_state()
    new = adapter.rebuild(layer, truncated(sys, torch.arange(4)))
    assert torch.equal(rng, torch.random.get_rng_state())  # no draw from the global RNG
    assert not new.training
    assert all(p.dtype == dtype and p.device == layer.D.device for p in new.parameters())
    assert not new.D.requires_grad
    assert all(p.is_leaf and p.requires_grad for n_, p in new.named_parameters() if n_ != "D")
    for k, v in layer.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k]), k
    new(torch.randn(2, 5, 3, dtype=dtype)).sum().backward()
    assert all(p.grad is not None for n_, p in new.named_parameters() if n_ != "D")


def test_s4d_read_is_batched_over_channels():
    layer = S4D(4, 6, dtype=F64)
    sys = adapter_for(layer).read(layer)
    assert sys.A.shape == (4, 6) and sys.B.shape == (4, 6, 1) and sys.C.shape == (4, 1, 6)
    assert sys.D.shape == (4, 1, 1) and sys.is_diagonal and adapter_for(layer).state_dim(layer) == 6


def test_s5_rebuild_uses_one_step_geometric_mean():
    layer = S5(3, 6, dtype=F64)
    adapter = adapter_for(layer)
    new = adapter.rebuild(layer, adapter.read(layer))
    assert torch.allclose(new.log_step, layer.log_step.mean().expand(6))


def test_lru_init_follows_the_paper():
    torch.manual_seed(13)
    H, n = 32, 512
    layer = LRU(H, n, dtype=F64).requires_grad_(False)
    lam = adapter_for(layer).read(layer).A
    mod = lam.abs()
    assert float(mod.min()) >= 0.9 - 1e-12 and float(mod.max()) <= 0.999 + 1e-12
    assert float(torch.exp(layer.theta_log).max()) < 2 * math.pi
    assert torch.allclose(torch.exp(layer.gamma_log), torch.sqrt(1 - mod**2))
    assert abs(float(layer.B_re.std()) * math.sqrt(2 * H) - 1) < 0.05
    assert abs(float(layer.C_im.std()) * math.sqrt(n) - 1) < 0.05
    # Ring-area uniformity: |λ|² is uniform on [0.81, 0.998], so its mean is the midpoint.
    assert abs(float((mod**2).mean()) - (0.81 + 0.999**2) / 2) < 0.01


# ---- guards --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LRU, S5])
def test_edge_modes_are_handled(cls):
    """arg λ = 0, arg λ = π, λ = 0 map back; |λ| ≥ 1 raises."""
    layer = cls(2, 4, dtype=F64)
    adapter = adapter_for(layer)
    sys = adapter.read(layer)
    lam = torch.tensor([0.5, -0.7, 0.0, 0.3j], dtype=torch.complex128)
    edge = LTISystem(lam, sys.B, sys.C, sys.D)
    new = adapter.rebuild(layer, edge)
    u = torch.randn(2, 7, 2, dtype=F64)
    with torch.no_grad():
        assert max_rel(new(u), simulate(edge, u)) <= 1e-10
    for bad in (1.0, -1.0001, 0.6 + 0.8j, float("nan")):
        lam_bad = lam.clone()
        lam_bad[1] = bad
        with pytest.raises(UnstableSystemError):
            adapter.rebuild(layer, LTISystem(lam_bad, sys.B, sys.C, sys.D))


@pytest.mark.parametrize("cls", [LRU, S5, S4D])
def test_diagonal_layers_refuse_dense_or_misshaped_systems(cls):
    layer = cls(3, 4, dtype=F64)
    adapter = adapter_for(layer)
    sys = adapter.read(layer)
    dense = LTISystem(torch.diag_embed(sys.A), sys.B, sys.C, sys.D)
    with pytest.raises(ShapeError):
        adapter.rebuild(layer, dense)
    wide = LTISystem(sys.A, torch.cat([sys.B, sys.B], dim=-1), sys.C, None)
    with pytest.raises(ShapeError):
        adapter.rebuild(layer, wide)


def test_feedthrough_must_be_diagonal_and_none_keeps_d():
    layer = LRU(3, 4, dtype=F64)
    adapter = adapter_for(layer)
    sys = adapter.read(layer)
    with pytest.raises(ShapeError):
        adapter.rebuild(layer, LTISystem(sys.A, sys.B, sys.C, torch.ones(3, 3, dtype=F64)))
    kept = adapter.rebuild(layer, LTISystem(sys.A, sys.B, sys.C, None))
    assert torch.equal(kept.D, layer.D)


def test_dense_accepts_real_systems_only():
    layer = DenseLTI(3, 4, dtype=F64)
    adapter = adapter_for(layer)
    sys = adapter.read(layer)
    diag = LTISystem(torch.tensor([0.5, -0.2], dtype=F64), sys.B[:2], sys.C[:, :2], sys.D)
    assert adapter.rebuild(layer, diag).A.shape == (2, 2)
    cplx = LTISystem(sys.A.to(torch.complex128) * (1 + 0.1j), sys.B, sys.C, sys.D)
    with pytest.raises(ShapeError):
        adapter.rebuild(layer, cplx)


def test_adapter_rejects_foreign_module():
    with pytest.raises(MatchError):
        adapter_for(LRU(2, 2)).read(S5(2, 2))


# ---- registry ------------------------------------------------------------------------------


def test_registry_builtins_subclasses_and_third_party():
    assert [adapter_for(c(2, 2)).kind for c in LAYERS] == ["lru", "s5", "s4d", "dense"]
    assert adapter_for(nn.Linear(2, 2)) is None

    class MyLRU(LRU):
        pass

    assert adapter_for(MyLRU(2, 2)).kind == "lru"  # nearest registered base class

    class Gain(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = nn.Parameter(torch.tensor(0.5))

    class GainAdapter:
        kind = "gain"

        def read(self, module):
            g = module.g.detach().double().reshape(1)
            return LTISystem(g.to(torch.complex128), torch.ones(1, 1), torch.ones(1, 1))

        def state_dim(self, module):
            return 1

        def rebuild(self, module, system):
            return module

    assert isinstance(GainAdapter(), BlockAdapter)
    register_block(Gain, GainAdapter())
    assert adapter_for(Gain()).kind == "gain"
    with pytest.raises(MatchError):
        register_block(int, GainAdapter())  # type: ignore[arg-type]
    with pytest.raises(MatchError):
        register_block(Gain, object())  # type: ignore[arg-type]
