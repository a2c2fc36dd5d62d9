"""Training-step time (forward + backward + AdamW) of the issue's LRU shapes, per thread policy,
idle and with another process keeping one core busy; and a reduced model against a model built
from scratch at its final size.

    .venv/bin/python tools/bench_step.py                  # full table (~5 min, 2 cores)
    .venv/bin/python tools/bench_step.py --quick          # smoke test
    .venv/bin/python tools/bench_step.py --json docs/results/bench_step.json

Conditions (interleaved step by step within a shape, medians of ``--repeats``):
- ``1 thread``: torch and the scans on 1 thread (``thread_policy("serial")``);
- ``2 torch``: torch's own 2 threads for everything (``thread_policy("torch")``);
- ``2 scans``: the trainer's policy, torch on 1 thread and the scans on 2 (``"scans"``);
- ``unfused``: ``1 thread`` with the fused diagonal SSM op switched off (the previous path).
The official JAX code was not re-run here (no JAX on this machine); its step times measured on
this 2-core CPU, idle, interleaved with ours by an earlier session (``../shared/REFERENCE.md``)
are printed for the ratio column and marked as recorded, not measured in this run.

``after reduction``: one block reduced n → r by ``ssmcompile.reduce`` (balanced truncation) vs an
``SSMModel`` of the same architecture built at r, timed in turns (target ≤ 1.05×).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_limits import _Busy  # noqa: E402

import ssmcompile  # noqa: E402
from ssmcompile.layers import ModelSpec, build_model  # noqa: E402
from ssmcompile.ops import threads  # noqa: E402

diag_ssm = sys.modules["ssmcompile.ops.diagonal_ssm"]

# (blocks, H, L, batch, n) → official step seconds, 2 cores idle (REFERENCE.md, recorded)
SHAPES = {
    (1, 8, 784, 50, 256): 0.96,
    (1, 8, 784, 50, 47): 0.127,
    (1, 8, 784, 50, 12): 0.037,
    (6, 128, 1024, 8, 93): 0.83,
}
# Untimed steps per condition first: the scan thread guard tries each mode twice per call site
# before it chooses (a training run's steady state is what the table is about).
WARMUP_STEPS = 3
CONDITIONS = ("1 thread", "2 torch", "2 scans", "unfused")
POLICY = {"1 thread": "serial", "2 torch": "torch", "2 scans": "scans", "unfused": "serial"}


def _step_fn(model: torch.nn.Module, batch: int, length: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, 1, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def _timed(step, condition: str) -> tuple[float, float]:
    width = diag_ssm.FUSED_MAX_WIDTH
    if condition == "unfused":
        diag_ssm.FUSED_MAX_WIDTH = 0
    try:
        with threads.thread_policy(POLICY[condition], cores=2):
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            return time.perf_counter() - t0, time.process_time() - c0
    finally:
        diag_ssm.FUSED_MAX_WIDTH = width


def interleaved(steps: dict, conditions, repeats: int) -> dict:
    """{(name, condition): (median wall s, median cpu s)}; one step of each in turn."""
    samples: dict = {}
    for _ in range(WARMUP_STEPS):  # numba compile, allocator, the scan thread guard's trials
        for step in steps.values():
            for c in conditions:
                _timed(step, c)
    for _ in range(repeats):
        for name, step in steps.items():
            for c in conditions:
                samples.setdefault((name, c), []).append(_timed(step, c))
    return {
        k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
        for k, v in samples.items()
    }


def _model(blocks, H, n):
    torch.manual_seed(0)
    spec = ModelSpec(layer="lru", d_input=1, d_model=H, state_dims=(n,) * blocks, d_output=10)
    return build_model(spec)


def step_table(shapes, repeats: int, busy: bool) -> list[dict]:
    rows = []
    for shape, official in shapes.items():
        blocks, H, L, B, n = shape
        step = _step_fn(_model(blocks, H, n), B, L)
        if busy:
            with _Busy():
                res = interleaved({"m": step}, CONDITIONS, repeats)
                load = os.getloadavg()[0]
        else:
            load = os.getloadavg()[0]
            res = interleaved({"m": step}, CONDITIONS, repeats)
        for c in CONDITIONS:
            wall, cpu = res[("m", c)]
            rows.append({"shape": shape, "cond": "busy" if busy else "idle", "load": load,
                         "policy": c, "ms": wall * 1e3, "cpu_ms": cpu * 1e3,
                         "vs_1_thread": res[("m", "1 thread")][0] / wall,
                         "official_s": official, "x_official": wall / official})  # fmt: skip
    return rows


def after_reduction(n: int, r: int, repeats: int) -> dict:
    H, L, B = 8, 784, 50
    full = _model(1, H, n)
    x = torch.randn(4, 128, 1)
    small, _ = ssmcompile.reduce(full, x, rank=r, verify=False)
    scratch = _model(1, H, r)
    res = interleaved(
        {"reduced": _step_fn(small, B, L), "scratch": _step_fn(scratch, B, L)},
        ("2 scans",), repeats,
    )  # fmt: skip
    red, scr = res[("reduced", "2 scans")][0], res[("scratch", "2 scans")][0]
    return {"n": n, "r": r, "reduced_ms": red * 1e3, "scratch_ms": scr * 1e3,
            "ratio": red / scr, "load": os.getloadavg()[0]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-busy", action="store_true")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    shapes, repeats = SHAPES, a.repeats
    if a.quick:
        shapes, repeats = {(1, 4, 64, 4, 8): 1.0}, 2
    rows = step_table(shapes, repeats, busy=False)
    if not a.no_busy:
        rows += step_table(shapes, repeats, busy=True)
    red = after_reduction(16 if a.quick else 256, 4 if a.quick else 47, repeats)
    print(f"torch {torch.__version__}, cores available {threads.available_cores()}")
    print("\n| shape (blocks, H, L, batch, n) | cond (load1) | policy | step ms | cpu ms "
          "| speed-up vs 1 thread | × official (recorded) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['cond']} ({r['load']:.1f}) | {r['policy']} | {r['ms']:.1f} "
              f"| {r['cpu_ms']:.1f} | {r['vs_1_thread']:.2f}× | {r['x_official']:.3f}× |")
    print(f"\nafter reduction {red['n']} → {red['r']}: reduced {red['reduced_ms']:.1f} ms, from "
          f"scratch {red['scratch_ms']:.1f} ms, ratio {red['ratio']:.3f} (load {red['load']:.1f})")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "after_reduction": red}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
