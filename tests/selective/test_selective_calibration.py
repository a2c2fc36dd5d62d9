"""Gramian estimators: LTI special case vs exact Gramians, brute force, surrogate round trip."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.errors import ShapeError
from ssmcompile.numerics import gramians, truncate
from ssmcompile.numerics.system import LTISystem
from ssmcompile.selective import diagonal_decay_gramians, scalar_decay_gramians, surrogate_system

F64 = torch.float64


def _finite_horizon_factor(x: torch.Tensor, L: int) -> torch.Tensor:
    """mean_t of (1 − x^{t+1}) over t < L: what averaging P_t over a finite window keeps."""
    return 1 - x * (1 - x**L) / (L * (1 - x))


def test_scalar_decay_lti_case_matches_exact_gramians():
    """Input-independent Δ, B, C: the estimate is the exact Gramian up to the finite-horizon
    transient, entry (i, j) scaled by 1 − x(1 − x^L)/(L(1 − x)), x = a², error ≤ 1/(L(1 − ρ²))."""
    g = torch.Generator().manual_seed(0)
    batch, L, H, G, N = 2, 300, 4, 2, 5
    delta = torch.rand(H, generator=g, dtype=F64) * 0.5 + 0.1
    A = -(torch.rand(H, generator=g, dtype=F64) * 2 + 0.5)
    Bv, Cv = torch.randn(G, N, generator=g, dtype=F64), torch.randn(G, N, generator=g, dtype=F64)
    P, Q = scalar_decay_gramians(delta.expand(batch, L, H), A, Bv.expand(batch, L, G, N),
                                 Cv.expand(batch, L, G, N))
    a = torch.exp(delta * A)
    P_exact, Q_exact = torch.zeros(G, N, N, dtype=F64), torch.zeros(G, N, N, dtype=F64)
    P_window = torch.zeros_like(P_exact)
    for h in range(H):
        grp = h // (H // G)
        Ph, Qh = gramians(a[h].expand(N).to(torch.complex128), (delta[h] * Bv[grp])[:, None],
                          Cv[grp][None, :])
        P_exact[grp] += Ph.real / (H // G)
        Q_exact[grp] += Qh.real / (H // G)
        P_window[grp] += Ph.real * _finite_horizon_factor(a[h] ** 2, L) / (H // G)
    torch.testing.assert_close(P, P_window, rtol=1e-12, atol=1e-14)
    bound = 1 / (L * (1 - a.max() ** 2))
    assert 0 < float((P - P_exact).abs().max() / P_exact.abs().max()) <= bound
    assert float((Q - Q_exact).abs().max() / Q_exact.abs().max()) <= bound


def test_diagonal_decay_lti_case_matches_exact_gramians():
    g = torch.Generator().manual_seed(1)
    batch, L, D, N, groups = 2, 200, 4, 5, 2
    delta = torch.rand(D, generator=g, dtype=F64) * 0.5 + 0.1
    A = -(torch.rand(D, N, generator=g, dtype=F64) * 2 + 0.3)
    Bv, Cv = torch.randn(N, generator=g, dtype=F64), torch.randn(N, generator=g, dtype=F64)
    P, Q = diagonal_decay_gramians(delta.expand(batch, L, D), A, Bv.expand(batch, L, N),
                                   Cv.expand(batch, L, N), groups)
    P_window, Q_window = torch.zeros(groups, N, N, dtype=F64), torch.zeros(groups, N, N, dtype=F64)
    for d in range(D):
        a = torch.exp(delta[d] * A[d])
        Pd, Qd = gramians(a.to(torch.complex128), (delta[d] * Bv)[:, None], Cv[None, :])
        x = a[:, None] * a[None, :]
        P_window[d // (D // groups)] += Pd.real * _finite_horizon_factor(x, L) / (D // groups)
        Q_window[d // (D // groups)] += Qd.real * _finite_horizon_factor(x, L) / (D // groups)
    torch.testing.assert_close(P, P_window, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(Q, Q_window, rtol=1e-12, atol=1e-14)


def _brute_force(delta, A, Bm, Cm):
    """mean over (batch, t) of P_t and Q_t by their defining recursions, per channel."""
    batch, L, D = delta.shape
    N = Bm.shape[-1]
    P, Q = torch.zeros(D, N, N, dtype=F64), torch.zeros(D, N, N, dtype=F64)
    for b in range(batch):
        for d in range(D):
            Abar = [torch.diag(torch.exp(delta[b, t, d] * A[d])) for t in range(L)]
            X = torch.zeros(N, N, dtype=F64)
            for t in range(L):
                v = delta[b, t, d] * Bm[b, t]
                X = Abar[t] @ X @ Abar[t].T + torch.outer(v, v)
                P[d] += X
            X = torch.zeros(N, N, dtype=F64)
            for t in reversed(range(L)):
                X = (Abar[t + 1].T @ X @ Abar[t + 1] if t + 1 < L else X) + torch.outer(
                    Cm[b, t], Cm[b, t])
                Q[d] += X
    return P / (batch * L), Q / (batch * L)


def test_diagonal_decay_matches_brute_force_time_varying():
    g = torch.Generator().manual_seed(2)
    batch, L, D, N = 2, 9, 3, 4
    delta = torch.rand(batch, L, D, generator=g, dtype=F64) + 0.05
    A = -(torch.rand(D, N, generator=g, dtype=F64) + 0.1)
    Bm, Cm = torch.randn(batch, L, N, generator=g, dtype=F64), torch.randn(
        batch, L, N, generator=g, dtype=F64)
    P, Q = diagonal_decay_gramians(delta, A, Bm, Cm, groups=D)
    P_ref, Q_ref = _brute_force(delta, A, Bm, Cm)
    torch.testing.assert_close(P, P_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Q, Q_ref, rtol=1e-12, atol=1e-12)


def test_scalar_estimator_agrees_with_diagonal_one_for_shared_decay():
    """A Mamba-1 system whose decay is the same for every state *is* a Mamba-2 one: the two
    estimators (scalar recurrences + GEMM vs the N × N recursion) must agree."""
    g = torch.Generator().manual_seed(3)
    batch, L, H, P_dim, N = 2, 40, 3, 2, 4
    delta_h = torch.rand(batch, L, H, generator=g, dtype=F64) * 0.8 + 0.05
    A_h = -(torch.rand(H, generator=g, dtype=F64) * 2 + 0.2)
    Bm, Cm = torch.randn(batch, L, N, generator=g, dtype=F64), torch.randn(
        batch, L, N, generator=g, dtype=F64)
    P1, Q1 = scalar_decay_gramians(delta_h, A_h, Bm[:, :, None], Cm[:, :, None])
    delta_c = delta_h.repeat_interleave(P_dim, -1)
    A_c = A_h.repeat_interleave(P_dim)[:, None].expand(H * P_dim, N)
    P2, Q2 = diagonal_decay_gramians(delta_c, A_c, Bm, Cm)
    torch.testing.assert_close(P1, P2, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(Q1, Q2, rtol=1e-12, atol=1e-13)


def test_surrogate_has_the_estimated_gramians_and_real_transforms():
    g = torch.Generator().manual_seed(4)
    M = torch.randn(2, 6, 20, generator=g, dtype=F64)
    P = M @ M.mT / 20
    K = torch.randn(2, 6, 20, generator=g, dtype=F64)
    Q = K @ K.mT / 20
    system = surrogate_system(P, Q)
    assert not system.is_diagonal and system.A.shape == (2, 6, 6) and not system.A.any()
    P2, Q2 = gramians(system.A, system.B, system.C)
    torch.testing.assert_close(P2, P, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Q2, Q, rtol=1e-12, atol=1e-12)
    result = truncate(system, 3)
    assert result.T.dtype == torch.float64 and result.Tinv.dtype == torch.float64
    torch.testing.assert_close(result.Tinv @ result.T, torch.eye(3, dtype=F64).expand(2, 3, 3))
    # Why the surrogate is dense: the same Gramians as a *diagonal* system (A = complex zeros)
    # come back re-diagonalised with complex eigenvector maps, which no real weight can absorb.
    diagonal = LTISystem(torch.zeros(2, 6, dtype=torch.complex128), system.B, system.C)
    assert truncate(diagonal, 3).T.is_complex()


def test_estimators_reject_bad_shapes():
    with pytest.raises(ShapeError):
        scalar_decay_gramians(torch.rand(1, 4, 3), -torch.rand(2), torch.rand(1, 4, 1, 2),
                              torch.rand(1, 4, 1, 2))
    with pytest.raises(ShapeError, match="groups"):
        diagonal_decay_gramians(torch.rand(1, 4, 3), -torch.rand(3, 2), torch.rand(1, 4, 2),
                                torch.rand(1, 4, 2), groups=2)
