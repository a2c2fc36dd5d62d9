"""Experiment C: are the states a truncation keeps early in training the ones it keeps at the end?

Reads the block systems of experiment A's *full* runs (never reduced, so mode i stays mode i)
at step 1, at the paper's four event steps, at later checkpoints and at the end — the very runs
experiment A uses, shared through the run cache (trained here if A has not run yet). For each τ
of A, r is the τ rule's rank on the final spectrum; each snapshot is compared with the end by
top-r overlap of the modes' Hankel scores, Kendall's τ of those scores and the overlap of the
balanced truncation's kept subspaces (definitions in ``stability.py``). Writes exp_c.json and
exp_c_stability.png to --results.

    python tools/experiments/exp_c_rank_stability.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from aggregate import environment, save_figure  # noqa: E402
from common import (  # noqa: E402
    PAPER_EVENTS,
    base_parser,
    progress,
    run_arm,
    run_script,
    set_threads,
    stats,
    write_json,
)
from exp_a_digits import full_arm, settings  # noqa: E402

from ssmcompile.train import ReductionSchedule  # noqa: E402

MEASURES = ("topr_overlap", "subspace_overlap")


def aggregate(reports: list[dict], taus: tuple[float, ...]) -> dict:
    """Mean ± std over seeds (and blocks) of every measure at every snapshot step."""
    steps = reports[0]["steps"]
    blocks = [b for r in reports for b in r["blocks"].values()]
    out = {"steps": steps, "n": blocks[0]["n"], "taus": {}}
    out["kendall"] = [stats([b["kendall"][i] for b in blocks]) for i in range(len(steps))]
    for tau in taus:
        t = str(tau)
        ranks = [b["ranks"][t] for b in blocks]
        entry = {"rank_at_end": stats(ranks),
                 "chance": float(np.mean([r / b["n"] for r, b in zip(ranks, blocks,
                                                                     strict=True)])),
                 "tau_rank": [stats([b["tau_rank"][t][i] for b in blocks])
                              for i in range(len(steps))]}
        for m in MEASURES:
            entry[m] = [stats([b[m][t][i] for b in blocks]) for i in range(len(steps))]
        out["taus"][t] = entry
    return out


def plot(result: dict, path: Path, event_steps: list[int], threads: int) -> Path:
    from matplotlib.figure import Figure

    agg, steps = result["aggregate"], result["aggregate"]["steps"]
    fig = Figure(figsize=(12.5, 3.5), layout="constrained")
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
    for colour, (t, entry) in zip(colours, agg["taus"].items(), strict=False):
        r = entry["rank_at_end"]["mean"]
        for m, style in zip(MEASURES, ("-o", "--"), strict=True):
            mean = np.array([s["mean"] for s in entry[m]])
            std = np.array([s["std"] for s in entry[m]])
            label = f"τ={t} (r≈{r:.0f}), " + ("top-r modes" if m == "topr_overlap"
                                                else "kept subspace")
            ax1.plot(steps, mean, style, color=colour, ms=3, label=label)
            ax1.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.12)
        ax1.axhline(entry["chance"], color=colour, lw=0.7, ls=":")
    kend = np.array([s["mean"] for s in agg["kendall"]])
    kstd = np.array([s["std"] for s in agg["kendall"]])
    ax2.plot(steps, kend, "-o", ms=3, color="k")
    ax2.fill_between(steps, kend - kstd, kend + kstd, color="k", alpha=0.12)
    for ax in (ax1, ax2):
        for e in event_steps:
            ax.axvline(e, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("training step (log); dotted: event steps")
    ax1.set_ylabel("agreement with the end of training")
    ax1.set_title("overlap with the final top-r (dotted: chance r/n)", fontsize=9)
    ax1.legend(fontsize=6)
    ax2.set_ylabel("Kendall τ vs end (modal scores)")
    ax2.set_title(f"ranking agreement, mean ± std over seeds [{threads} thread]", fontsize=9)
    cmap = [(k / max(1, len(steps) - 1), 0.2, 1 - k / max(1, len(steps) - 1))
            for k in range(len(steps))]
    for colour, step, hsv in zip(cmap, steps, result["hsv_seed0"], strict=True):
        ax3.semilogy(range(1, len(hsv) + 1), np.maximum(hsv, 1e-12), color=colour, lw=0.9,
                     label=f"step {step}")
    ax3.set_xlabel("i")
    ax3.set_ylabel("σ_i / σ_1 (seed 0)")
    ax3.set_title("HSV spectrum over training (blue → red)", fontsize=9)
    ax3.legend(fontsize=5, ncol=2)
    return save_figure(fig, path)


def run(args) -> dict:
    threads = set_threads(args.threads)
    s = settings(args)
    bar = progress(len(s.seeds), "experiment C", args.quiet)
    start, reports = time.perf_counter(), []
    for seed in s.seeds:
        bar.set_postfix_str(f"full seed {seed}")
        reports.append(run_arm(full_arm(s, seed), args.runs, s.taus)["stability"])
        bar.update(1)
    bar.close()
    first = next(iter(reports[0]["blocks"].values()))
    result = {"experiment": "C", "title": "rank stability of HSVs over training (A's full runs)",
              "quick": bool(args.quick), "settings": s.__dict__,
              "environment": environment(threads), "harness_wall_s": time.perf_counter() - start,
              "steps_total": s.steps, "aggregate": aggregate(reports, s.taus),
              "hsv_seed0": [[float(f"{v:.3g}") for v in h] for h in first["hsv"]]}
    out = Path(args.results)
    write_json(out / "exp_c.json", result)
    events = list(ReductionSchedule(fractions=PAPER_EVENTS).event_steps(s.steps))
    plot(result, out / "exp_c_stability.png", events, threads)
    agg = result["aggregate"]
    for i, step in enumerate(agg["steps"]):
        cells = "  ".join(f"τ={t}: top-r {e['topr_overlap'][i]['mean']:.2f} "
                          f"subspace {e['subspace_overlap'][i]['mean']:.2f}"
                          for t, e in agg["taus"].items())
        print(f"step {step:>5}  Kendall {agg['kendall'][i]['mean']:+.2f}  {cells}  "
              f"[{threads} thread]")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--mnist", type=Path, help="directory of MNIST IDX files (as in A)")
    args = parser.parse_args(argv)
    return run_script(run, args)


if __name__ == "__main__":
    sys.exit(main())
