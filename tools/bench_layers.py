"""Forward+backward time of the paper's deep LRU model at a large vs a small state size.

    .venv/bin/python tools/bench_layers.py                 # 4 blocks, H=128, L=1024, batch 16
    .venv/bin/python tools/bench_layers.py --length 128 --batch 4 --repeats 2   # quick run

Prints one line per state size and the ratio t(n_large)/t(n_small); also the thread count and
which scan implementation ``ssmcompile.ops`` provides, since both move the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssmcompile import ops  # noqa: E402
from ssmcompile.layers import ModelSpec, build_model  # noqa: E402


def time_fwd_bwd(n: int, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    spec = ModelSpec(
        layer="lru",
        d_model=args.d_model,
        state_dims=(n,) * args.blocks,
        d_output=10,
        d_input=args.d_input,
    )
    model = build_model(spec).train()
    u = torch.randn(args.batch, args.length, args.d_input)
    target = torch.randint(0, 10, (args.batch,))
    times = []
    for i in range(args.warmup + args.repeats):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(u), target)
        loss.backward()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--d-input", type=int, default=3)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--states", type=int, nargs=2, default=(256, 16), metavar=("LARGE", "SMALL"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    scan = ops.diagonal_scan_real
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"scan={scan.__module__}.{getattr(scan, '__qualname__', scan)}"
    )
    print(
        f"deep LRU: blocks={args.blocks} H={args.d_model} L={args.length} batch={args.batch}, "
        f"forward+backward, median of {args.repeats} after {args.warmup} warm-up"
    )
    large, small = args.states
    t_large = time_fwd_bwd(large, args)
    print(f"n={large:4d}: {t_large:.3f} s")
    t_small = time_fwd_bwd(small, args)
    print(f"n={small:4d}: {t_small:.3f} s")
    print(f"ratio t(n={large}) / t(n={small}) = {t_large / t_small:.2f}")


if __name__ == "__main__":
    main()
