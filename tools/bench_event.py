"""Cost of one reduction event, pass by pass, as the trainer runs it (issue 13).

    python tools/bench_event.py --threads 1 --repeats 5

Models: ``big`` (6 LRU blocks, H 128, n 384 → 93, inputs (64, 1024, 3)) and ``small`` (1 block,
H 8, n 256 → 47, inputs (64, 784, 1)); 64 example sequences, as the trainer's default
``probe_size``. Each event runs the default training pipeline with ``rank=r`` on an untouched
copy of the same model and an AdamW optimizer holding state: capture + match (``prepare``),
each pass (its own wall and CPU time; a modifying pass includes the re-derive after it), then
the optimizer swap. The events of the models are interleaved; the first call of each is
reported apart (warm-up), the figures are medians of the rest. ``--trainer`` also times
``ssmcompile.train.reducer.reduce_model`` whole, the trainer's own entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import passes
from ssmcompile.compiler import PassManager, RankPolicy, prepare
from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.train.optim_surgery import swap_parameters
from ssmcompile.train.reducer import reduce_model


@dataclass(frozen=True)
class Case:
    name: str
    spec: ModelSpec
    inputs: tuple[int, int, int]
    rank: int


CASES = {
    "big": Case("big", ModelSpec(layer="lru", d_input=3, d_model=128, state_dims=(384,) * 6,
                                 d_output=10), (64, 1024, 3), 93),
    "small": Case("small", ModelSpec(layer="lru", d_input=1, d_model=8, state_dims=(256,),
                                     d_output=10), (64, 784, 1), 47),
}


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def optimizer_with_state(model: torch.nn.Module, x: torch.Tensor) -> torch.optim.Optimizer:
    """AdamW after one step at lr 0 on a tiny batch: moments exist, parameters unchanged."""
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
    model(x[:2, :16]).sum().backward()
    opt.step()
    return opt


def event(case: Case, model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    """One event split into stages: name → (wall s, CPU s)."""
    pipeline = passes.default_pipeline(RankPolicy(rank=case.rank))
    opt = optimizer_with_state(model, x)
    rows: dict[str, tuple[float, float]] = {}
    state, wall, cpu = timed(lambda: prepare(model, x))
    rows["capture+match"] = (wall, cpu)
    for p in pipeline:
        # One manager per pass: the same re-derive after a modifying pass as one run of all.
        result, wall, cpu = timed(lambda p=p, state=state: PassManager([p]).run(state))
        state = result.state
        rows[p.name] = (wall, cpu)
    opt.zero_grad(set_to_none=True)
    _, wall, cpu = timed(lambda: swap_parameters(opt, model, state.model))
    rows["swap"] = (wall, cpu)
    rows["total"] = tuple(sum(v[i] for v in rows.values()) for i in (0, 1))
    dims = sorted({b.adapter.state_dim(state.model.get_submodule(b.name)) for b in state.blocks})
    assert dims == [case.rank], f"expected every block at {case.rank}, got {dims}"
    return rows


def trainer_event(case: Case, model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    pipeline = passes.default_pipeline(RankPolicy(rank=case.rank))
    opt = optimizer_with_state(model, x)
    _, wall, cpu = timed(lambda: reduce_model(model, opt, pipeline, x, step=0))
    return {"reduce_model": (wall, cpu)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="big,small")
    p.add_argument("--repeats", type=int, default=5, help="measured events per model (≥ 5)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trainer", action="store_true", help="also time reduce_model whole")
    p.add_argument("--json", type=Path, help="also write the medians here (for the README)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cases = [CASES[name] for name in a.models.split(",")]
    built = {}
    for c in cases:
        torch.manual_seed(0)
        built[c.name] = (build_model(c.spec).train(), torch.randn(*c.inputs))
    kinds = [("event", event)] + ([("trainer", trainer_event)] if a.trainer else [])
    runs: dict[tuple[str, str], list[dict]] = {(c.name, k): [] for c in cases for k, _ in kinds}
    load_before = os.getloadavg()
    for _ in range(a.repeats + 1):  # interleaved: each round runs every model once
        for c in cases:
            for k, fn in kinds:
                runs[c.name, k].append(fn(c, *built[c.name]))
    load_after = os.getloadavg()
    print(f"threads={torch.get_num_threads()} repeats={a.repeats} (+1 first call) "
          f"torch {torch.__version__}; load average before "
          f"{' '.join(f'{v:.2f}' for v in load_before)}, after "
          f"{' '.join(f'{v:.2f}' for v in load_after)}")
    report = {"threads": torch.get_num_threads(), "repeats": a.repeats,
              "load_before": load_before, "load_after": load_after, "cases": []}  # fmt: skip
    for c in cases:
        for k, _ in kinds:
            first, rest = runs[c.name, k][0], runs[c.name, k][1:]
            stages = {st: {"wall": statistics.median(r[st][0] for r in rest),
                           "cpu": statistics.median(r[st][1] for r in rest),
                           "first": first[st][0]} for st in first}  # fmt: skip
            report["cases"].append({"model": c.name, "kind": k, "blocks": len(c.spec.state_dims),
                                    "H": c.spec.d_model, "n": c.spec.state_dims[0],
                                    "r": c.rank, "stages": stages})  # fmt: skip
            print(f"\n{c.name}: {len(c.spec.state_dims)} block(s), H {c.spec.d_model}, "
                  f"n {c.spec.state_dims[0]} → {c.rank}, inputs {c.inputs} [{k}]")
            print(f"  {'stage':20} {'wall s':>8} {'cpu s':>8} {'share':>6} {'first s':>8}")
            total = statistics.median(r["total" if "total" in r else "reduce_model"][0]
                                      for r in rest)
            for stage in first:
                wall = statistics.median(r[stage][0] for r in rest)
                cpu = statistics.median(r[stage][1] for r in rest)
                print(f"  {stage:20} {wall:8.3f} {cpu:8.3f} {wall / total:6.1%} "
                      f"{first[stage][0]:8.3f}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
