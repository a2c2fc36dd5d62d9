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
