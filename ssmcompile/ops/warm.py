"""Compile (or load from numba's cache) every CPU kernel once: ``python -m ssmcompile.ops.warm``.

Why: numba compiles a kernel on its first call per dtype and caches the machine code next to the
module (``cache=True``). On an empty cache the first training step of a fresh install paid
~12 s (float32) and ~5 s more for float64 (``tools/bench_limits.py --cold``); ``make install``
runs this so that cost is paid at install time, not inside a user's first step or a test.
"""

from __future__ import annotations

import time

import torch


def warm() -> float:
    """Run every numba kernel forward and backward on tiny float32 and float64 inputs; seconds."""
    from ..selective import selective_scan
    from . import _engine, dense_scan, diagonal_scan, diagonal_ssm

    start = time.perf_counter()
    if _engine._load() is None:  # numba missing: nothing to compile
        return 0.0
    for dt in (torch.float32, torch.float64):
        lam = torch.polar(torch.full((3,), 0.5, dtype=dt), torch.ones(3, dtype=dt))
        bu = torch.randn(2, 5, 3, dtype=lam.dtype, requires_grad=True)
        diagonal_scan(lam, bu).abs().sum().backward()
        A = (0.5 * torch.eye(3, dtype=dt)).requires_grad_()
        dense_scan(A, bu.real.detach().requires_grad_()).sum().backward()
        parts = [t.requires_grad_() for t in (lam.real, lam.imag, torch.ones(3, 2, dtype=dt),
                 torch.ones(3, 2, dtype=dt), torch.ones(2, 3, dtype=dt), torch.ones(2, 3, dtype=dt),
                 torch.ones(2, 5, 2, dtype=dt))]  # fmt: skip
        diagonal_ssm(*parts).sum().backward()
        u = torch.randn(2, 5, 4, dtype=dt, requires_grad=True)
        y = selective_scan(u, torch.rand(2, 5, 4, dtype=dt), -torch.rand(4, 3, dtype=dt),
                           torch.randn(2, 5, 1, 3, dtype=dt), torch.randn(2, 5, 1, 3, dtype=dt))
        y.sum().backward()
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"ssmcompile: scan kernels ready ({warm():.1f} s)")
