"""Benchmark the LTI numerics core against SciPy doing the same work on the same inputs.

Cases: 8 LRU-like diagonal blocks (n states, H inputs/outputs each, B n×H, C H×n) and one dense
real block. Each is analysed and truncated: Gramians → Hankel singular values → square-root
balanced truncation to ``--rank`` (plus re-diagonalisation for diagonal blocks). SciPy uses
``solve_discrete_lyapunov`` and NumPy/SciPy Cholesky / SVD / eig for the same steps.

    .venv/bin/python tools/bench_numerics.py --threads 1
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import scipy.linalg as sl
import torch

from ssmcompile.numerics import balanced_truncation, gramians, hankel_singular_values


def _lru_blocks(blocks: int, n: int, h: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    r = torch.sqrt(torch.rand(blocks, n, generator=g, dtype=torch.float64) * (0.999**2 - 0.9**2)
                   + 0.9**2)
    lam = torch.polar(r, 2 * math.pi * torch.rand(blocks, n, generator=g, dtype=torch.float64))
    gamma = torch.sqrt(1 - r**2)[..., None]
    B = torch.randn(blocks, n, h, generator=g, dtype=torch.complex128) / math.sqrt(2 * h) * gamma
    C = torch.randn(blocks, h, n, generator=g, dtype=torch.complex128) / math.sqrt(n)
    return lam, B, C


def _dense_block(n: int, h: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = 0.98 * A / torch.linalg.eigvals(A).abs().max()
    B = torch.randn(n, h, generator=g, dtype=torch.float64)
    C = torch.randn(h, n, generator=g, dtype=torch.float64)
    return A, B, C


def _scipy_gramians(A: np.ndarray, B: np.ndarray, C: np.ndarray):
    Ad = np.diag(A) if A.ndim == 1 else A
    P = sl.solve_discrete_lyapunov(Ad, B @ B.conj().T)
    return P, sl.solve_discrete_lyapunov(Ad.conj().T, C.conj().T @ C)


def _scipy_factor(P: np.ndarray) -> np.ndarray:
    try:
        return sl.cholesky(P, lower=True)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(P)
        return V * np.sqrt(np.clip(w, 0, None))


def _scipy_bt(A: np.ndarray, B: np.ndarray, C: np.ndarray, rank: int, diagonal: bool):
    """The same pipeline in NumPy/SciPy for one block."""
    Ad = np.diag(A) if diagonal else A
    P, Q = _scipy_gramians(Ad, B, C)
    Lp, Lq = _scipy_factor(P), _scipy_factor(Q)
    U, s, Vh = sl.svd(Lq.conj().T @ Lp)
    isq = 1 / np.sqrt(s[:rank])
    T = (Lp @ Vh[:rank].conj().T) * isq
    Ti = isq[:, None] * (U[:, :rank].conj().T @ Lq.conj().T)
    Ar, Br, Cr = Ti @ Ad @ T, Ti @ B, C @ T
    if diagonal:
        mu, W = np.linalg.eig(Ar)
        Wi = np.linalg.inv(W)
        Ar, Br, Cr = mu, Wi @ Br, Cr @ W
    return s, Ar, Br, Cr


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (default 1)")
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--h", type=int, default=128, help="inputs = outputs per block")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        blas = f"{args.threads} (threadpoolctl)"
    except ImportError:
        blas = "unchanged (no threadpoolctl)"
    print(f"torch {torch.__version__}, torch threads = {torch.get_num_threads()}, "
          f"NumPy/SciPy BLAS threads = {blas}")

    lam, B, C = _lru_blocks(args.blocks, args.n, args.h, args.seed)
    A_d, B_d, C_d = _dense_block(args.n, args.h, args.seed)
    np_diag = [(lam[i].numpy(), B[i].numpy(), C[i].numpy()) for i in range(args.blocks)]
    np_dense = (A_d.numpy(), B_d.numpy(), C_d.numpy())

    # Agreement first (so the timings compare like with like).
    ours = balanced_truncation(lam, B, C, None, args.rank)
    ref = [_scipy_bt(*x, args.rank, True) for x in np_diag]
    hsv_err = max(
        float(np.abs(ours.hsv[i].numpy() - ref[i][0]).max() / ref[i][0][0])
        for i in range(args.blocks)
    )
    ours_d = balanced_truncation(A_d, B_d, C_d, None, args.rank)
    ref_d = _scipy_bt(*np_dense, args.rank, False)
    hsv_err_d = float(np.abs(ours_d.hsv.numpy() - ref_d[0]).max() / ref_d[0][0])

    label_d = f"{args.blocks} diagonal blocks n={args.n}, H={args.h}"
    label_s = f"1 dense block n={args.n}, m=p={args.h}"
    rows = [
        (label_d, "gramians",
         _best(lambda: gramians(lam, B, C), args.repeats),
         _best(lambda: [_scipy_gramians(a, b, c) for a, b, c in np_diag], args.repeats)),
        (label_d, "hankel_singular_values",
         _best(lambda: hankel_singular_values(lam, B, C), args.repeats), float("nan")),
        (label_d, f"gramians+HSV+BT(r={args.rank})",
         _best(lambda: balanced_truncation(lam, B, C, None, args.rank), args.repeats),
         _best(lambda: [_scipy_bt(*x, args.rank, True) for x in np_diag], args.repeats)),
        (label_s, f"gramians+HSV+BT(r={args.rank})",
         _best(lambda: balanced_truncation(A_d, B_d, C_d, None, args.rank), args.repeats),
         _best(lambda: _scipy_bt(*np_dense, args.rank, False), args.repeats)),
    ]
    print(f"max |σ − σ_scipy| / σ_1: diagonal {hsv_err:.1e}, dense {hsv_err_d:.1e}")
    print(f"{'case':<40} {'step':<26} {'ssmcompile s':>13} {'scipy s':>9} {'speed-up':>9}")
    for case, step, t_ours, t_ref in rows:
        ratio = t_ref / t_ours if not math.isnan(t_ref) else float("nan")
        ref_txt = f"{t_ref:9.3f}" if not math.isnan(t_ref) else f"{'—':>9}"
        rat_txt = f"{ratio:8.1f}×" if not math.isnan(ratio) else f"{'—':>9}"
        print(f"{case:<40} {step:<26} {t_ours:13.3f} {ref_txt} {rat_txt}")
    print(f"(best of {args.repeats} runs; '—': no SciPy counterpart timed)")


if __name__ == "__main__":
    main()
