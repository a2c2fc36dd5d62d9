"""tools/bench_mamba.py --quick: all three arms run and report comparable figures."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_mamba.py"


def test_bench_quick_mode(capsys):
    spec = importlib.util.spec_from_file_location("bench_mamba", TOOL)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        results = bench.main(["--quick", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    by = {r["arm"]: r for r in results}
    assert set(by) == {"full", "scratch", "reduced"}
    assert by["full"]["dims"] == (16,) and by["scratch"]["dims"] == (4,)
    assert by["reduced"]["dims"] == (4,)
    assert by["reduced"]["step_ms_before"] and by["reduced"]["step_ms_after"]
    assert 0 < by["reduced"]["energy_kept"][0] <= 1
    assert all(math.isfinite(r["val_ppl"]) and r["val_ppl"] > 1 for r in results)
    out = capsys.readouterr().out
    assert "threads=1" in out and "speed-up after reduction" in out
