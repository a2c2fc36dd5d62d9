"""Char-level linear-attention LM: key dimension d_k 64 → 16 during training, against full,
from scratch at 16 and post-training reduction / pruning at 16.

    .venv/bin/python tools/bench_linear_attention.py            # the reported run
    .venv/bin/python tools/bench_linear_attention.py --quick    # smoke test (seconds)

Corpus, optimizer, schedule and timing as in ``tools/bench_mamba.py`` (whose helpers this
reuses). Arms, same architecture, data stream and step count:

- ``full``: d_k = K0 throughout; ``scratch``: d_k = r throughout (fresh init, query scale
  r^-0.5);
- ``reduced``: d_k = K0 until the event, then every layer is calibrated on a training batch and
  reduced to r (``reduce_key_dim``: balanced key/query Gramians, written the layer's exact way),
  training continues with fresh AdamW state for the rebuilt layers;
- after training, the full model cut to r without fine-tuning: ``posthoc`` (the same balanced
  reduction) and ``prune`` (keep the r channels per head with the largest
  √(E q_i² · E k_i²) on the calibration batch: a magnitude baseline).

Reported: validation perplexity, median step time (interleaved full vs reduced, see
bench_mamba), recurrent-state floats per sequence (S: layers·heads·d_k·d_v, plus conv windows)
— the decoding memory, constant per token — and the thread count.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mamba import (  # noqa: E402
    evaluate,
    interleaved_step_ms,
    lr_at,
    make_optimizer,
    swap_in_optimizer,
)

from ssmcompile.attention import (  # noqa: E402
    AttentionLMConfig,
    KeyMaps,
    KeyReductionOptions,
    LinearAttentionConfig,
    LinearAttentionLM,
    apply_key_maps,
    reduce_key_dim,
    with_key_dim,
)
from ssmcompile.numerics import energy_kept  # noqa: E402
from ssmcompile.selective import Corpus, stdlib_docstrings  # noqa: E402
from ssmcompile.selective.lm import CORPUS_MODULES  # noqa: E402


def layer_inputs(model: LinearAttentionLM, ids: torch.Tensor) -> list[torch.Tensor]:
    """The input of every attention layer on ``ids`` (batch, L, d_model each)."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [layer.attn.register_forward_pre_hook(
        lambda _m, a, i=i: seen.setdefault(i, a[0].detach())) for i, layer in
        enumerate(model.layers)]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(model.layers))]


@torch.no_grad()
def reduce_model(model: LinearAttentionLM, calib: torch.Tensor, rank: int, multiple: int,
                 opt=None) -> dict:
    t0 = time.perf_counter()
    kept = []
    for layer, u in zip(model.layers, layer_inputs(model, calib), strict=True):
        new, result = reduce_key_dim(layer.attn, u, rank=rank,
                                     options=KeyReductionOptions(multiple=multiple))
        kept.append(float(energy_kept(result.hsv, result.rank).min()))
        if opt is not None:
            swap_in_optimizer(opt, layer.attn, new)
        layer.attn = new
    return {"event_s": time.perf_counter() - t0, "energy_kept": kept}


@torch.no_grad()
def prune_model(model: LinearAttentionLM, calib: torch.Tensor, rank: int) -> None:
    """Magnitude baseline: per head the r channels with the largest √(E q_i² E k_i²)."""
    for layer, u in zip(model.layers, layer_inputs(model, calib), strict=True):
        f = layer.attn.features(u)
        score = ((f.q**2).mean((0, 2)) * (f.k**2).mean((0, 2))).sqrt()  # (heads, d_k)
        idx = score.topk(rank, dim=-1).indices.sort(-1).values
        M = torch.eye(score.shape[-1], dtype=torch.float64)[idx]
        method = "select" if layer.attn.config.conv_size else "fold"
        layer.attn = apply_key_maps(layer.attn, KeyMaps(method, M, M, idx))


def build(args: argparse.Namespace, vocab: int, key_dim: int) -> LinearAttentionLM:
    attn = LinearAttentionConfig(args.d_model, heads=args.heads, key_dim=args.key_dim,
                                 value_dim=args.value_dim, kind=args.kind,
                                 conv_size=args.conv, chunk_size=args.chunk)
    cfg = AttentionLMConfig(vocab, attn, n_layers=args.layers)
    return LinearAttentionLM(with_key_dim(cfg, key_dim) if key_dim != args.key_dim else cfg)


def train(arm: str, corpus: Corpus, args: argparse.Namespace) -> tuple[dict, LinearAttentionLM]:
    torch.manual_seed(args.seed)
    model = build(args, corpus.vocab_size, args.rank if arm == "scratch" else args.key_dim)
    model.train()
    opt = make_optimizer(model, args)
    data = torch.Generator().manual_seed(args.seed + 1)
    event_step = int(args.event_frac * args.steps) if arm == "reduced" else -1
    val = Corpus.windows(corpus.val, args.eval_windows, args.length)
    before, after, event = [], [], {}
    t_start = time.perf_counter()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        if step == event_step:
            calib = Corpus.batch(corpus.train, args.calib_batch, args.length, data)[:, :-1]
            probe = val[: args.batch, :-1]
            with torch.no_grad():
                y0 = model(probe)
            event = reduce_model(model, calib, args.rank, args.multiple, opt)
            with torch.no_grad():
                event["logit_rel_change"] = float((model(probe) - y0).norm() / y0.norm())
        w = Corpus.batch(corpus.train, args.batch, args.length, data)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        (before if step < event_step or event_step < 0 else after).append(
            time.perf_counter() - t0)
    nats = evaluate(model.eval(), val, args.batch)
    return {"arm": arm, "key_dims": model.key_dims, "val_ppl": math.exp(nats),
            "wall_s": time.perf_counter() - t_start,
            "step_ms_before": 1e3 * statistics.median(before) if before else None,
            "step_ms_after": 1e3 * statistics.median(after) if after else None,
            "state_floats": model.state_floats_per_sequence(), **event}, model


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    p.add_argument("--kind", choices=("retnet", "gla", "gated_delta"), default="gla")
    p.add_argument("--conv", type=int, default=0, help="short-conv taps (0: none, fla's GLA)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--key-dim", type=int, default=64)
    p.add_argument("--value-dim", type=int, default=32)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--multiple", type=int, default=8)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--event-frac", type=float, default=0.1)
    p.add_argument("--calib-batch", type=int, default=8)
    p.add_argument("--eval-windows", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default="full,scratch,reduced")
    p.add_argument("--timing-steps", type=int, default=12)
    args = p.parse_args(argv)
    if args.quick:
        args.d_model, args.layers, args.key_dim, args.value_dim, args.rank = 16, 1, 16, 8, 4
        args.multiple, args.chunk = 4, 16
        args.steps, args.batch, args.length, args.calib_batch, args.eval_windows = 6, 2, 32, 2, 4
        args.event_frac, args.timing_steps = 0.5, 2
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    corpus = Corpus.from_text(stdlib_docstrings(CORPUS_MODULES[:3] if args.quick
                                                else CORPUS_MODULES))
    th = f"[threads={torch.get_num_threads()}]"
    print(f"{th} torch={torch.__version__}; corpus {corpus.chars} chars (sha256 "
          f"{corpus.digest}); {args.kind}, conv={args.conv}, d_model={args.d_model}, "
          f"layers={args.layers}, heads={args.heads}, d_k {args.key_dim} → {args.rank}, "
          f"d_v={args.value_dim}; steps={args.steps}, batch={args.batch}, L={args.length}")
    results, models = {}, {}
    for arm in args.arms.split(","):
        results[arm], models[arm] = train(arm, corpus, args)
        r = results[arm]
        ms = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        print(f"{th} {arm:8s} d_k={r['key_dims']} val ppl {r['val_ppl']:.3f}  state "
              f"{r['state_floats']} floats/seq  step ms {ms(r['step_ms_before'])} → "
              f"{ms(r['step_ms_after'])}" + (f"  event {r['event_s']:.2f}s, energy kept "
                                          f"{min(r['energy_kept']):.3f}, logits Δ "
                                          f"{r['logit_rel_change']:.3f}" if "event_s" in r
                                          else ""), flush=True)
    if "full" in models:
        val = Corpus.windows(corpus.val, args.eval_windows, args.length)
        calib = Corpus.batch(corpus.train, args.calib_batch, args.length,
                             torch.Generator().manual_seed(args.seed + 3))[:, :-1]
        for arm, cut in (("posthoc", lambda m: reduce_model(m, calib, args.rank, args.multiple)),
                         ("prune", lambda m: prune_model(m, calib, args.rank))):
            m = copy.deepcopy(models["full"]).eval()
            cut(m)
            results[arm] = {"arm": arm, "key_dims": m.key_dims,
                            "val_ppl": math.exp(evaluate(m, val, args.batch)),
                            "state_floats": m.state_floats_per_sequence()}
            print(f"{th} {arm:8s} d_k={m.key_dims} val ppl {results[arm]['val_ppl']:.3f} "
                  f"(full model cut after training, no fine-tuning)")
    summary: dict = {}
    if {"full", "reduced"} <= models.keys():
        timing = interleaved_step_ms({k: models[k] for k in ("full", "reduced")}, corpus, args)
        summary = {"interleaved_step_ms": timing,
                   "ppl_reduced_over_full": results["reduced"]["val_ppl"]
                   / results["full"]["val_ppl"],
                   "state_ratio": results["reduced"]["state_floats"]
                   / results["full"]["state_floats"]}
        print(f"{th} interleaved step ms full {timing['full']:.1f} vs reduced "
              f"{timing['reduced']:.1f}; ppl reduced/full "
              f"{summary['ppl_reduced_over_full']:.4f}; state reduced/full "
              f"{summary['state_ratio']:.3f}")
    out = {"threads": torch.get_num_threads(), "args": vars(args), "results": results,
           **summary}
    print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    main()
