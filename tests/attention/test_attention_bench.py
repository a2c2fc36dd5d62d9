"""tools/bench_linear_attention.py --quick: every arm runs and reports comparable figures."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_linear_attention.py"


def test_bench_quick_mode():
    spec = importlib.util.spec_from_file_location("bench_linear_attention", TOOL)
    bench = importlib.util.module_from_spec(spec)
    threads, path = torch.get_num_threads(), list(sys.path)
    try:
        spec.loader.exec_module(bench)
        out = bench.main(["--quick", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
        sys.path[:] = path
    by = out["results"]
    assert set(by) == {"full", "scratch", "reduced", "posthoc", "prune"}
    assert by["full"]["key_dims"] == (16,)
    assert all(by[a]["key_dims"] == (4,) for a in ("scratch", "reduced", "posthoc", "prune"))
    assert by["reduced"]["step_ms_before"] and by["reduced"]["step_ms_after"]
    assert 0 < by["reduced"]["energy_kept"][0] <= 1
    assert out["state_ratio"] == 0.25  # S is heads·d_k·d_v: 16 → 4 (no conv in this config)
    assert all(math.isfinite(r["val_ppl"]) and r["val_ppl"] > 1 for r in by.values())


def test_key_dim_sweep_quick_mode():
    tool = TOOL.parent / "bench_attention_dk.py"
    spec = importlib.util.spec_from_file_location("bench_attention_dk", tool)
    bench = importlib.util.module_from_spec(spec)
    threads, path = torch.get_num_threads(), list(sys.path)
    try:
        spec.loader.exec_module(bench)
        out = bench.main(["--quick"])
    finally:
        torch.set_num_threads(threads)
        sys.path[:] = path
    rows = out["rows"]
    assert [r["d_k"] for r in rows] == [4, 8]
    # per layer and head the state grows by d_v (the S matrix) + 2·(taps − 1) (the q and k conv
    # windows, 4 taps by default) floats per key channel: 2 layers · 2 heads · 4 more channels
    assert rows[1]["state_floats"] - rows[0]["state_floats"] == 2 * 2 * 4 * (32 + 2 * 3)
    assert all(r["step_ms"] > 0 and r["mixers_ms"] > 0 for r in rows)
