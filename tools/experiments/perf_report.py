"""The README's performance section, from the benchmark scripts' JSON in ``docs/results``.

    .venv/bin/python tools/bench_limits.py --json docs/results/bench_limits.json
    .venv/bin/python tools/bench_step.py --json docs/results/bench_step.json
    .venv/bin/python tools/bench_event.py --json docs/results/bench_event.json
    .venv/bin/python tools/bench_mamba.py | tail -1 > docs/results/bench_mamba.json

Each table marks the performance issue's targets met or missed; a file that is absent leaves
its table out. Called by ``report.py`` (one README section, one writer).
"""

from __future__ import annotations

import json
from pathlib import Path

DIAG_TARGET_SHAPE = "50x784x256"


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌ missed"


def _limits(d: dict) -> list[str]:
    lim = d["limits"]
    rows = [r for r in d["rows"] if r["engine"] == "numba"]
    out = [f"Machine limits (1 thread unless said): copy {lim['copy_GBps_numpy']:.1f} GB/s, "
           f"{lim.get('copy_GBps_torch_2threads', float('nan')):.1f} GB/s on 2 threads; float32 "
           f"matmul {lim['matmul_GFLOPs']:.0f} GFLOP/s. Floor = bytes the pass must move / copy "
           "bandwidth (or FLOPs / matmul peak, whichever is larger). Load average per row.", "",
           "| scan | shape B×L×n | cond (load) | pass | 1 thread ms (× floor) | 2 threads ms "
           "| 2 vs 1 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    by = {(r["kind"], r["shape"], r["cond"], r["which"], r["threads"]): r for r in rows}
    verdicts = []
    for (kind, shape, cond, which, threads), r1 in by.items():
        if threads != 1 or (kind, shape, cond, which, 2) not in by:
            continue
        r2 = by[(kind, shape, cond, which, 2)]
        gain = r1["ms"] / r2["ms"]
        out.append(f"| {kind} | {shape} | {cond} ({r1['load']:.1f}) | {which} | {r1['ms']:.1f} "
                   f"({r1['x_floor']:.1f}×) | {r2['ms']:.1f} | {gain:.2f}× |")
        if kind == "diagonal" and shape == DIAG_TARGET_SHAPE:
            if cond == "idle":
                verdicts.append(f"diagonal {which} ≤ 3× floor on 1 thread: "
                                f"{r1['x_floor']:.1f}× {_mark(r1['x_floor'] <= 3)}")
                verdicts.append(f"diagonal {which} 2 threads ≥ 1.5× faster idle: {gain:.2f}× "
                                f"{_mark(gain >= 1.5)}")
            else:
                verdicts.append(f"diagonal {which} 2 threads never slower, busy core: "
                                f"{gain:.2f}× {_mark(gain >= 1.0)}")
    return out + [""] + [f"- {v}" for v in verdicts]


def _steps(d: dict) -> list[str]:
    out = ["Training step (forward + backward + AdamW), the issue's LRU shapes. Policies: "
           "`1 thread`; `2 torch` (torch's own 2 threads); `2 scans` (the trainer's policy: "
           "torch on 1 thread, scan kernels on 2); `unfused` (1 thread, without the fused "
           "diagonal-SSM op). × official: against the official JAX code's step recorded on "
           "this CPU, 2 cores idle (`../shared/REFERENCE.md`; not re-run here).", "",
           "| shape (blocks, H, L, batch, n) | cond (load) | policy | step ms | CPU ms "
           "| vs 1 thread | × official |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    verdicts = []
    for r in d["rows"]:
        out.append(f"| {tuple(r['shape'])} | {r['cond']} ({r['load']:.1f}) | {r['policy']} | "
                   f"{r['ms']:.1f} | {r['cpu_ms']:.1f} | {r['vs_1_thread']:.2f}× | "
                   f"{r['x_official']:.3f}× |")
        if r["policy"] in ("1 thread", "2 scans"):
            verdicts.append(f"{tuple(r['shape'])} {r['cond']} {r['policy']}: "
                            f"{r['x_official']:.2f}× official {_mark(r['x_official'] <= 0.25)}")
        if r["policy"] == "2 scans":
            verdicts.append(f"{tuple(r['shape'])} {r['cond']}: 2 scans vs 1 thread "
                            f"{r['vs_1_thread']:.2f}× {_mark(r['vs_1_thread'] >= 1.0)}")
    red = d.get("after_reduction")
    if red:
        verdicts.append(f"after reduction {red['n']} → {red['r']}: step {red['ratio']:.3f}× a "
                        f"model built at {red['r']} {_mark(red['ratio'] <= 1.05)}")
    return out + [""] + [f"- {v}" for v in verdicts]


def _events(d: dict) -> list[str]:
    out = [f"One reduction event, default pipeline, {d['threads']} thread(s), medians of "
           f"{d['repeats']} (load {d['load_before'][0]:.1f} → {d['load_after'][0]:.1f}).", "",
           "| model | stage | wall s | CPU s | share | first call s |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    verdicts = []
    for c in d["cases"]:
        if c["kind"] != "event":
            continue
        st = c["stages"]
        total = st["total"]["wall"]
        label = f"{c['blocks']}×(H {c['H']}, n {c['n']} → {c['r']})"
        for name, v in st.items():
            out.append(f"| {label} | {name} | {v['wall']:.3f} | {v['cpu']:.3f} | "
                       f"{v['wall'] / total:.1%} | {v['first']:.3f} |")
        limit = 6.0 if c["blocks"] > 1 else 0.4
        share = st.get("verify", {"wall": 0.0})["wall"] / total
        verdicts += [f"{label}: event {total:.2f} s ≤ {limit} s {_mark(total <= limit)}",
                     f"{label}: verify {share:.1%} of the event ≤ 10 % {_mark(share <= 0.10)}"]
    return out + [""] + [f"- {v}" for v in verdicts]


def _mamba(d: dict) -> list[str]:
    speed = d.get("speedup_interleaved")
    ms = d.get("interleaved_step_ms", {})
    if speed is None:
        return ["(no interleaved timing in this run)"]
    return [f"Mamba-2 char-LM, d_state 128 → 12, steps timed in turns: full "
            f"{ms.get('full', float('nan')):.1f} ms, reduced {ms.get('reduced', float('nan')):.1f}"
            f" ms: {speed:.2f}× faster {_mark(speed >= 5)}; validation perplexity reduced/full "
            f"{d.get('ppl_reduced_over_full', float('nan')):.4f} ({d['threads']} thread(s))."]


FILES = (("bench_limits.json", "Scan kernels against the machine's limits", _limits),
         ("bench_step.json", "Training steps and thread policy", _steps),
         ("bench_event.json", "Cost of a reduction event", _events),
         ("bench_mamba.json", "Mamba-2 after reduction", _mamba))  # fmt: skip


def performance_section(results: Path) -> list[str]:
    """Markdown lines (``####`` tables) for the benchmark files present, or [] if none."""
    lines: list[str] = []
    for filename, title, render in FILES:
        path = results / filename
        if path.exists():
            lines += [f"#### {title}", "", *render(json.loads(path.read_text())), ""]
    if lines:
        lines = ["### E. Performance (issue 13 targets)", "",
                 "Generated from `tools/bench_*.py` runs (see `perf_report.py`); the machine is "
                 "shared, so read every figure with its load average.", "", *lines]  # fmt: skip
    return lines
