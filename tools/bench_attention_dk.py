"""How a linear-attention LM's cost scales with its key dimension d_k: training-step time, the
attention mixers' own forward + backward time, and recurrent-state floats per sequence.

    .venv/bin/python tools/bench_attention_dk.py                # d_k 8 … 128, ~2 min
    .venv/bin/python tools/bench_attention_dk.py --quick        # smoke test

Models differ only in d_k (same d_model, heads, d_v, layers); each is timed in turns with the
others, step by step (medians of ``--repeats``), so a change in machine load hits all alike.
The mixer time runs every layer's ``LinearAttention`` alone on that layer's recorded input.
Reported with each figure's ratio to the smallest d_k, and a least-squares slope of time
against d_k (time ≈ a + b·d_k: ``a`` is the part that does not shrink with d_k).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssmcompile.attention import (  # noqa: E402
    AttentionLMConfig,
    LinearAttentionConfig,
    LinearAttentionLM,
)


def _lm(a: argparse.Namespace, key_dim: int) -> LinearAttentionLM:
    torch.manual_seed(0)
    attn = LinearAttentionConfig(a.d_model, heads=a.heads, key_dim=key_dim, value_dim=a.value_dim,
                                 kind=a.kind, chunk_size=a.chunk)  # fmt: skip
    return LinearAttentionLM(AttentionLMConfig(a.vocab, attn, n_layers=a.layers)).train()


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of the least-squares line y = a + b·x."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--key-dims", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--kind", choices=("retnet", "gla", "gated_delta"), default="gla")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--value-dim", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--vocab", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if a.quick:
        a.key_dims, a.d_model, a.length, a.repeats, a.chunk = [4, 8], 16, 32, 2, 8
    torch.set_num_threads(a.threads)
    ids = torch.randint(0, a.vocab, (a.batch, a.length + 1), generator=torch.Generator()
                        .manual_seed(1))  # fmt: skip
    runs = {}
    for dk in a.key_dims:
        m = _lm(a, dk)
        opt = torch.optim.AdamW(m.parameters(), 1e-3)
        seen = []
        hooks = [layer.attn.register_forward_pre_hook(lambda _m, x, s=seen: s.append(x[0].detach()))
                 for layer in m.layers]
        with torch.no_grad():
            m(ids[:, :-1])
        for h in hooks:
            h.remove()
        runs[dk] = (m, opt, seen)

    def step(dk: int) -> None:
        m, opt, _ = runs[dk]
        loss = F.cross_entropy(m(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def mixers(dk: int) -> None:
        m, _, inputs = runs[dk]
        for layer, x in zip(m.layers, inputs, strict=True):
            layer.attn(x.requires_grad_()).square().sum().backward()

    times: dict = {}
    for rep in range(a.repeats + 1):  # the first round warms up, untimed
        for dk in a.key_dims:
            for name, fn in (("step", step), ("mixers", mixers)):
                t0 = time.perf_counter()
                fn(dk)
                if rep:
                    times.setdefault((name, dk), []).append(time.perf_counter() - t0)
    rows = []
    for dk in a.key_dims:
        rows.append({"d_k": dk, "step_ms": 1e3 * statistics.median(times[("step", dk)]),
                     "mixers_ms": 1e3 * statistics.median(times[("mixers", dk)]),
                     "state_floats": runs[dk][0].state_floats_per_sequence()})  # fmt: skip
    base = rows[0]
    print(f"{a.kind}, d_model {a.d_model}, heads {a.heads}, d_v {a.value_dim}, layers "
          f"{a.layers}, batch {a.batch}, L {a.length}, {torch.get_num_threads()} thread(s), "
          f"load {os.getloadavg()[0]:.1f}")
    print("| d_k | step ms (× smallest) | mixers fwd+bwd ms (×) | state floats/seq (×) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['d_k']} | {r['step_ms']:.1f} ({r['step_ms'] / base['step_ms']:.2f}×) | "
              f"{r['mixers_ms']:.1f} ({r['mixers_ms'] / base['mixers_ms']:.2f}×) | "
              f"{r['state_floats']} ({r['state_floats'] / base['state_floats']:.2f}×) |")
    dks = [float(r["d_k"]) for r in rows]
    fits = {k: _fit(dks, [r[k] for r in rows]) for k in ("step_ms", "mixers_ms")}
    for k, (a0, b) in fits.items():
        print(f"{k} ≈ {a0:.1f} + {b:.3f}·d_k (at the largest d_k, {b * dks[-1]:.1f} ms of it "
              f"scales with d_k)")
    out = {"rows": rows, "fits": fits, "kind": a.kind, "threads": torch.get_num_threads()}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
