"""Experiment D: what the reduction events cost, as a fraction of the training run.

Reads the in-training runs of experiments A and B (the same runs, through the run cache; run
here if missing). Each event's time splits into: analysis (``hankel-analysis``), rewrite
(``balanced-truncation``), verify, the rest of the event (capture, matching, optimizer
surgery) and the first step at the new size beyond a normal step (re-wrapping the model, and
recompiling it when torch.compile is on; clipped at 0 when noise makes it negative). The
target's overhead is analysis + rewrite + rest + first step; verification is listed apart.

``--compile`` adds one arm (A's middle τ, seed 0) trained with torch.compile, whose first steps
after each event hold the recompile (minutes on a 2-core CPU; off in the committed run).
Writes exp_d.json and exp_d_overhead.png to --results.

    python tools/experiments/exp_d_overhead.py
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import exp_a_digits  # noqa: E402
import exp_b_multiblock  # noqa: E402
from aggregate import environment, save_figure  # noqa: E402
from common import base_parser, progress, run_arm, run_script, set_threads, stats, write_json  # noqa: E402

PARTS = ("analysis", "rewrite", "rest", "first_step", "verify")
PASS_OF = {"analysis": "hankel-analysis", "rewrite": "balanced-truncation", "verify": "verify"}


def without_verify(spec):
    """The same arm with the pipeline minus its ``verify`` pass."""
    pipeline = ",".join(p for p in spec.pipeline.split(",") if p.strip() != "verify")
    return dataclasses.replace(spec, arm=spec.arm + " no-verify", pipeline=pipeline)


def event_parts(run: dict) -> dict[str, float]:
    """Seconds per part, summed over the run's events."""
    total = dict.fromkeys(PARTS, 0.0)
    for e in run["events"]:
        passes = e["passes_s"]
        for part, name in PASS_OF.items():
            total[part] += passes.get(name, 0.0)
        total["rest"] += max(0.0, e["reduce_s"] - sum(passes.values()))
        if e["next_step_s"] is not None:
            total["first_step"] += max(0.0, e["next_step_s"] - e["reduce_s"] - run["step_s_after"])
    return total


def overhead_row(label: str, runs: list[dict], full: list[dict],
                 twin: list[dict] | None = None) -> dict:
    """Mean over seeds of each part, and the overhead as a fraction of the run's wall time.

    ``full``: the same seeds' full runs (for the wall-time ratio); ``twin``: the same runs with
    the verify pass, which a run without it must reproduce exactly (the pass never changes the
    model and events run in a forked RNG), so only the times may differ.
    """
    parts = [event_parts(r) for r in runs]
    target = [sum(p[k] for k in PARTS if k != "verify") for p in parts]
    fraction = [t / r["wall_s"] for t, r in zip(target, runs, strict=True)]
    with_verify = [(t + p["verify"]) / r["wall_s"]
                   for t, p, r in zip(target, parts, runs, strict=True)]
    # steps after which the fixed event cost falls to 1 % of the run, if training went on at
    # the reduced model's step time (a projection, not a measurement)
    needed = [r["spec"]["steps"] + max(0.0, t / 0.01 - r["wall_s"]) / r["step_s_after"]
              for t, r in zip(target, runs, strict=True)]
    return {"arm": label, "seeds": [r["spec"]["seed"] for r in runs],
            "compile": runs[0]["spec"]["compile"], "steps": runs[0]["spec"]["steps"],
            "events": stats([len(r["events"]) for r in runs]),
            "parts_s": {k: stats([p[k] for p in parts]) for k in PARTS},
            "overhead_s": stats(target), "wall_s": stats([r["wall_s"] for r in runs]),
            "fraction": stats(fraction), "fraction_with_verify": stats(with_verify),
            "steps_for_1pct": stats(needed),
            "wall_ratio": stats([r["wall_s"] / f["wall_s"] for r, f in zip(runs, full,
                                                                             strict=True)]),
            "cpu_ratio": stats([r["cpu_s"] / f["cpu_s"] for r, f in zip(runs, full,
                                                                          strict=True)]),
            "same_model_as_with_verify": None if twin is None else all(
                r["dims_final"] == t["dims_final"] and r["test_acc"] == t["test_acc"]
                for r, t in zip(runs, twin, strict=True))}


def plot(rows: list[dict], path: Path, threads: int) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.45 * len(rows) + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:grey")
    for i, row in enumerate(rows):
        left = 0.0
        for part, colour in zip(PARTS, colours, strict=True):
            width = 100 * row["parts_s"][part]["mean"] / row["wall_s"]["mean"]
            ax.barh(i, width, left=left, color=colour, label=part if i == 0 else None,
                    hatch="//" if part == "verify" else None)
            left += width
    ax.axvline(1.0, color="k", lw=0.8, ls="--", label="1 % target")
    ax.set_yticks(range(len(rows)), [r["arm"] for r in rows], fontsize=7)
    ax.set_xlabel("% of the run's training wall time (mean over seeds)")
    ax.set_title(f"reduction-event overhead by part [{threads} thread]", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def run(args) -> dict:
    threads = set_threads(args.threads)
    sa, sb = exp_a_digits.settings(args), exp_b_multiblock.settings(args)
    full_a = [exp_a_digits.full_arm(sa, seed) for seed in sa.seeds]
    full_b = [sb.arm("full", seed, (sb.n0,) * sb.n_blocks) for seed in sb.seeds]
    jobs = []  # (label, specs, full specs, label of the verified twin)
    for t in sa.taus:
        specs = [exp_a_digits.in_training_arm(sa, seed, t) for seed in sa.seeds]
        jobs.append((f"A τ={t}", specs, full_a, None))
        jobs.append((f"A τ={t}, no verify", [without_verify(spec) for spec in specs], full_a,
                     f"A τ={t}"))
    for name, (pipeline, _) in sb.reducing_arms().items():
        label = "B " + name.replace("in-training ", "").replace("tau=", "τ=")
        jobs.append((label, [sb.arm(name, seed, (sb.n0,) * sb.n_blocks, pipeline=pipeline)
                             for seed in sb.seeds], full_b, None))
    if args.compile:
        tau = sa.taus[len(sa.taus) // 2]
        spec = dataclasses.replace(exp_a_digits.in_training_arm(sa, 0, tau), compile="on")
        jobs.append((f"A τ={tau}, torch.compile", [spec], full_a[:1], None))
    total = sum(len(specs) + len(full) for _, specs, full, _ in jobs)
    bar = progress(total, "experiment D", args.quiet)
    start, rows, done = time.perf_counter(), [], {}
    for label, specs, full_specs, twin in jobs:
        records, full = [], []
        for spec, full_spec in zip(specs, full_specs, strict=False):
            bar.set_postfix_str(f"{label} seed {spec.seed}")
            records.append(run_arm(spec, args.runs, sa.taus))
            full.append(run_arm(full_spec, args.runs, sa.taus))
            bar.update(2)
        done[label] = records
        rows.append(overhead_row(label, records, full, done.get(twin)))
    bar.close()
    result = {"experiment": "D", "title": "reduction overhead", "quick": bool(args.quick),
              "environment": environment(threads), "harness_wall_s": time.perf_counter() - start,
              "parts": list(PARTS), "rows": rows}
    out = Path(args.results)
    write_json(out / "exp_d.json", result)
    plot(rows, out / "exp_d_overhead.png", threads)
    for r in rows:
        parts = "  ".join(f"{k} {r['parts_s'][k]['mean']:.2f}" for k in PARTS)
        print(f"{r['arm']:<22} {parts}  = {100 * r['fraction']['mean']:.2f} % of "
              f"{r['wall_s']['mean']:.1f} s ({100 * r['fraction_with_verify']['mean']:.2f} % "
              f"with verify) [{threads} thread]")
    return result


def main(argv: list[str] | None = None) -> int:
    parser: argparse.ArgumentParser = base_parser(__doc__)
    parser.add_argument("--compile", action="store_true",
                        help="add an arm trained with torch.compile (slow on CPU)")
    args = parser.parse_args(argv)
    return run_script(run, args)


if __name__ == "__main__":
    sys.exit(main())
