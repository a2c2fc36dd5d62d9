"""Parameter count and forward / forward+backward time of a deep model before and after
reduction, measured side by side in one run (ratios, not absolute times, are the figures).

    python tools/bench_reduced_model.py --kind lru --n 256 --rank 16 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

import ssmcompile
from ssmcompile.layers import ModelSpec, build_model


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="lru", choices=["lru", "s5", "s4d", "dense"])
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec = ModelSpec(layer=a.kind, d_input=1, d_model=a.width, state_dims=(a.n,) * a.blocks,
                     d_output=10)
    full = build_model(spec)
    x = torch.randn(a.batch, a.length, 1)
    t0 = time.perf_counter()
    small, _ = ssmcompile.reduce(full, x[:2, :128], rank=a.rank, verify=False)
    t_reduce = time.perf_counter() - t0

    def fwd(m):
        return lambda: m(x)

    def fwd_bwd(m):
        def run():
            m.zero_grad(set_to_none=True)
            m(x).sum().backward()
        return run

    rows = []
    for name, m in (("full", full), ("reduced", small)):
        m.train()
        with torch.no_grad():
            tf = timeit(fwd(m), a.repeats)
        tb = timeit(fwd_bwd(m), a.repeats)
        ssm = sum(p.numel() for b in m.blocks for p in b.ssm.parameters())
        rows.append((name, m.state_dims[0], sum(p.numel() for p in m.parameters()), ssm, tf, tb))
    print(f"kind={a.kind} blocks={a.blocks} H={a.width} L={a.length} batch={a.batch} "
          f"threads={torch.get_num_threads()} reduce() took {t_reduce:.2f}s")
    print(f"{'model':8} {'n':>5} {'params':>9} {'ssm params':>10} {'fwd s':>8} {'fwd+bwd s':>10}")
    for r in rows:
        print(f"{r[0]:8} {r[1]:5d} {r[2]:9d} {r[3]:10d} {r[4]:8.3f} {r[5]:10.3f}")
    f, s = rows
    print(f"ratios full/reduced: params {f[2] / s[2]:.2f}x  ssm params {f[3] / s[3]:.2f}x  "
          f"fwd {f[4] / s[4]:.2f}x  fwd+bwd {f[5] / s[5]:.2f}x  (state dim {f[1] / s[1]:.0f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
