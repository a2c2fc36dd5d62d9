"""Use the ssmcompile pipeline inside your own training loop (no ssmcompile trainer).

A small LRU classifier learns a synthetic task; after 30 % of the steps the pipeline reduces
every block by the paper's energy rule, the model is swapped, and training continues at the
smaller size. Run: ``python examples/pipeline_in_own_loop.py [--steps 120]``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import ssmcompile
from ssmcompile.layers import ModelSpec, build_model


def make_batch(gen: torch.Generator, batch: int = 32, length: int = 64):
    """Classify which of 4 frequencies a noisy sinusoid has (a task a tiny SSM can learn)."""
    labels = torch.randint(0, 4, (batch,), generator=gen)
    t = torch.arange(length, dtype=torch.float32)
    freq = (labels.float() + 1) * 0.15
    phase = torch.rand(batch, 1, generator=gen) * 6.28
    x = torch.sin(freq[:, None] * t[None] + phase) + 0.3 * torch.randn(batch, length, generator=gen)
    return x[..., None], labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--tau", type=float, default=0.05)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    spec = ModelSpec(layer="lru", d_input=1, d_model=32, state_dims=(64, 64), d_output=4,
                     norm="layer")
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    reduce_at = int(0.3 * args.steps)
    start = time.perf_counter()
    for step in range(args.steps):
        if step == reduce_at:
            probe, _ = make_batch(gen, batch=8)
            # The pipeline returns a new model; ours is untouched until we swap it in.
            model, report, _ = ssmcompile.run_pipeline(
                model, probe, f"hankel-analysis,balanced-truncation{{tau={args.tau}}},verify")
            print(report)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)  # fresh state, new shapes
        x, y = make_batch(gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  dims {model.state_dims}")
    model.eval()
    with torch.no_grad():
        x, y = make_batch(gen, batch=256)
        acc = (model(x).argmax(-1) == y).float().mean().item()
    print(f"final dims {model.state_dims}  accuracy {acc:.3f}  "
          f"time {time.perf_counter() - start:.1f}s (1 thread)")
    return 0 if all(torch.isfinite(p).all() for p in model.parameters()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
