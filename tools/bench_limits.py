"""The scan ops against the machine's limits: memory-bandwidth / FLOP floors, engines, threads.

    .venv/bin/python tools/bench_limits.py                    # full table (~5-10 min, 2 cores)
    .venv/bin/python tools/bench_limits.py --quick            # smoke test (seconds)
    .venv/bin/python tools/bench_limits.py --json out.json --repeats 9
    NUMBA_THREADING_LAYER=omp .venv/bin/python tools/bench_limits.py   # compare threading layers

First the limits: copy bandwidth (256 MiB numpy and torch copies, bytes read + written) and the
float32 4096² matmul peak, both on 1 thread. Then per case (scan kind, shape, float32), per
condition (threads 1 / 2; ``idle`` or ``busy``: a busy-loop subprocess keeps one core busy) and
per engine (``SSMCOMPILE_SCAN_ENGINE`` = torch | numba, set per call): forward (the op) and
backward (``torch.autograd.grad`` of a fresh forward) as the median of repeats interleaved across
thread counts and passes (engines in turn), with the process CPU time of the same calls.
Floors: diagonal forward moves 4·B·L·n numbers (bu and x, real and imaginary),
backward 6·B·L·n (x, g, ∂bu); dense forward 2·B·L·n numbers and 2·B·L·n² FLOPs, backward
3·B·L·n and 4·B·L·n² (adjoint + ∂A); the floor is the larger of bytes / copy bandwidth and
FLOPs / matmul peak. Load averages are printed per condition: the machine is shared, so read
every figure with them.

``--cold`` (on by default; ``--no-cold`` skips it) times the first call in fresh subprocesses:
with an empty numba cache (compile) and with the cache this checkout keeps (warm start).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ssmcompile.ops  # noqa: E402,F401  (registers the ops)
from ssmcompile.ops import _engine  # noqa: E402

DIAG = [(50, 784, 256), (50, 784, 47), (50, 784, 12), (8, 1024, 93)]
DENSE = [(50, 784, 12), (50, 784, 47), (8, 1024, 93), (8, 1024, 256)]
ENGINES = ("torch", "numba")
# Untimed rounds first: the scan thread guard (ops.threads) tries one thread and several twice
# per call site before it chooses; the table is about the steady state.
WARMUP_ROUNDS = 3


def _median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def limits(repeats: int) -> dict:
    """Copy bandwidth (GB/s, read + written; 1 and 2 threads) and float32 matmul peak
    (GFLOP/s, 1 thread)."""
    torch.set_num_threads(1)
    a = np.ones(256 * 2**20 // 4, np.float32)
    b = np.empty_like(a)
    np_bw = 2 * a.nbytes / _median_time(lambda: np.copyto(b, a), repeats) / 1e9
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch_bw = 2 * a.nbytes / _median_time(lambda: tb.copy_(ta), repeats) / 1e9
    # What 2 cores can stream together bounds what 2 threads can gain on a memory-bound scan.
    torch.set_num_threads(2)
    torch_bw2 = 2 * a.nbytes / _median_time(lambda: tb.copy_(ta), repeats) / 1e9
    torch.set_num_threads(1)
    m = torch.randn(4096, 4096)
    peak = 2 * 4096**3 / _median_time(lambda: m @ m, max(3, repeats // 2)) / 1e9
    return {"copy_GBps_numpy": np_bw, "copy_GBps_torch": torch_bw,
            "copy_GBps_torch_2threads": torch_bw2, "matmul_GFLOPs": peak}


def _diag_case(B, L, n):
    g = torch.Generator().manual_seed(0)
    lam = torch.polar(0.9 + 0.099 * torch.rand(n, generator=g), 6.28 * torch.rand(n, generator=g))
    bu = [torch.randn(B, L, n, generator=g) for _ in range(2)]
    gr = [torch.randn(B, L, n, generator=g) for _ in range(2)]
    params = [lam.real.contiguous().requires_grad_(), lam.imag.contiguous().requires_grad_()]
    leaves = params + [t.requires_grad_() for t in bu]

    def fwd():
        with torch.no_grad():
            torch.ops.ssmcompile.diagonal_scan(*leaves)

    def bwd_prepare():
        return torch.ops.ssmcompile.diagonal_scan(*leaves)

    def bwd(out):
        torch.autograd.grad(out, leaves, gr)

    return fwd, bwd_prepare, bwd, 4 * B * L * n * 4, 6 * B * L * n * 4, 0, 0


def _dense_case(B, L, n):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(n, n, generator=g)
    A = (A * (0.95 / torch.linalg.matrix_norm(A, 2))).requires_grad_()
    bu = torch.randn(B, L, n, generator=g).requires_grad_()
    gx = torch.randn(B, L, n, generator=g)

    def fwd():
        with torch.no_grad():
            torch.ops.ssmcompile.dense_scan(A, bu)

    def bwd(out):
        torch.autograd.grad(out, (A, bu), gx)

    flops = 2 * B * L * n * n
    return (
        fwd,
        lambda: torch.ops.ssmcompile.dense_scan(A, bu),
        bwd,
        8 * B * L * n,
        12 * B * L * n,
        flops,
        2 * flops,
    )


def _time_condition(case, threads_list, engines, repeats):
    """{(engine, threads, 'fwd'|'bwd'): (median wall s, median cpu s)} interleaved."""
    fwd, prep, bwd, *_ = case
    samples: dict = {}

    def one(engine, threads, which):
        os.environ[_engine.ENV] = engine
        torch.set_num_threads(threads)
        out = prep() if which == "bwd" else None
        t0, c0 = time.perf_counter(), time.process_time()
        fwd() if which == "fwd" else bwd(out)
        samples.setdefault((engine, threads, which), []).append(
            (time.perf_counter() - t0, time.process_time() - c0)
        )

    # Engines run one after the other, thread counts and passes interleaved within: on this VM
    # the torch engine's 4 KiB-page churn makes the next huge-page faults stall (tens to hundreds
    # of ms of system time), which would otherwise be billed to the numba engine.
    for engine in engines:
        keys = [(engine, t, w) for w in ("fwd", "bwd") for t in threads_list]
        for _ in range(WARMUP_ROUNDS):  # compile, allocator, the scan thread guard's trials
            for key in keys:
                one(*key)
        for key in keys:
            samples.pop(key)
        for _ in range(repeats):
            for key in keys:
                one(*key)
    return {
        k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
        for k, v in samples.items()
    }


class _Busy:
    """A busy-loop subprocess keeping one core busy while the block runs."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def cold_start() -> dict:
    """First-call wall times in fresh processes: empty numba cache vs this checkout's cache."""
    code = (
        "import time; t0 = time.perf_counter(); import torch, ssmcompile.ops as o;"
        "t1 = time.perf_counter(); torch.set_num_threads(2); r = {'import_s': t1 - t0}\n"
        "for dt in (torch.float32, torch.float64):\n"
        "  for B, L, n in ((2, 64, 8), (50, 784, 47)):\n"
        "    lam = torch.polar(torch.full((n,), 0.9, dtype=dt), torch.ones(n, dtype=dt))\n"
        "    bu = torch.randn(B, L, n, dtype=lam.dtype, requires_grad=True)\n"
        "    A = torch.eye(n, dtype=dt).mul(0.5).requires_grad_()\n"
        "    t = time.perf_counter(); x = o.diagonal_scan(lam, bu); x.abs().sum().backward()\n"
        "    o.dense_scan(A, bu.real.detach()).sum().backward()\n"
        "    r[f'first_{str(dt)[6:]}_{B}x{L}x{n}_s'] = time.perf_counter() - t\n"
        "print(repr(r))"
    )
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, env in (("cold", {"NUMBA_CACHE_DIR": tmp}), ("warm", {})):
            res = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, **env, _engine.ENV: "numba"},
                capture_output=True,
                text=True,
                check=True,
            )
            out[label] = eval(res.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    return out


def _row(kind, shape, cond, load, res, floors, lim, engines, threads_list):
    rows = []
    for which, floor_bytes, floor_flops in (("fwd", *floors[0::2]), ("bwd", *floors[1::2])):
        floor = max(
            floor_bytes / (lim["copy_GBps_numpy"] * 1e9), floor_flops / (lim["matmul_GFLOPs"] * 1e9)
        )
        for e in engines:
            for t in threads_list:
                wall, cpu = res[(e, t, which)]
                rows.append(
                    {
                        "kind": kind,
                        "shape": "x".join(map(str, shape)),
                        "cond": cond,
                        "load": load,
                        "which": which,
                        "engine": e,
                        "threads": t,
                        "ms": wall * 1e3,
                        "cpu_ms": cpu * 1e3,
                        "floor_ms": floor * 1e3,
                        "x_floor": wall / floor,
                        "GBps": floor_bytes / wall / 1e9,
                        "GFLOPs": floor_flops / wall / 1e9,
                    }
                )
    return rows


def _numba_version() -> str:
    try:
        import numba

        return numba.__version__
    except ImportError:
        return "(not installed)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats")
    p.add_argument("--no-dense", action="store_true")
    p.add_argument("--no-busy", action="store_true")
    p.add_argument("--no-cold", action="store_true")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    diag, dense, repeats = DIAG, DENSE, args.repeats
    if args.quick:
        diag, dense, repeats = [(4, 128, 16)], [(4, 128, 8)], 2
    lim = limits(3 if args.quick else 5)
    print(
        f"copy {lim['copy_GBps_numpy']:.1f} GB/s (numpy), {lim['copy_GBps_torch']:.1f} GB/s "
        f"(torch), {lim['copy_GBps_torch_2threads']:.1f} GB/s (torch, 2 threads); float32 "
        f"matmul {lim['matmul_GFLOPs']:.0f} GFLOP/s; 1 thread unless said"
    )
    cases = [("diagonal", s, _diag_case) for s in diag]
    if not args.no_dense:
        cases += [("dense", s, _dense_case) for s in dense]
    conds = ["idle"] + ([] if args.no_busy else ["busy"])
    rows = []
    for cond in conds:
        for kind, shape, make in cases:
            case = make(*shape)
            if cond == "busy":
                with _Busy():
                    load = os.getloadavg()[0]
                    res = _time_condition(case, args.threads, ENGINES, repeats)
            else:
                load = os.getloadavg()[0]
                res = _time_condition(case, args.threads, ENGINES, repeats)
            rows += _row(kind, shape, cond, load, res, case[3:], lim, ENGINES, args.threads)
            del case
    os.environ.pop(_engine.ENV, None)
    layer = _numba_version()
    print(f"\ntorch {torch.__version__}, numba {layer}, numba kernels: {bool(_engine._load())}")
    print(
        "\n| kind | shape B×L×n | cond (load1) | pass | engine | threads | ms | cpu ms "
        "| floor ms | × floor | GB/s | GFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['shape']} | {r['cond']} ({r['load']:.1f}) | {r['which']} | "
            f"{r['engine']} | {r['threads']} | {r['ms']:.2f} | {r['cpu_ms']:.2f} | "
            f"{r['floor_ms']:.2f} | {r['x_floor']:.1f} | {r['GBps']:.1f} | {r['GFLOPs']:.1f} |"
        )
    cold = None if args.no_cold or args.quick else cold_start()
    if cold:
        print("\nfirst call (import + fwd + bwd of diagonal and dense), seconds:")
        for label, r in cold.items():
            print(f"  {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    if args.json:
        args.json.write_text(
            json.dumps({"limits": lim, "numba": layer, "rows": rows, "cold": cold}, indent=1)
        )


if __name__ == "__main__":
    main()
