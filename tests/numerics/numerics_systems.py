"""Random test systems and independent (NumPy/SciPy) reference computations for numerics tests."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import scipy.linalg as sl
import torch

from ssmcompile.ops.reference import dense_scan_reference, diagonal_scan_reference


@contextlib.contextmanager
def one_thread():
    """Run torch (and, if threadpoolctl is there, NumPy's BLAS) on one thread.

    On the shared 2-core machines oversubscribed BLAS threads made these tests 5× slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(1):
                yield
    finally:
        torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lru_system(n, m, p, *, seed=0, rmin=0.5, rmax=0.99, batch=()):
    """Diagonal complex system like an LRU: |λ| uniform on the ring area [rmin, rmax]."""
    g = gen(seed)
    r = torch.sqrt(torch.rand(*batch, n, generator=g, dtype=torch.float64) * (rmax**2 - rmin**2)
                   + rmin**2)
    lam = torch.polar(r, 2 * math.pi * torch.rand(*batch, n, generator=g, dtype=torch.float64))
    B = torch.randn(*batch, n, m, generator=g, dtype=torch.complex128)
    C = torch.randn(*batch, p, n, generator=g, dtype=torch.complex128)
    return lam, B, C


def dense_system(n, m, p, *, seed=0, rho=0.95, complex_=False, batch=()):
    """Dense (non-normal) system with spectral radius exactly ``rho``."""
    g = gen(seed)
    dt = torch.complex128 if complex_ else torch.float64
    A = torch.randn(*batch, n, n, generator=g, dtype=dt)
    A = rho * A / torch.linalg.eigvals(A).abs().amax(dim=-1)[..., None, None].to(dt)
    B = torch.randn(*batch, n, m, generator=g, dtype=dt)
    C = torch.randn(*batch, p, n, generator=g, dtype=dt)
    return A, B, C


def scipy_gramians(A, B, C):
    """P, Q by SciPy's Bartels–Stewart-type solver (independent of ssmcompile)."""
    A, B, C = (np.asarray(x) for x in (A, B, C))
    if A.ndim == 1:
        A = np.diag(A)
    P = sl.solve_discrete_lyapunov(A, B @ B.conj().T)
    Q = sl.solve_discrete_lyapunov(A.conj().T, C.conj().T @ C)
    return P, Q


def scipy_hsv(A, B, C):
    """Square-root HSVs from SciPy Gramians: Cholesky factors, then SVD of L_Qᴴ L_P."""
    P, Q = scipy_gramians(A, B, C)
    Lp = sl.cholesky((P + P.conj().T) / 2, lower=True)
    Lq = sl.cholesky((Q + Q.conj().T) / 2, lower=True)
    return sl.svdvals(Lq.conj().T @ Lp)


def simulate(A, B, C, D, u):
    """Outputs by the sequential reference scans. u (batch, L, m) → y (batch, L, p)."""
    dt = torch.promote_types(B.dtype, u.dtype)
    bu = u.to(dt) @ B.to(dt).transpose(-1, -2)
    if A.ndim == B.ndim - 1:
        x = diagonal_scan_reference(A, bu.to(torch.complex128))
    else:
        x = dense_scan_reference(A.to(dt), bu)
    y = x @ C.to(x.dtype).transpose(-1, -2)
    if D is not None:
        y = y + u.to(y.dtype) @ D.to(y.dtype).transpose(-1, -2)
    return y


def markov(A, B, C, k):
    """Markov parameters C A^j B for j < k (an invariant of the realisation). → (k, p, m)."""
    A = torch.diag_embed(A) if A.ndim == B.ndim - 1 else A
    dt = torch.promote_types(A.dtype, B.dtype)
    out, X = [], B.to(dt)
    for _ in range(k):
        out.append(C.to(dt) @ X)
        X = A.to(dt) @ X
    return torch.stack(out)
