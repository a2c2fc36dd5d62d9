"""Pragmatic mode's safety net, shown: campaign A's recipe with a deliberately over-aggressive
τ, once with pragmatic mode (roll back when validation accuracy falls more than the tolerance
below its value just before an event) and once without.

Both runs share seed 0, data order and initialisation with campaign A's full run of seed 0
(``docs/results/runs/a/full__seed0.json``), whose accuracy is the reference. Evaluations every
``--eval-every`` steps so each event is judged soon after it fires. Writes
``docs/results/rollback.json`` and ``docs/results/rollback.png`` (validation accuracy over the
steps, events and the rollback marked); ``report.py`` renders the README section.

    python tools/experiments/rollback_demo.py             # ≈ 2 min on one core
    python tools/experiments/rollback_demo.py --quick --out /tmp/r
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_a import QUICK, RECIPE  # noqa: E402
from common import REPO, set_threads  # noqa: E402

from ssmcompile.io import write_bytes_atomic  # noqa: E402
from ssmcompile.train import PragmaticConfig, train  # noqa: E402
from ssmcompile.train.records import EvalRecord, ReductionRecord, RollbackRecord, of_kind  # noqa: E402,E501

TAU = 0.3  # keeps ~70 % of the Hankel energy: far past what one LRU block on digits tolerates
TOLERANCE = 0.02


def run(recipe, tau: float, pragmatic: bool, eval_every: int) -> dict:
    spec = recipe.arm(f"tau={tau} pragmatic={pragmatic}", 0, (recipe.n0,),
                      pipeline=recipe.pipeline(tau))
    config = dataclasses.replace(spec.train_config(), eval_every=eval_every,
                                 pragmatic=PragmaticConfig(enabled=pragmatic,
                                                           tolerance=TOLERANCE))
    start = time.perf_counter()
    result = train(config)
    evals = [(r.step, r.val_acc) for r in of_kind(result.metrics, EvalRecord)]
    events = [(r.step, list(r.dims_after)) for r in of_kind(result.metrics, ReductionRecord)]
    rollbacks = [dataclasses.asdict(r) for r in of_kind(result.metrics, RollbackRecord)]
    return {"pragmatic": pragmatic, "tau": tau, "dims_final": list(result.dims_final),
            "test_acc": result.test_acc, "val_acc": result.val_acc,
            "rolled_back_at": result.rolled_back_at, "evals": evals, "events": events,
            "rollbacks": rollbacks, "wall_s": time.perf_counter() - start}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for arm, style in zip(data["arms"], ("-", "--"), strict=True):
        steps, acc = zip(*arm["evals"], strict=True)
        label = (f"pragmatic: final n {arm['dims_final'][0]}, test "
                 f"{100 * arm['test_acc']:.1f} %" if arm["pragmatic"] else
                 f"no safety net: final n {arm['dims_final'][0]}, test "
                 f"{100 * arm['test_acc']:.1f} %")
        ax.plot(steps, [100 * a for a in acc], style, label=label)
        for rb in arm["rollbacks"]:
            ax.axvline(rb["step"], color="tab:red", lw=0.8)
            ax.annotate("rollback", (rb["step"], 100 * rb["val_acc"]), color="tab:red",
                        textcoords="offset points", xytext=(4, -12), fontsize=8)
    for step, _ in data["arms"][1]["events"]:
        ax.axvline(step, color="grey", lw=0.5, ls=":")
    if data.get("full_test_acc") is not None:
        full = 100 * data["full_test_acc"]
        ax.axhline(full, color="k", lw=0.6, label=f"full model (campaign A seed 0), test "
                                                  f"{full:.1f} %")
    ax.set_xlabel("step (dotted: events)")
    ax.set_ylabel("validation accuracy %")
    ax.set_title(f"τ = {data['tau']}: pragmatic mode (tolerance {100 * TOLERANCE:.0f} pt) "
                 "vs none")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rollback_section(results: Path) -> list[str]:
    """README lines for ``rollback.json`` (none when it is missing or a quick run's)."""
    try:
        data = json.loads((results / "rollback.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if data.get("quick"):
        return []
    safe, bare = data["arms"]
    lines = [f"### R. Pragmatic mode's safety net: τ = {data['tau']} on campaign A's recipe, "
             "seed 0", "",
             "Generated from `docs/results/rollback.json` (`tools/experiments/rollback_demo.py`;"
             f" evaluations every {data['eval_every']} steps, tolerance "
             f"{100 * data['tolerance']:.0f} pt). One seed: a demonstration that the net fires, "
             "not a statistic.", "", "![rollback](docs/results/rollback.png)", "",
             "| run | events (step → n) | rollback | final n | test % |", "|---|---|---|---|---|"]
    for arm in (safe, bare):
        events = ", ".join(f"{s} → {d[0]}" for s, d in arm["events"])
        rb = "; ".join(f"at step {r['step']}: val {100 * r['val_acc']:.1f} % < "
                       f"{100 * r['baseline']:.1f} % before the step-{r['event_step']} event, "
                       f"back to n {r['dims_to'][0]}" for r in arm["rollbacks"]) or "–"
        name = "pragmatic" if arm["pragmatic"] else "no safety net"
        lines.append(f"| {name} | {events} | {rb} | {arm['dims_final'][0]} | "
                     f"{100 * arm['test_acc']:.1f} |")
    if data.get("full_test_acc") is not None:
        lines.append(f"| full (campaign A, seed 0) | – | – | 256 | "
                     f"{100 * data['full_test_acc']:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tau", type=float, default=TAU)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    args = p.parse_args(argv)
    recipe = QUICK if args.quick else RECIPE
    set_threads(recipe.threads)
    eval_every = 4 if args.quick else args.eval_every
    arms = [run(recipe, args.tau, pragmatic, eval_every) for pragmatic in (True, False)]
    full = REPO / "docs" / "results" / "runs" / "a" / "full__seed0.json"
    full_acc = None
    if not args.quick and full.is_file():
        full_acc = json.loads(full.read_text())["test_acc"]
    data = {"quick": args.quick, "tau": args.tau, "tolerance": TOLERANCE, "steps": recipe.steps,
            "eval_every": eval_every, "full_test_acc": full_acc, "arms": arms}
    args.out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(args.out / "rollback.json", (json.dumps(data, indent=1) + "\n").encode())
    plot(data, args.out / "rollback.png")
    for arm in arms:
        print(f"pragmatic={arm['pragmatic']}: dims {arm['dims_final']}, test "
              f"{100 * arm['test_acc']:.1f} %, rolled back at {arm['rolled_back_at']}, "
              f"wall {arm['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
