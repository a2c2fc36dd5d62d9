"""Eigensystem Realisation Algorithm (ERA): a dense real LTI system from its impulse response.

Data are the Markov parameters of a black-box block in our convention (see :mod:`.system`):
h_0 = C B + D and h_k = C A^k B for k ≥ 1. Textbook ERA realises h_k = C_s A_s^{k-1} B_s; taking
A = A_s, C = C_s needs B = A_s^{-1} B_s, which does not exist when A_s is singular (an FIR part,
e.g. a causal conv1d or a one-step token shift). So ERA runs twice:

1. on the Hankel of h_1, h_2, … , fitting B by least squares against all the taps; this gives
   the one unknown tap g_1 = C B of the sequence g = (C B, h_1, h_2, …) = (C A^{k} B)_{k ≥ 0};
2. on the Hankel of g, whose standard realisation (A, B, C) already is ours, with D = h_0 − C B.

Pass 2 is exact for any finite-order data (when the Hankel is big enough), not only when A_s is
invertible, and its factorisation O = U S^½, R = S^½ Vᵀ makes the result finite-horizon
balanced in the sense of our Gramians, whose Hankel is that of g (not of h_1, h_2, …): its
singular values are the finite-horizon counterparts of ``hankel_singular_values(A, B, C)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import RankError, ShapeError
from .system import LTISystem

__all__ = ["EraResult", "markov_hankel", "era", "era_reference"]

# Least-squares cut for B in pass 1: directions this weak would make g_1 = C B huge; dropping
# them only costs pass 2 up to min(p, m) extra states, never exactness.
_FIT_RTOL = 1e-10


@dataclass(frozen=True)
class EraResult:
    """What :func:`era` identified.

    - ``system``: real dense float64 :class:`LTISystem` (A (n, n), B (n, m), C (p, n), D (p, m)).
    - ``order``: n, the number of states kept.
    - ``hankel_sv``: (s·min(p, m),) descending float64 singular values of the s-block Hankel of
      g = (C B, h_1, h_2, …), the finite-horizon Hankel singular values.
    - ``residual``: Σ_{k=0..K} ‖h_k − ĥ_k‖₂ (spectral norms) over the given taps.
    - ``block_rows``: s.
    """

    system: LTISystem
    order: int
    hankel_sv: torch.Tensor
    residual: float
    block_rows: int


def _check_taps(h: torch.Tensor, name: str = "h") -> None:
    if not isinstance(h, torch.Tensor) or h.ndim != 3:
        shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ShapeError(f"{name} must be a (T, p, m) tensor of Markov parameters, got {shape}")
    if h.is_complex() or not h.dtype.is_floating_point:
        raise ShapeError(f"{name} must be real floating point, got {h.dtype}")
    if not bool(torch.isfinite(h).all()):
        raise ShapeError(f"{name} must be finite")


def markov_hankel(h: torch.Tensor, s: int) -> torch.Tensor:
    """Block Hankel matrix of Markov parameters.

    Shapes: ``h`` (T, p, m) with ``h[k]`` = h_{k+1} (taps k ≥ 1 only), ``s`` ≥ 1 block rows and
    columns, T ≥ 2s − 1 (the last block uses h[2s − 2]) → (s·p, s·m) float64 with block (i, j) =
    h[i + j] = h_{i+j+1}. Raises ShapeError for other shapes, or non-real / non-finite ``h``.
    """
    _check_taps(h)
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ShapeError(f"block rows s must be an integer ≥ 1, got {s!r}")
    T, p, m = h.shape
    if T < 2 * s - 1:
        raise ShapeError(f"an s = {s} block Hankel needs T ≥ 2s − 1 = {2 * s - 1} taps, got {T}")
    idx = torch.arange(s, device=h.device)
    blocks = h.to(torch.float64)[idx[:, None] + idx[None, :]]  # (s, s, p, m)
    return blocks.permute(0, 2, 1, 3).reshape(s * p, s * m)


def _check_inputs(h0, h, block_rows, rtol) -> int:
    _check_taps(h)
    if not isinstance(h0, torch.Tensor) or h0.ndim != 2 or tuple(h0.shape) != tuple(h.shape[1:]):
        shape = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
        raise ShapeError(f"h0 must be (p, m) = {tuple(h.shape[1:])}, got {shape}")
    _check_taps(h0[None], "h0")
    K = h.shape[0]
    if K < 2:
        raise ShapeError(f"ERA needs at least 2 taps h_1, h_2, got {K}")
    s = K // 2 if block_rows is None else block_rows
    if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= K // 2:
        raise ShapeError(f"block_rows must be an integer in 1..{K // 2} for {K} taps, got {s!r}")
    if not 0.0 <= float(rtol) < 1.0:
        raise RankError(f"rtol must be in [0, 1), got {rtol!r}")
    return s


def _pick_order(S: torch.Tensor, order: int | None, rtol: float) -> int:
    if S.numel() == 0 or float(S[0]) == 0.0:
        rank = 0
    else:
        rank = int((S > rtol * S[0]).sum())
    if order is None:
        return rank
    # Orders above the rounding floor are allowed (the caller may know better than rtol); beyond
    # it S^{-1/2} would amplify rounding into the realisation.
    floor = max(S.shape[0], 1) * torch.finfo(torch.float64).eps * float(S[0]) if S.numel() else 0
    usable = int((S > floor).sum()) if S.numel() else 0
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= usable:
        raise RankError(f"order must be an integer in 0..{usable} (the Hankel's rank above "
                        f"rounding), got {order!r}")
    return order


def _balanced_era(seq: torch.Tensor, s: int, order: int | None, rtol: float):
    """(A, B, C, σ) with seq[k] = C A^k B, from the s-block Hankel of seq (needs 2s taps)."""
    p, m = seq.shape[1:]
    U, S, Vh = torch.linalg.svd(markov_hankel(seq, s), full_matrices=False)
    n = _pick_order(S, order, rtol)
    sq = S[:n].sqrt()
    A = (U[:, :n].T @ markov_hankel(seq[1:], s) @ Vh[:n].T) / (sq[:, None] * sq[None, :])
    B = sq[:, None] * Vh[:n, :m]
    C = U[:p, :n] * sq[None, :]
    return A, B, C, S


def _markov(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, K: int) -> torch.Tensor:
    """(C A^k B)_{k=1..K} → (K, p, m)."""
    out, X = [], B
    for _ in range(K):
        X = A @ X
        out.append(C @ X)
    return torch.stack(out) if out else B.new_zeros(0, C.shape[0], B.shape[1])


def era(
    h0: torch.Tensor,
    h: torch.Tensor,
    *,
    order: int | None = None,
    rtol: float = 1e-10,
    block_rows: int | None = None,
) -> EraResult:
    """Identify (A, B, C, D) with C B + D = h0 and C A^k B = h_k (k ≥ 1) from K given taps.

    Shapes: ``h0`` (p, m); ``h`` (K, p, m), K ≥ 2, with ``h[k-1]`` = h_k. ``block_rows`` s
    (default K // 2, at most K // 2, since the shifted Hankel uses up to h_{2s}). The order is
    the number of Hankel singular values σ_i > ``rtol``·σ_1, unless ``order`` is given.
    ``rtol`` is the noise level of the data (pass 1 also uses it to find C B); to reduce, pass
    ``order`` or truncate the result, rather than raising ``rtol``.

    The fit is exact (to rounding) when the data come from a system of order n ≤ s·min(p, m)
    whose s-block Hankel has rank n. ``residual`` Σ_{k=0..K} ‖h_k − ĥ_k‖₂ bounds, by Young's
    inequality, the ℓ2 gain of the identification error for inputs (and outputs) of at most K + 1
    steps from rest; it says nothing about longer inputs.

    Raises ShapeError (bad shapes, non-real or non-finite data, bad ``block_rows``), RankError
    (``rtol`` outside [0, 1), ``order`` above the Hankel's rank). See :class:`EraResult`.
    """
    s = _check_inputs(h0, h, block_rows, rtol)
    h0, h = h0.to(torch.float64), h.to(torch.float64)
    K = h.shape[0]
    A1, B1, C1, _ = _balanced_era(h, s, None, rtol)
    if A1.shape[0]:
        # Rows C A^k (k = 1..K) stacked: least squares for B over every tap, not just A B = B1.
        M = _markov(A1, torch.eye(A1.shape[0], dtype=A1.dtype, device=A1.device), C1, K)
        B_fit = torch.linalg.pinv(M.reshape(-1, A1.shape[0]), rtol=_FIT_RTOL) @ h.reshape(
            -1, h.shape[-1])
        g1 = C1 @ B_fit
    else:
        g1 = torch.zeros_like(h0)
    A, B, C, S = _balanced_era(torch.cat([g1[None], h]), s, order, rtol)
    D = h0 - C @ B  # so the h_0 term of the residual is zero by construction
    residual = float(torch.linalg.matrix_norm(h - _markov(A, B, C, K), ord=2).sum())
    return EraResult(LTISystem(A, B, C, D), A.shape[0], S, residual, s)


def era_reference(
    h0: torch.Tensor,
    h: torch.Tensor,
    *,
    order: int | None = None,
    rtol: float = 1e-10,
    block_rows: int | None = None,
) -> EraResult:
    """Readable twin of :func:`era` in NumPy with explicit loops (same shapes and errors).

    Uses the textbook A = O⁺ H₁ R⁺ and ``np.linalg.lstsq``; realisations are unique only up
    to similarity, so compare Markov parameters, orders and σ, not matrices.
    """
    s = _check_inputs(h0, h, block_rows, rtol)
    h0n = h0.detach().cpu().double().numpy()
    hn = h.detach().cpu().double().numpy()
    K, p, m = hn.shape

    def hankel(seq, shift):
        H = np.zeros((s * p, s * m))
        for i in range(s):
            for j in range(s):
                H[i * p:(i + 1) * p, j * m:(j + 1) * m] = seq[i + j + shift]
        return H

    def realise(seq, want):
        U, S, Vt = np.linalg.svd(hankel(seq, 0))
        n = _pick_order(torch.from_numpy(S), want, rtol)
        O = U[:, :n] * np.sqrt(S[:n])
        R = np.sqrt(S[:n])[:, None] * Vt[:n]
        A = np.linalg.pinv(O) @ hankel(seq, 1) @ np.linalg.pinv(R)
        return A, R[:, :m], O[:p], S

    def markov(A, B, C):
        taps, Ak = [], np.eye(A.shape[0])
        for _ in range(K):
            Ak = Ak @ A
            taps.append(C @ Ak @ B)
        return np.array(taps).reshape(K, p, m)

    A1, _, C1, _ = realise(hn, None)
    n1 = A1.shape[0]
    if n1:
        rows, Ak = [], np.eye(n1)
        for _ in range(K):
            Ak = Ak @ A1
            rows.append(C1 @ Ak)
        B_fit = np.linalg.lstsq(np.vstack(rows), hn.reshape(K * p, m), rcond=_FIT_RTOL)[0]
        g1 = C1 @ B_fit
    else:
        g1 = np.zeros((p, m))
    A, B, C, S = realise(np.concatenate([g1[None], hn]), order)
    D = h0n - C @ B
    residual = sum(np.linalg.norm(h_k - hh_k, 2) for h_k, hh_k in zip(hn, markov(A, B, C),
                                                                     strict=True))
    system = LTISystem(*(torch.from_numpy(np.ascontiguousarray(x)) for x in (A, B, C, D)))
    return EraResult(system, A.shape[0], torch.from_numpy(S), float(residual), s)
