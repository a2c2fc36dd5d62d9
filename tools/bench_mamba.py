"""Char-level Mamba LM: in-training reduction d_state 128 → 12 vs full 128 vs from scratch at 12.

    .venv/bin/python tools/bench_mamba.py                  # the reported run (~8 min, 2 cores)
    .venv/bin/python tools/bench_mamba.py --quick          # smoke test (seconds)
    .venv/bin/python tools/bench_mamba.py --scan-only      # torch kernels vs numba scan timings
    .venv/bin/python tools/bench_mamba.py --compare-engines  # speed-up with torch and numba scans

Corpus: docstrings of a fixed list of Python standard-library modules
(``ssmcompile.selective.lm.stdlib_docstrings``; no download), last 10 % held out for validation.
Three arms train the same architecture with the same data stream, optimizer (AdamW, warm-up 10 %
then cosine) and step count:

- ``full``: d_state = N0 throughout;
- ``scratch``: d_state = r throughout (fresh init at the small size);
- ``reduced``: d_state = N0 until the event step, then each block is calibrated on a training
  batch, balanced-truncated to r and rebuilt through the adapters
  (calibrate → ``ssmcompile.numerics.truncate`` → rebuild_from_truncation); the optimizer keeps
  its groups and the global step (the LR schedule continues), the rebuilt blocks' parameters get
  fresh AdamW state.

Reported per arm: validation perplexity (exp of the mean per-character cross-entropy on fixed
windows), wall time, median training-step time before/after the event; for the event: its
cost, the calibrated energy kept and the relative change of validation logits it caused. Since
the machine's load drifts between arms, the final full and reduced models are also timed
taking turns step by step (``--timing-steps``), which is the speed-up to quote; with
``--compare-engines`` each model is timed with both scan engines (``SSMCOMPILE_SCAN_ENGINE``
torch / numba) in the same turns. ``--engine`` forces the engine of the whole run. The thread
count is printed with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssmcompile.adapters import adapter_for  # noqa: E402
from ssmcompile.numerics import energy_kept, truncate  # noqa: E402
from ssmcompile.selective import Corpus, LMConfig, SelectiveLM, stdlib_docstrings  # noqa: E402
from ssmcompile.selective.lm import CORPUS_MODULES  # noqa: E402

ENGINE_ENV = "SSMCOMPILE_SCAN_ENGINE"


def lr_at(step: int, args: argparse.Namespace) -> float:
    warm = max(1, int(0.1 * args.steps))
    if step < warm:
        return args.lr * (step + 1) / warm
    progress = (step - warm) / max(1, args.steps - warm)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "A_log" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.lr, betas=(0.9, 0.95))


def swap_in_optimizer(opt: torch.optim.Optimizer, old: torch.nn.Module, new: torch.nn.Module
                      ) -> None:
    """Replace ``old``'s parameters by ``new``'s (same names) inside the existing groups; the
    new ones start with fresh state (per-parameter step 0), the global step is untouched."""
    mapping = {id(p): q for (_, p), (_, q) in
               zip(sorted(old.named_parameters()), sorted(new.named_parameters()), strict=True)}
    for group in opt.param_groups:
        group["params"] = [mapping.get(id(p), p) for p in group["params"]]
    for p in old.parameters():
        opt.state.pop(p, None)


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: torch.Tensor, batch: int) -> float:
    """Mean per-character cross-entropy (nats) on fixed windows."""
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i: i + batch]
        logits = model(w[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum"))
        count += w[:, 1:].numel()
    return total / count


@torch.no_grad()
def reduce_in_training(model: SelectiveLM, opt, calib: torch.Tensor, rank: int,
                       probe: torch.Tensor) -> dict:
    t0 = time.perf_counter()
    before = model(probe)
    seen: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def hook(mod, args) -> None:  # returns None: the block's input is left as it is
            seen.setdefault(i, args[0].detach())
        return hook

    hooks = [layer.mixer.register_forward_pre_hook(keep(i)) for i, layer in
             enumerate(model.layers)]
    try:
        model(calib)
    finally:
        for h in hooks:
            h.remove()
    kept = []
    for i, layer in enumerate(model.layers):
        adapter = adapter_for(layer.mixer)
        system = adapter.calibrate(layer.mixer, seen[i])
        result = truncate(system, rank, clip=True)
        kept.append(float(energy_kept(result.hsv, result.rank).min()))
        new = adapter.rebuild_from_truncation(layer.mixer, result)
        swap_in_optimizer(opt, layer.mixer, new)
        layer.mixer = new
    after = model(probe)
    return {"event_s": time.perf_counter() - t0, "energy_kept": kept,
            "logit_rel_change": float((after - before).norm() / before.norm())}


def train(arm: str, corpus: Corpus, args: argparse.Namespace) -> tuple[dict, SelectiveLM]:
    start_dim = args.rank if arm == "scratch" else args.d_state
    torch.manual_seed(args.seed)
    cfg = LMConfig(corpus.vocab_size, args.d_model, args.layers, args.structure, start_dim,
                   head_dim=args.head_dim)
    model = SelectiveLM(cfg).train()
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
            event = reduce_in_training(model, opt, calib, args.rank, val[: args.batch, :-1])
        w = Corpus.batch(corpus.train, args.batch, args.length, data)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        (before if step < event_step or event_step < 0 else after).append(dt)
    wall = time.perf_counter() - t_start
    nats = evaluate(model, val, args.batch)
    return {"arm": arm, "dims": model.state_dims, "val_ppl": math.exp(nats),
            "val_bpc": nats / math.log(2), "wall_s": wall,
            "step_ms_before": 1e3 * statistics.median(before) if before else None,
            "step_ms_after": 1e3 * statistics.median(after) if after else None,
            **event}, model


def interleaved_step_ms(models: dict[str, SelectiveLM], corpus: Corpus,
                        args: argparse.Namespace, engines: tuple[str | None, ...] = (None,)
                        ) -> dict[str, float]:
    """Median training-step time of each model (on copies), the models taking turns step by
    step so that a change in machine load hits all of them alike. With ``engines`` each model
    also takes turns with each scan engine (keys ``model@engine``; None: as configured)."""
    import copy

    runs = {k: (copy.deepcopy(m).train(), None) for k, m in models.items()}
    runs = {k: (m, make_optimizer(m, args)) for k, (m, _) in runs.items()}
    data = torch.Generator().manual_seed(args.seed + 2)
    keys = [(k, e) for k in runs for e in engines]
    times: dict[tuple, list[float]] = {key: [] for key in keys}
    saved = os.environ.get(ENGINE_ENV)
    try:
        for _ in range(args.timing_steps):
            w = Corpus.batch(corpus.train, args.batch, args.length, data)
            for k, e in keys:
                if e is not None:
                    os.environ[ENGINE_ENV] = e
                m, opt = runs[k]
                t0 = time.perf_counter()
                loss = F.cross_entropy(m(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                times[(k, e)].append(time.perf_counter() - t0)
    finally:
        if saved is None:
            os.environ.pop(ENGINE_ENV, None)
        else:
            os.environ[ENGINE_ENV] = saved
    return {(k if e is None else f"{k}@{e}"): 1e3 * statistics.median(v[1:] or v)
            for (k, e), v in times.items()}


def scan_only(args: argparse.Namespace) -> None:
    from ssmcompile.selective import _fused, _kernel, _streaming

    kernels = {"chunked": (_kernel.selective_forward, _kernel.selective_backward),
               "fused": (_fused.fused_forward, _fused.fused_backward),
               "streaming": (_streaming.streaming_forward, _streaming.streaming_backward)}
    try:
        from ssmcompile.selective import _numba_selective as nb

        kernels["numba"] = (nb.numba_forward, nb.numba_backward)
    except ImportError:
        pass
    print(f"threads={torch.get_num_threads()}  forward+backward ms, best of 5 interleaved; "
          "A (D, N) or (D, 1) = Mamba-1 / Mamba-2 decay")
    for b, L, D, N, Na in [(8, 128, 64, 128, 128), (8, 128, 64, 128, 1), (8, 128, 64, 12, 12),
                           (8, 128, 64, 12, 1), (8, 128, 32, 64, 1), (8, 128, 16, 16, 16),
                           (1, 1024, 8, 4, 4)]:
        x = [torch.randn(b, L, D), torch.rand(b, L, D) * 0.1, -torch.rand(D, Na),
             torch.randn(b, L, 1, N), torch.randn(b, L, 1, N)]
        g = torch.randn(b, L, D)
        best = {k: math.inf for k in kernels}
        for fwd, bwd in kernels.values():  # first calls (numba compiles or loads) not timed
            fwd(*x)
            bwd(g, *x)
        for _ in range(5):  # kernels take turns, so a load change hits all of them
            for name, (fwd, bwd) in kernels.items():
                t0 = time.perf_counter()
                fwd(*x)
                bwd(g, *x)
                best[name] = min(best[name], time.perf_counter() - t0)
        row = [1e3 * v for v in best.values()]
        cells = "  ".join(f"{k} {v:7.1f}" for k, v in zip(kernels, row, strict=True))
        print(f"[threads={torch.get_num_threads()}] (batch, L, D, N)={(b, L, D, N)}, "
              f"A (D, {Na}): {cells}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    p.add_argument("--scan-only", action="store_true")
    p.add_argument("--engine", choices=("default", "torch", "numba"), default="default",
                   help="force the selective-scan engine (sets SSMCOMPILE_SCAN_ENGINE)")
    p.add_argument("--compare-engines", action="store_true",
                   help="time the final models with both scan engines, taking turns")
    p.add_argument("--structure", choices=("mamba1", "mamba2"), default="mamba2")
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--d-state", type=int, default=128)
    p.add_argument("--rank", type=int, default=12)
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
    p.add_argument("--timing-steps", type=int, default=12,
                   help="interleaved full/reduced steps timed after training")
    args = p.parse_args(argv)
    if args.quick:
        args.d_model, args.layers, args.head_dim, args.d_state, args.rank = 16, 1, 8, 16, 4
        args.steps, args.batch, args.length, args.calib_batch, args.eval_windows = 6, 2, 32, 2, 4
        args.event_frac, args.timing_steps = 0.5, 2
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    return run(parse(argv))["results"]


def run(args: argparse.Namespace) -> dict:
    """The whole report (``threads``, per-arm ``results``, the interleaved summary), also
    printed as the last line of JSON; ``tools/experiments/campaign_m.py`` keeps it per seed."""
    torch.set_num_threads(args.threads)
    if args.engine != "default":
        os.environ[ENGINE_ENV] = args.engine
    if args.scan_only:
        scan_only(args)
        return {"threads": args.threads, "results": []}
    modules = CORPUS_MODULES[:3] if args.quick else CORPUS_MODULES
    corpus = Corpus.from_text(stdlib_docstrings(modules))
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} "
          f"python={sys.version.split()[0]} scan engine={os.environ.get(ENGINE_ENV, 'default')}")
    print(f"corpus: stdlib docstrings, {corpus.chars} chars (sha256 {corpus.digest}), "
          f"train {len(corpus.train)} / val {len(corpus.val)}")
    print(f"model: {args.structure}, d_model={args.d_model}, layers={args.layers}, "
          f"d_state {args.d_state} → {args.rank}; steps={args.steps}, batch={args.batch}, "
          f"L={args.length}, event at step {int(args.event_frac * args.steps)}")
    results, models = [], {}
    for arm in args.arms.split(","):
        res, models[arm] = train(arm, corpus, args)
        results.append(res)
        step = lambda v: "-" if v is None else f"{v:7.1f}"  # noqa: E731
        extra = ""
        if "event_s" in res:
            extra = (f"  event {res['event_s']:.2f}s, energy kept "
                     f"{min(res['energy_kept']):.3f}, logits Δ {res['logit_rel_change']:.3f}")
        print(f"[threads={torch.get_num_threads()}] {arm:8s} dims={res['dims']}  "
              f"val ppl {res['val_ppl']:.3f} ({res['val_bpc']:.3f} bpc)  wall "
              f"{res['wall_s']:6.1f}s  step ms before {step(res['step_ms_before'])} after "
              f"{step(res['step_ms_after'])}{extra}", flush=True)
    by = {r["arm"]: r for r in results}
    summary: dict = {}
    if {"full", "reduced"} <= by.keys() and by["reduced"]["step_ms_after"]:
        full, red = by["full"], by["reduced"]
        engines = ("torch", "numba") if args.compare_engines else (None,)
        timing = interleaved_step_ms({k: models[k] for k in ("full", "reduced")}, corpus, args,
                                     engines)
        summary = {"interleaved_step_ms": timing,
                   "speedup_in_run": full["step_ms_before"] / red["step_ms_after"],
                   "ppl_reduced_over_full": red["val_ppl"] / full["val_ppl"]}
        for e in engines:
            tag = "" if e is None else f"@{e}"
            summary["speedup_interleaved" + tag.replace("@", "_")] = (
                timing["full" + tag] / timing["reduced" + tag])
        if "scratch" in by:
            summary["ppl_scratch_over_reduced"] = by["scratch"]["val_ppl"] / red["val_ppl"]
        cells = "; ".join(
            f"{summary['speedup_interleaved' + ('' if e is None else '_' + e)]:.2f}x interleaved"
            + ("" if e is None else f" with {e} scans")
            + f" ({timing['full' + ('' if e is None else '@' + e)]:.1f} vs "
              f"{timing['reduced' + ('' if e is None else '@' + e)]:.1f} ms)"
            for e in engines)
        print(f"[threads={torch.get_num_threads()}] step speed-up after reduction: "
              f"{summary['speedup_in_run']:.2f}x in the runs (medians), {cells}; ppl "
              f"reduced/full {summary['ppl_reduced_over_full']:.4f}"
              + (f"; scratch/reduced {summary['ppl_scratch_over_reduced']:.4f}"
                 if "scratch" in by else ""))
    report = {"threads": torch.get_num_threads(), "results": results, **summary}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
