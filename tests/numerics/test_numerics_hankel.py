"""Hankel singular values against SLICOT (slycot.ab09ad) and a SciPy square-root computation.

Accuracy criterion (measured: worst 5e-12 relative at σ ≈ 1e-8 σ_1, 1e-13 above 1e-2 σ_1):
|σ − σ_ref| ≤ 1e-12·σ_1 for every value, and |σ − σ_ref| ≤ 1e-10·σ_ref for σ_ref > 1e-8·σ_1.
"""

from __future__ import annotations

import numpy as np
import pytest
import slycot
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numerics_systems import dense_system, gen, lru_system, one_thread, scipy_hsv

from ssmcompile.numerics import (
    energy_rank,
    hankel_singular_values,
    hankel_singular_values_reference,
)

PROPS = settings(max_examples=20, deadline=None)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _check_against(s, ref, *, abs_tol=1e-12, rel_tol=1e-10, rel_above=1e-8):
    s, ref = np.asarray(s), np.asarray(ref)
    err = np.abs(s - ref)
    assert err.max() <= abs_tol * ref[0], err.max() / ref[0]
    big = ref > rel_above * ref[0]
    assert (err[big] <= rel_tol * ref[big]).all(), (err[big] / ref[big]).max()


@pytest.mark.parametrize(
    "n,m,p,rho",
    [(160, 64, 64, 0.98), (64, 2, 3, 0.95), (32, 1, 1, 0.9), (100, 1, 1, 0.5), (40, 150, 2, 0.99)],
)
def test_dense_real_matches_slycot(n, m, p, rho):
    A, B, C = dense_system(n, m, p, seed=n * 7 + m, rho=rho)
    s = hankel_singular_values(A, B, C)
    a, b, c = (x.numpy().copy(order="F") for x in (A, B, C))
    _, _, _, _, ref = slycot.ab09ad("D", "B", "N", n, m, p, a, b, c, nr=1)
    assert s.dtype == torch.float64 and s.shape == (n,)
    _check_against(s, ref)


@pytest.mark.parametrize("n,m,p", [(16, 4, 4), (64, 8, 8), (128, 32, 32)])
def test_diagonal_matches_scipy_square_root(n, m, p):
    lam, B, C = lru_system(n, m, p, seed=n, rmin=0.8, rmax=0.99)
    s = hankel_singular_values(lam, B, C)
    ref = scipy_hsv(lam, B, C)
    assert ref[-1] > 1e-9 * ref[0]  # SciPy's Cholesky needs a definite Gramian
    _check_against(s, ref, abs_tol=1e-11, rel_tol=1e-9)


def test_reference_twin_agrees_on_leading_values():
    lam, B, C = lru_system(10, 2, 2, seed=4)
    s = hankel_singular_values(lam, B, C)
    ref = hankel_singular_values_reference(lam, B, C)
    big = ref > 1e-4 * ref[0]
    assert torch.allclose(s[big], ref[big], rtol=1e-8, atol=0)


def test_uncontrollable_and_unobservable_modes_give_zero_not_nan():
    lam, B, C = lru_system(24, 2, 2, seed=2)
    B, C = B.clone(), C.clone()
    B[16:20] = 0  # uncontrollable
    C[:, 20:] = 0  # unobservable
    s = hankel_singular_values(lam, B, C)
    assert torch.isfinite(s).all()
    assert (s[16:] <= 1e-13 * s[0]).all() and s[15] > 1e-6 * s[0]
    zero = hankel_singular_values(lam, torch.zeros_like(B), C)
    assert torch.equal(zero, torch.zeros(24, dtype=torch.float64))


def test_batched_equals_per_item():
    lam, B, C = lru_system(20, 3, 2, seed=8, batch=(3,))
    s = hankel_singular_values(lam, B, C)
    for i in range(3):
        assert torch.allclose(s[i], hankel_singular_values(lam[i], B[i], C[i]), rtol=1e-12)
    A, B, C = dense_system(20, 3, 2, seed=8, batch=(2,))
    s = hankel_singular_values(A, B, C)
    for i in range(2):
        # Dense batches share the doubling count; extra exact steps change only rounding.
        assert torch.allclose(s[i], hankel_singular_values(A[i], B[i], C[i]), atol=1e-13 * s[i, 0])


# --- properties -------------------------------------------------------------------------------

_sizes = st.tuples(st.integers(1, 14), st.integers(1, 4), st.integers(1, 4))


@PROPS
@given(seed=st.integers(0, 2**31 - 1), nmp=_sizes, diagonal=st.booleans())
def test_sorted_nonnegative_finite(seed, nmp, diagonal):
    n, m, p = nmp
    make = lru_system if diagonal else dense_system
    s = hankel_singular_values(*make(n, m, p, seed=seed))
    assert s.shape == (n,) and torch.isfinite(s).all() and (s >= 0).all()
    assert (s[:-1] >= s[1:]).all()


@PROPS
@given(seed=st.integers(0, 2**31 - 1), nmp=_sizes)
def test_similarity_invariance(seed, nmp):
    n, m, p = nmp
    A, B, C = dense_system(n, m, p, seed=seed, rho=0.9)
    T = torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(
        n, n, generator=gen(seed + 1), dtype=torch.float64
    ) / n**0.5
    assume(torch.linalg.cond(T) < 50)
    Ti = torch.linalg.inv(T)
    s = hankel_singular_values(A, B, C)
    s2 = hankel_singular_values(T @ A @ Ti, T @ B, C @ Ti)
    assert torch.allclose(s, s2, rtol=0, atol=1e-10 * float(s[0]))
    # Diagonal systems: permuting and rescaling modes is a similarity that keeps them diagonal.
    lam, Bd, Cd = lru_system(n, m, p, seed=seed)
    perm = torch.randperm(n, generator=gen(seed + 2))
    d = torch.polar(torch.rand(n, generator=gen(seed + 3), dtype=torch.float64) + 0.5,
                    torch.rand(n, generator=gen(seed + 4), dtype=torch.float64) * 6.0)
    sd = hankel_singular_values(lam, Bd, Cd)
    sd2 = hankel_singular_values(lam[perm], d[:, None] * Bd[perm], Cd[:, perm] / d)
    assert torch.allclose(sd, sd2, rtol=0, atol=1e-10 * float(sd[0]))


@PROPS
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), extra=st.integers(1, 8),
       diagonal=st.booleans())
def test_known_order_embedded(seed, k, extra, diagonal):
    n, m, p = k + extra, 2, 2
    if diagonal:
        lam, B, C = lru_system(n, m, p, seed=seed)
        B, C = B.clone(), C.clone()
        cut = k + extra // 2
        B[k:cut] = 0  # uncontrollable modes
        C[:, cut:] = 0  # unobservable modes
        s = hankel_singular_values(lam, B, C)
    else:
        A_k, B_k, C_k = dense_system(k, m, p, seed=seed, rho=0.9)
        A_e = dense_system(extra, 1, 1, seed=seed + 1, rho=0.8)[0]
        g = gen(seed + 2)
        A = torch.zeros(n, n, dtype=torch.float64)
        A[:k, :k], A[k:, k:] = A_k, A_e
        A[:k, k:] = torch.randn(k, extra, generator=g, dtype=torch.float64)
        B = torch.cat([B_k, torch.zeros(extra, m, dtype=torch.float64)])  # x_e never excited
        C = torch.cat([C_k, torch.randn(p, extra, generator=g, dtype=torch.float64)], dim=1)
        T = torch.eye(n, dtype=torch.float64) + 0.2 * torch.randn(
            n, n, generator=g, dtype=torch.float64
        ) / n**0.5
        assume(torch.linalg.cond(T) < 20)
        Ti = torch.linalg.inv(T)
        s = hankel_singular_values(T @ A @ Ti, T @ B, C @ Ti)
    s_min = hankel_singular_values(*(  # the minimal part on its own
        (lam[:k], B[:k], C[:, :k]) if diagonal else (A_k, B_k, C_k)))
    assume(float(s_min[-1]) > 1e-6 * float(s_min[0]))
    assert (s[k:] <= 1e-9 * s[0]).all()
    assert torch.allclose(s[:k], s_min, rtol=1e-8, atol=0)
    share = float(s[k - 1] / s.sum())
    assert energy_rank(s, share / 2) == k
