"""Time forward+backward of the scan ops against the sequential loop and inductor.

Contenders per (kind, n):
  op        the custom op (``torch.ops.ssmcompile.*``, chunked eager kernel), the default path;
  loop      the readable reference twin (one Python step per time step, autograd backward);
  compiled  a functional pure-torch chunked formulation under ``torch.compile`` (inductor),
            diagonal only; its compile time is reported separately and not in the timing.

Usage: .venv/bin/python tools/bench_scan.py [--threads 1] [--batch 16] [--length 1024]
       [--n 16 256] [--repeats 3] [--no-compile] [--no-dense]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from ssmcompile.ops import (
    dense_scan,
    dense_scan_reference,
    diagonal_scan_real,
    diagonal_scan_reference,
)


def chunked_pure(lr, li, br, bi, T: int = 32):
    """Functional chunked diagonal scan (no in-place writes) for inductor; (B, L, n) layout."""
    B, L, n = br.shape
    C = -(-L // T)
    pad = C * T - L
    br = torch.nn.functional.pad(br, (0, 0, 0, pad)).view(B, C, T, n)
    bi = torch.nn.functional.pad(bi, (0, 0, 0, pad)).view(B, C, T, n)
    xr, xi = [br[:, :, 0]], [bi[:, :, 0]]
    for t in range(1, T):
        pr, pi = xr[-1], xi[-1]
        xr.append(br[:, :, t] + lr * pr - li * pi)
        xi.append(bi[:, :, t] + lr * pi + li * pr)
    yr, yi = torch.stack(xr, 2), torch.stack(xi, 2)
    p = torch.complex(lr, li).unsqueeze(0).expand(T, -1).cumprod(0)
    pr, pi = p.real, p.imag
    hr, hi = [torch.zeros_like(yr[:, 0, 0])], [torch.zeros_like(yi[:, 0, 0])]
    for c in range(C - 1):
        er, ei = yr[:, c, -1], yi[:, c, -1]
        hr.append(er + pr[-1] * hr[-1] - pi[-1] * hi[-1])
        hi.append(ei + pr[-1] * hi[-1] + pi[-1] * hr[-2])
    hr, hi = torch.stack(hr, 1)[:, :, None], torch.stack(hi, 1)[:, :, None]
    yr = yr + pr * hr - pi * hi
    yi = yi + pr * hi + pi * hr
    return yr.reshape(B, C * T, n)[:, :L], yi.reshape(B, C * T, n)[:, :L]


def _time(step, repeats: int, warm_up: bool = True) -> float:
    if warm_up:  # allocator, lazy init; the loop has neither and costs seconds a run
        step()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _diag_steps(batch, length, n, dtype, compiled):
    g = torch.Generator().manual_seed(0)
    lam = torch.polar(
        0.9 + 0.099 * torch.rand(n, generator=g, dtype=dtype),
        6.28 * torch.rand(n, generator=g, dtype=dtype),
    )
    parts = [lam.real, lam.imag] + [
        torch.randn(batch, length, n, generator=g, dtype=dtype) for _ in range(2)
    ]
    w_re, w_im = (torch.randn(batch, length, n, generator=g, dtype=dtype) for _ in range(2))

    def run_real(fn):
        args = [p.detach().clone().requires_grad_() for p in parts]
        x_re, x_im = fn(*args)
        (x_re * w_re + x_im * w_im).sum().backward()

    def run_loop():
        lam_c = torch.complex(parts[0], parts[1]).requires_grad_()
        bu_c = torch.complex(parts[2], parts[3]).requires_grad_()
        x = diagonal_scan_reference(lam_c, bu_c)
        (x.real * w_re + x.imag * w_im).sum().backward()

    steps = {"op": lambda: run_real(diagonal_scan_real), "loop": run_loop}
    if compiled:
        fn = torch.compile(chunked_pure, backend="inductor", dynamic=False)
        t0 = time.perf_counter()
        run_real(fn)
        print(f"    inductor compile (fwd+bwd): {time.perf_counter() - t0:.1f} s")
        steps["compiled"] = lambda: run_real(fn)
    return steps


def _dense_steps(batch, length, n, dtype):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(n, n, generator=g, dtype=dtype)
    A = A * (0.95 / torch.linalg.matrix_norm(A, 2))
    bu = torch.randn(batch, length, n, generator=g, dtype=dtype)
    w = torch.randn(batch, length, n, generator=g, dtype=dtype)

    def run(fn):
        A_, bu_ = A.clone().requires_grad_(), bu.clone().requires_grad_()
        (fn(A_, bu_) * w).sum().backward()

    return {"op": lambda: run(dense_scan), "loop": lambda: run(dense_scan_reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--n", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-dense", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, dtype={args.dtype}, "
        f"batch={args.batch}, length={args.length}, fwd+bwd, best of {args.repeats} (loop: 1 run)"
    )
    for n in args.n:
        kinds = [
            (
                "diagonal",
                lambda n=n: _diag_steps(args.batch, args.length, n, dtype, not args.no_compile),
            )
        ]
        if not args.no_dense:
            kinds.append(("dense", lambda n=n: _dense_steps(args.batch, args.length, n, dtype)))
        for kind, make in kinds:
            print(f"  {kind} n={n}")
            times = {
                name: _time(step, 1 if name == "loop" else args.repeats, name != "loop")
                for name, step in make().items()
            }
            for name, ms in times.items():
                print(f"    {name:9s} {ms:9.1f} ms   loop/{name} = {times['loop'] / ms:6.2f}x")


if __name__ == "__main__":
    main()
