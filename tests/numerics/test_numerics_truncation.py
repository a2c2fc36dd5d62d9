"""Balanced truncation: SLICOT's reduced models, exactness at full rank, the 2·Σ tail bound."""

from __future__ import annotations

import pytest
import slycot
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numerics_systems import dense_system, gen, lru_system, markov, one_thread, simulate

from ssmcompile.errors import ConditioningError, RankError, UnstableSystemError
from ssmcompile.numerics import (
    LTISystem,
    balanced_truncation,
    hinf_error,
    numerical_order,
    truncate,
)

PROPS = settings(max_examples=15, deadline=None)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _make(diagonal, n, m, p, seed):
    return lru_system(n, m, p, seed=seed) if diagonal else dense_system(n, m, p, seed=seed)


@pytest.mark.parametrize(
    "n,m,p,r", [(30, 2, 3, 5), (30, 2, 3, 20), (80, 16, 16, 40), (12, 1, 1, 3)]
)
def test_reduced_model_matches_slycot(n, m, p, r):
    A, B, C = dense_system(n, m, p, seed=n + r, rho=0.95)
    res = balanced_truncation(A, B, C, None, r)
    a, b, c = (x.numpy().copy(order="F") for x in (A, B, C))
    nr, Ar, Br, Cr, hsv = slycot.ab09ad("D", "B", "N", n, m, p, a, b, c, nr=r)
    assert nr == r == res.rank
    ref = LTISystem(*(torch.from_numpy(x) for x in (Ar[:r, :r], Br[:r], Cr[:, :r])))
    # Realisations differ by a similarity (signs of singular vectors); compare invariants.
    h, h_ref = markov(res.system.A, res.system.B, res.system.C, 25), markov(ref.A, ref.B, ref.C, 25)
    assert torch.allclose(h, h_ref, rtol=0, atol=1e-10 * float(h_ref.abs().max()))
    assert hinf_error(res.system, ref) <= 1e-10 * float(res.hsv[0])
    assert torch.allclose(res.hsv, torch.from_numpy(hsv), rtol=0, atol=1e-12 * hsv[0])


@PROPS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12), m=st.integers(1, 3),
       p=st.integers(1, 3), diagonal=st.booleans())
def test_full_rank_reproduces_outputs(seed, n, m, p, diagonal):
    A, B, C = _make(diagonal, n, m, p, seed)
    D = torch.randn(p, m, generator=gen(seed), dtype=torch.float64)
    res = balanced_truncation(A, B, C, D, n, clip=True)
    assume(res.rank == n)  # random systems are minimal almost surely
    u = torch.randn(2, 60, m, generator=gen(seed + 1), dtype=torch.float64)
    y = simulate(A, B, C, D, u)
    y_r = simulate(res.system.A, res.system.B, res.system.C, res.system.D, u)
    assert (y - y_r).abs().max() <= 1e-10 * y.abs().max()
    assert res.system.D is D and res.bound.item() == 0.0


@PROPS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 10), m=st.integers(1, 3),
       p=st.integers(1, 3), diagonal=st.booleans())
def test_hinf_error_within_bound_for_every_rank(seed, n, m, p, diagonal):
    A, B, C = lru_system(n, m, p, seed=seed, rmax=0.95) if diagonal else dense_system(
        n, m, p, seed=seed
    )
    full = LTISystem(A, B, C)
    order = numerical_order(truncate(full, 1).hsv)
    for r in range(1, min(n, order + 1)):
        res = truncate(full, r)
        err = hinf_error(full, res.system)
        sigma_next, bound = float(res.hsv[r]), float(res.bound)
        assert err <= bound * (1 + 1e-8) + 1e-12 * float(res.hsv[0])
        # ‖G − G_r‖∞ ≥ σ_{r+1} for any order-r model: catches an estimator that underestimates.
        assert err >= sigma_next * (1 - 1e-6)


@PROPS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 12), r=st.integers(1, 12),
       m=st.integers(1, 3), p=st.integers(1, 3))
def test_rediagonalised_structure(seed, n, r, m, p):
    r = min(r, n)
    lam, B, C = lru_system(n, m, p, seed=seed)
    res = balanced_truncation(lam, B, C, None, r, clip=True)
    r = res.rank
    s = res.system
    assert s.is_diagonal and s.A.shape == (r,) and (s.A.abs() < 1).all()
    # T / Tinv are the maps that produce the reported system.
    eye = torch.eye(r, dtype=torch.complex128)
    assert torch.allclose(res.Tinv @ res.T, eye, atol=1e-9)
    assert torch.allclose(res.Tinv @ (lam[:, None] * res.T), torch.diag(s.A), atol=1e-9)
    assert torch.allclose(res.Tinv @ B, s.B, atol=1e-9 * float(s.B.abs().max()))
    assert torch.allclose(C @ res.T, s.C, atol=1e-9 * float(s.C.abs().max()))
    b, c = s.B.norm(dim=-1), s.C.norm(dim=-2)
    assert torch.allclose(b, c, rtol=1e-10)


def test_batched_equals_per_item():
    for diagonal in (True, False):
        A, B, C = (lru_system if diagonal else dense_system)(16, 2, 3, seed=11, batch=(3,))
        res = balanced_truncation(A, B, C, None, 6)
        assert res.T.shape == (3, 16, 6) and res.Tinv.shape == (3, 6, 16)
        assert res.tail.shape == (3, 10) and res.bound.shape == (3,)
        for i in range(3):
            one = balanced_truncation(A[i], B[i], C[i], None, 6)
            assert torch.allclose(res.hsv[i], one.hsv, rtol=1e-12)
            assert torch.allclose(res.bound[i], one.bound, rtol=1e-12)
            s, o = res.system, one.system
            h, h1 = markov(s.A[i], s.B[i], s.C[i], 10), markov(o.A, o.B, o.C, 10)
            assert torch.allclose(h, h1, atol=1e-11 * float(h1.abs().max()))


def test_s4d_style_batch_of_siso_channels():
    lam, B, C = lru_system(32, 1, 1, seed=3, batch=(8,), rmin=0.8, rmax=0.99)
    res = balanced_truncation(lam, B, C, None, 8)
    for i in range(8):
        err = hinf_error(LTISystem(lam[i], B[i], C[i]), LTISystem(*(
            x[i] for x in (res.system.A, res.system.B, res.system.C))))
        assert float(res.hsv[i, 8]) * (1 - 1e-6) <= err <= float(res.bound[i]) * (1 + 1e-8)


def test_complex_dense_input():
    A, B, C = dense_system(10, 2, 2, seed=4, complex_=True)
    res = balanced_truncation(A, B, C, None, 4)
    assert res.system.A.shape == (4, 4) and res.T.dtype == torch.complex128
    assert hinf_error(LTISystem(A, B, C), res.system) <= float(res.bound) * (1 + 1e-8)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [0, 9, -1, 2.0, True, None])
def test_bad_rank(rank):
    lam, B, C = lru_system(8, 1, 1)
    with pytest.raises(RankError) as err:
        balanced_truncation(lam, B, C, None, rank)
    assert "\n" not in str(err.value)


def test_rank_above_numerical_order_raises_or_clips():
    lam, B, C = lru_system(10, 2, 2, seed=6)
    B = B.clone()
    B[7:] = 0
    with pytest.raises(RankError, match="numerical minimal order 7"):
        balanced_truncation(lam, B, C, None, 9)
    res = balanced_truncation(lam, B, C, None, 9, clip=True)
    assert res.rank == 7 == numerical_order(res.hsv) and res.system.A.shape == (7,)
    with pytest.raises(RankError, match="order 0"):
        balanced_truncation(lam, torch.zeros_like(B), C, None, 1, clip=True)


def test_ill_conditioned_rediagonalisation_raises():
    lam, B, C = lru_system(12, 2, 2, seed=2)
    with pytest.raises(ConditioningError) as err:
        balanced_truncation(lam, B, C, None, 6, max_cond=1.0 + 1e-12)
    assert "\n" not in str(err.value) and "cond" in str(err.value)


@pytest.mark.parametrize("diagonal", [True, False])
def test_unstable_input(diagonal):
    if diagonal:
        A, B, C = lru_system(6, 1, 1, seed=1)
        A = torch.cat([A[:5], torch.tensor([1.001j])])
    else:
        A, B, C = dense_system(6, 1, 1, rho=1.05)
    with pytest.raises(UnstableSystemError):
        balanced_truncation(A, B, C, None, 2)


def test_equal_singular_values_at_cut_never_return_unstable_silently():
    # σ_r = σ_{r+1} (two identical decoupled copies): BT may put a pole on |λ| = 1; we must not
    # return such a model — either it is stable, or UnstableSystemError is raised.
    A, B, C = dense_system(3, 1, 1, seed=5, rho=0.7)
    Z = torch.zeros(3, 3, dtype=torch.float64)
    A2 = torch.cat([torch.cat([A, Z], 1), torch.cat([Z, A], 1)])
    B2 = torch.cat([B, B])
    C2 = torch.cat([C, C], 1)
    for r in (1, 3, 5):
        try:
            res = balanced_truncation(A2, B2, C2, None, r, clip=True)
        except UnstableSystemError:
            continue
        assert torch.linalg.eigvals(res.system.A).abs().max() < 1


@pytest.mark.parametrize("diagonal", [True, False])
def test_precomputed_balancing_gives_the_same_truncation(diagonal):
    """Reusing the analysis' balancing SVD is the same computation as doing it again."""
    from ssmcompile.numerics import balancing_svd

    A, B, C = (lru_system if diagonal else dense_system)(12, 2, 3, seed=3)
    fresh = balanced_truncation(A, B, C, None, 5)
    reused = balanced_truncation(A, B, C, None, 5, balancing=balancing_svd(A, B, C))
    for a, b in ((fresh.system.A, reused.system.A), (fresh.system.B, reused.system.B),
                 (fresh.system.C, reused.system.C), (fresh.hsv, reused.hsv),
                 (fresh.bound, reused.bound)):
        assert torch.equal(a, b)
    # ...and it is the one used: the balancing of another system gives another result.
    other = balanced_truncation(A, B, C, None, 5, balancing=balancing_svd(A, 2 * B, C))
    assert not torch.allclose(other.bound, fresh.bound)
